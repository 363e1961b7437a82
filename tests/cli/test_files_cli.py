"""``gateway put/get/ls/mkdir/rm/mv/check`` against a real running gateway process.

One gateway (embedded grid, one account ``alice``) serves the whole module; the
CLI talks to it over its control socket while paramiko talks to it over SFTP,
and each sees what the other did.
"""

from __future__ import annotations

import json
import os
import stat
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from tests.nodes import NodeReaper, gateway
from tests.sftp.gateway_node import RunningGateway, start_gateway

SIZE = 3 * 1024 * 1024 + 12345


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """A started gateway shared by the module's tests, stopped cleanly at the end."""
    reaper = NodeReaper()
    try:
        node = start_gateway(tmp_path_factory.mktemp("files"), reaper)
        yield node
        stopped = gateway("stop", node.node_dir)
        assert stopped.code == 0, stopped.err
    finally:
        reaper.reap()


@pytest.fixture(scope="module")
def sftp(gw: RunningGateway) -> Iterator[paramiko.SFTPClient]:
    """One logged-in SFTP session on the shared gateway."""
    transport, client = gw.sftp()
    yield client
    transport.close()


def _payload(tmp_path: Path, name: str = "payload.bin", size: int = SIZE) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    return path, data


def test_put_without_target_prints_cap_and_get_round_trips(
    gw: RunningGateway, tmp_path: Path
) -> None:
    """A put with no target prints a read cap; get of that cap returns the same bytes."""
    local, data = _payload(tmp_path, size=500_000)  # one chunk: one immutable object
    put = gateway("put", gw.node_dir, local)
    assert put.code == 0, put.err
    cap = put.out.strip()
    assert cap.startswith("GG:CHK:")
    got = gateway("get", gw.node_dir, cap, tmp_path / "back.bin")
    assert got.code == 0, got.err
    assert (tmp_path / "back.bin").read_bytes() == data
    checked = gateway("check", gw.node_dir, "--verify", cap)
    assert checked.code == 0, checked.err
    assert checked.out.startswith("healthy")
    assert "share 0: good" in checked.out


def test_put_get_by_account_path(
    gw: RunningGateway, tmp_path: Path, sftp: paramiko.SFTPClient
) -> None:
    """ACCOUNT:/path and plain paths (the only account) name the same file; SFTP reads it."""
    local, data = _payload(tmp_path)
    put = gateway("put", gw.node_dir, local, "alice:/big.bin")
    assert put.code == 0, put.err
    assert put.out == ""  # no capability unless asked for
    got = gateway("get", gw.node_dir, "/big.bin", tmp_path / "back.bin")
    assert got.code == 0, got.err
    assert (tmp_path / "back.bin").read_bytes() == data
    with sftp.open("/big.bin", "rb") as f:
        assert f.read() == data


def test_ls_shows_sftp_files_and_sftp_shows_cli_files(
    gw: RunningGateway, tmp_path: Path, sftp: paramiko.SFTPClient
) -> None:
    """A file written over SFTP is listed by the CLI, and one put by the CLI appears in SFTP."""
    sftp.mkdir("/shared")
    with sftp.open("/shared/from-sftp.txt", "wb") as f:
        f.write(b"written over sftp\n")
    (tmp_path / "from-cli.txt").write_bytes(b"written by the cli\n")
    put = gateway("put", gw.node_dir, tmp_path / "from-cli.txt", "alice:/shared/")
    assert put.code == 0, put.err

    listed = gateway("ls", gw.node_dir, "-l", "/shared")
    assert listed.code == 0, listed.err
    lines = listed.out.splitlines()
    assert [line.split()[-1] for line in lines] == ["from-cli.txt", "from-sftp.txt"]
    assert all(line.startswith("-rw-") for line in lines)
    assert " 18 " in lines[1] and " 19 " in lines[0]

    assert sorted(sftp.listdir("/shared")) == ["from-cli.txt", "from-sftp.txt"]
    with sftp.open("/shared/from-cli.txt", "rb") as f:
        assert f.read() == b"written by the cli\n"

    as_json = json.loads(gateway("ls", gw.node_dir, "--json", "--caps", "/shared").out)
    caps = {e["name"]: e["cap"] for e in as_json["entries"]}
    assert caps["from-cli.txt"].startswith("GG:LIT:")  # tiny files live in the cap


def test_mkdir_mv_rm(gw: RunningGateway, tmp_path: Path, sftp: paramiko.SFTPClient) -> None:
    """mkdir, moving into a directory and renaming, rm of files and (-r) trees, seen over SFTP."""
    assert gateway("mkdir", gw.node_dir, "/work").code == 0
    assert stat.S_ISDIR(sftp.stat("/work").st_mode or 0)
    again = gateway("mkdir", gw.node_dir, "/work")
    assert again.code == 1 and again.err.startswith("gateway: ") and "exists" in again.err

    (tmp_path / "notes.txt").write_bytes(b"notes" * 100)
    assert gateway("put", gw.node_dir, tmp_path / "notes.txt", "/notes.txt").code == 0
    moved = gateway("mv", gw.node_dir, "/notes.txt", "/work")
    assert moved.code == 0, moved.err
    renamed = gateway("mv", gw.node_dir, "/work/notes.txt", "/work/renamed.txt")
    assert renamed.code == 0, renamed.err
    assert sftp.listdir("/work") == ["renamed.txt"]
    assert "notes.txt" not in sftp.listdir("/")

    not_empty = gateway("rm", gw.node_dir, "/work")
    assert not_empty.code == 1 and "not empty" in not_empty.err
    assert gateway("rm", gw.node_dir, "/work/renamed.txt").code == 0
    assert sftp.listdir("/work") == []
    assert gateway("mkdir", gw.node_dir, "/work/sub").code == 0
    assert gateway("put", gw.node_dir, tmp_path / "notes.txt", "/work/sub/n").code == 0
    assert gateway("rm", gw.node_dir, "-r", "/work").code == 0
    assert "work" not in sftp.listdir("/")
    missing = gateway("rm", gw.node_dir, "/work")
    assert missing.code == 1 and "no such" in missing.err


def test_check_healthy_file_and_deep_check(gw: RunningGateway, tmp_path: Path) -> None:
    """check and check --verify of a healthy file; a deep check of the whole tree."""
    local, _ = _payload(tmp_path, size=200_000)
    assert gateway("put", gw.node_dir, local, "/checked.bin").code == 0
    plain = gateway("check", gw.node_dir, "/checked.bin", "--json")
    assert plain.code == 0, plain.err
    result = json.loads(plain.out)["check"]
    assert result["healthy"] and not result["verified"] and result["shares_good"] == 1
    verified = gateway("check", gw.node_dir, "--verify", "alice:/checked.bin")
    assert verified.code == 0, verified.err
    assert "share 0: good" in verified.out
    deep = gateway("check", gw.node_dir, "--deep", "--verify", "/")
    assert deep.code == 0, deep.err
    assert "0 not healthy" in deep.out
    assert "GG:" not in plain.out + verified.out + deep.out  # checks never print caps
    with urllib.request.urlopen(gw.web_url + "health.json", timeout=10) as response:
        body = response.read().decode()
    checks = json.loads(body)["checks"]
    assert {(c["kind"], c["target"], c["healthy"]) for c in checks} >= {
        ("check", "/checked.bin", True),
        ("verify", "alice:/checked.bin", True),
        ("deep verify", "/", True),
    }
    assert "GG:" not in body  # the Health page names paths, never capabilities


def test_bad_arguments_are_clear_errors(gw: RunningGateway, tmp_path: Path) -> None:
    """A damaged cap, an unknown account and a missing path each get one clear line."""
    bad_cap = gateway("get", gw.node_dir, "GG:CHK:nonsense", tmp_path / "x")
    assert bad_cap.code == 2
    assert "CHK capability" in bad_cap.err and len(bad_cap.err.splitlines()) == 1
    assert not (tmp_path / "x").exists()
    unknown = gateway("ls", gw.node_dir, "bob:/")
    assert unknown.code == 2 and "no account named 'bob'" in unknown.err
    missing = gateway("get", gw.node_dir, "/no/such/file", tmp_path / "x")
    assert missing.code == 1 and missing.err.startswith("gateway: no such")
    assert not list(tmp_path.iterdir())  # no partial download left behind


def test_control_socket_is_private_and_log_has_no_caps(gw: RunningGateway) -> None:
    """The socket is 0600 in private/, and nothing the CLI did put a cap into the log."""
    sock = gw.node_dir / "private" / "control.sock"
    assert stat.S_ISSOCK(sock.lstat().st_mode)
    assert stat.S_IMODE(sock.lstat().st_mode) == 0o600
    assert "GG:" not in (gw.node_dir / "logs" / "node.log").read_text()


def test_node_not_running(tmp_path: Path) -> None:
    """Every file command on a stopped node says how to start it and exits 3."""
    node_dir = tmp_path / "stopped"
    assert gateway("create", node_dir, "--sftp-port", "0", "--web-port", "0").code == 0
    for args in (("ls",), ("put", __file__), ("check", "/")):
        result = gateway(args[0], node_dir, *args[1:])
        assert result.code == 3, result
        assert result.err == (
            f"gateway: node in {node_dir} is not running"
            f" (start it with 'gateway start {node_dir}')\n"
        )
