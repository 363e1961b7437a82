"""OpenSSH 9's own clients against a real gateway: sftp's cp (copy-data), ls -l owner names
(users-groups-by-id), scp's ``~/`` paths (expand-path) and symlinked directories."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.nodes import gateway
from tests.openssh import scp, sftp_batch
from tests.sftp.gateway_node import RunningGateway, running_gateway  # noqa: F401


def _batch(gw: RunningGateway, commands: str, workdir: Path) -> str:
    result = sftp_batch(gw.host, gw.port, gw.user, gw.password, commands, workdir)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _caps(gw: RunningGateway, path: str) -> dict[str, str | None]:
    listed = gateway("ls", gw.node_dir, "--caps", "--json", path)
    assert listed.code == 0, listed.err
    return {e["name"]: e.get("cap") for e in json.loads(listed.out)["entries"]}


def _wait_uploaded(gw: RunningGateway, path: str, name: str) -> str:
    deadline = time.monotonic() + 60
    while (cap := _caps(gw, path).get(name)) in (None, "-"):
        assert time.monotonic() < deadline, f"{name} was not uploaded"
        time.sleep(0.2)
    assert cap is not None
    return cap


def test_sftp_cp_of_a_grid_file_links_it(
    running_gateway: RunningGateway,  # noqa: F811
    tmp_path: Path,
) -> None:
    """sftp's cp answers at once with the same capability: nothing is copied or stored."""
    data = os.urandom(20_000_000)
    (tmp_path / "big.bin").write_bytes(data)
    _batch(running_gateway, "put big.bin\n", tmp_path)
    original = _wait_uploaded(running_gateway, "/", "big.bin")
    output = _batch(running_gateway, "cp big.bin copy.bin\nls -l copy.bin\n", tmp_path)
    assert "20000000" in output
    assert _wait_uploaded(running_gateway, "/", "copy.bin") == original
    _batch(running_gateway, "get copy.bin back.bin\n", tmp_path)
    assert (tmp_path / "back.bin").read_bytes() == data


def test_ls_l_names_the_owner(running_gateway: RunningGateway, tmp_path: Path) -> None:  # noqa: F811
    """ls -l shows the account's name as owner and group, not numbers."""
    (tmp_path / "f.txt").write_text("x")
    output = _batch(running_gateway, "put f.txt\nmkdir dir\nls -l\n", tmp_path)
    lines = [
        line
        for line in output.splitlines()
        if line.endswith(("f.txt", "dir")) and not line.startswith("sftp>")
    ]
    assert len(lines) == 2
    for line in lines:
        fields = line.split()
        assert fields[2] == running_gateway.user and fields[3] == running_gateway.user, line


def test_scp_home_relative_paths(running_gateway: RunningGateway, tmp_path: Path) -> None:  # noqa: F811
    """scp (SFTP mode) of ``~/name`` and ``~user/name``: the account's root is its home."""
    (tmp_path / "up.txt").write_text("via scp\n")
    remote = f"{running_gateway.user}@{running_gateway.host}"

    def copy(source: str, target: str) -> None:
        result = scp(running_gateway.port, running_gateway.password, tmp_path, source, target)
        assert result.returncode == 0, result.stderr  # (it needs the exit-status at the end)

    copy(str(tmp_path / "up.txt"), f"{remote}:~/home.txt")
    copy(f"{remote}:~{running_gateway.user}/home.txt", str(tmp_path / "down.txt"))
    assert (tmp_path / "down.txt").read_text() == "via scp\n"
    assert "home.txt" in _batch(running_gateway, "ls\n", tmp_path)


def test_sftp_through_a_symlinked_directory(
    running_gateway: RunningGateway,  # noqa: F811
    tmp_path: Path,
) -> None:
    """With ld -> releases/v2: ls ld, put and get through it, as on OpenSSH."""
    (tmp_path / "app.txt").write_text("version 2\n")
    output = _batch(
        running_gateway,
        "mkdir releases\nmkdir releases/v2\nsymlink releases/v2 ld\nput app.txt ld/app.txt\n"
        "ls ld\nls releases/v2\nget ld/app.txt back.txt\n",
        tmp_path,
    )
    assert output.count("app.txt") >= 3
    assert (tmp_path / "back.txt").read_text() == "version 2\n"


@pytest.mark.parametrize("depth", [41])
def test_a_symlink_loop_fails_clearly(
    running_gateway: RunningGateway,  # noqa: F811
    tmp_path: Path,
    depth: int,
) -> None:
    """A chain of links longer than 40 (or a loop) fails with a message, not a hang."""
    commands = "".join(f"symlink l{i + 1} l{i}\n" for i in range(depth))
    _batch(running_gateway, commands, tmp_path)
    result = sftp_batch(
        running_gateway.host, running_gateway.port, running_gateway.user,
        running_gateway.password, "ls l0/x\n", tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert "not found" in result.stderr or "Failure" in result.stderr
