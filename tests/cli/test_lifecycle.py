"""Node lifecycle on real processes: create, start, run, stop, and every way they can fail."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.grid_e2e.processes import readable
from tests.nodes import NodeReaper, gateway, node_pid, process_gone


def _create(tmp_path: Path, reaper: NodeReaper, *extra: str) -> Path:
    node_dir = reaper.track(tmp_path / "node")
    result = gateway("create", node_dir, "--sftp-port", "0", "--web-port", "0", *extra)
    assert result.code == 0, result.err
    return node_dir


def _status_url(lines: str) -> str:
    match = re.search(r"Status page: (http://\S+)", lines)
    assert match, lines
    return match.group(1)


def test_create_lays_out_a_private_node_directory(tmp_path: Path, reaper: NodeReaper) -> None:
    """create writes node.cfg, keys under a 0700 private/ with 0600 files, and embedded storage."""
    node_dir = _create(tmp_path, reaper)
    assert (node_dir / "node.cfg").is_file()
    assert stat.S_IMODE((node_dir / "private").stat().st_mode) == 0o700
    files = list((node_dir / "private").iterdir())
    assert files, "no secrets written"
    for f in files:
        if not f.name.endswith(".pub"):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE((node_dir / "staging").stat().st_mode) == 0o700
    assert (node_dir / "storage").is_dir()
    text = (node_dir / "node.cfg").read_text()
    assert "kind = gateway" in text and "embedded = true" in text


def test_create_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    """create never writes into a directory that already has files."""
    (tmp_path / "keep.txt").write_text("mine")
    result = gateway("create", tmp_path)
    assert result.code == 1
    assert (
        result.err.strip() == f"gateway: {tmp_path} is not empty; refusing to create a node there"
    )
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shares", "3/7/5"], "need 1 <= needed <= happy <= total <= 256"),
        (["--shares", "x"], "--shares expects NEEDED/HAPPY/TOTAL"),
        (["--sftp-port", "70000"], "--sftp-port: port must be between 0 and 65535"),
        (["--storage", "http://example"], "--storage: not a valid NURL"),
    ],
)
def test_create_rejects_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    """Bad create arguments give a usage error (exit 2) naming the option, and create nothing."""
    result = gateway("create", tmp_path / "node", *args)
    assert result.code == 2
    assert message in result.err
    assert not (tmp_path / "node").exists()


def test_start_status_stop_round_trip(tmp_path: Path, reaper: NodeReaper) -> None:
    """start returns once up; a second start says so; stop is graceful; stop again says so."""
    node_dir = _create(tmp_path, reaper)
    started = gateway("start", node_dir)
    assert started.code == 0, started.err
    url = _status_url(started.out)
    pid = node_pid(node_dir)
    assert pid is not None
    with urllib.request.urlopen(url + "status.json", timeout=10) as response:
        assert b'"kind": "gateway"' in response.read()

    again = gateway("start", node_dir)
    assert again.code == 0, again.err
    assert again.out.splitlines()[0] == f"Node in {node_dir} is already running (pid {pid})."
    assert _status_url(again.out) == url
    assert again.out.splitlines()[-1] == f"Stop it with: gateway stop {node_dir}"
    assert node_pid(node_dir) == pid

    moved = gateway("start", node_dir, "--web-port", "1")
    assert moved.code == 1
    assert "stop it before changing its ports" in moved.err

    status = gateway("status", node_dir)
    assert status.code == 0 and f"running (pid {pid})" in status.out

    stopped = gateway("stop", node_dir)
    assert stopped.code == 0, stopped.err
    assert f"(pid {pid}) stopped" in stopped.out
    assert not (node_dir / "node.pid").exists()
    assert process_gone(pid)

    again = gateway("stop", node_dir)
    assert again.code == 3
    assert again.err.strip() == f"gateway: node in {node_dir} is not running"
    assert gateway("status", node_dir).code == 3

    log = (node_dir / "logs" / "node.log").read_text()
    assert "node is up" in log and "node stopped" in log


def test_run_in_foreground_stops_cleanly_on_sigterm(tmp_path: Path, reaper: NodeReaper) -> None:
    """run serves in the foreground, prints what it listens on, exits 0 on SIGTERM."""
    node_dir = _create(tmp_path, reaper)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", str(node_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    reaper.track_pid(proc.pid)
    assert proc.stdout is not None
    seen = ""
    while "Status page:" not in seen:
        line = proc.stdout.readline()
        assert line, f"run exited early with {proc.wait()}: {seen}"
        seen += line
    with urllib.request.urlopen(_status_url(seen), timeout=10) as response:
        assert response.status == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert not (node_dir / "node.pid").exists()


def test_start_after_sigkill_is_not_refused(tmp_path: Path, reaper: NodeReaper) -> None:
    """A node killed with SIGKILL leaves a pid file, but the next start works."""
    node_dir = _create(tmp_path, reaper)
    assert gateway("start", node_dir).code == 0
    pid = node_pid(node_dir)
    assert pid
    os.kill(pid, signal.SIGKILL)
    pidfd = os.pidfd_open(pid)

    readable(pidfd, 30)
    os.close(pidfd)
    assert (node_dir / "node.pid").exists()
    assert gateway("status", node_dir).code == 3
    restarted = gateway("start", node_dir)
    assert restarted.code == 0, restarted.err
    assert gateway("stop", node_dir).code == 0


def test_start_on_a_port_in_use_names_the_address(tmp_path: Path, reaper: NodeReaper) -> None:
    """A port already taken makes start fail with one line naming the address, and no node runs."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        node_dir = reaper.track(tmp_path / "node")
        assert gateway("create", node_dir, "--sftp-port", "0", "--web-port", str(port)).code == 0
        result = gateway("start", node_dir)
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in lines[0]
    assert lines[0].endswith("; choose another port with --web-port N (or [web] port in node.cfg)")
    assert gateway("status", node_dir).code == 3


def test_start_with_other_ports_saves_them(tmp_path: Path, reaper: NodeReaper) -> None:
    """start --sftp-port/--web-port on a stopped node saves them in node.cfg and listens there."""
    node_dir = _create(tmp_path, reaper)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        web_port = probe.getsockname()[1]
    started = gateway("start", node_dir, "--web-port", str(web_port))
    assert started.code == 0, started.err
    assert f"Set [web] port = {web_port} in {node_dir / 'node.cfg'}." in started.out
    assert _status_url(started.out) == f"http://127.0.0.1:{web_port}/"
    text = (node_dir / "node.cfg").read_text()
    assert f"\nport = {web_port}\n" in text and "# Configuration of this gateway node" in text
    assert gateway("stop", node_dir).code == 0
    bad = gateway("start", node_dir, "--sftp-port", "70000")
    assert bad.code == 2 and "--sftp-port: port must be between 0 and 65535" in bad.err


def test_start_outside_a_node_directory(tmp_path: Path) -> None:
    """start in a directory without node.cfg says it is not a node directory."""
    result = gateway("start", tmp_path)
    assert result.code == 1
    assert "node.cfg: missing: not a node directory" in result.err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("[grid]", "[grid]\nshares.sizes = 3"), "[grid] shares.sizes: unknown key"),
        (("port = 0", "port = many"), "[sftp] port: expected a port number, got 'many'"),
        (
            ("shares.happy = 1", "shares.happy = 2"),
            "[grid] shares.happy: happy (2) cannot be greater than shares.total (1)",
        ),
        (
            ("shares.needed = 1", "shares.needed = 2"),
            "[grid] shares.needed: needed (2) cannot be greater than shares.happy (1)",
        ),
        (("[web]", "[web]\nenabled = maybe"), "[web] enabled: expected true or false"),
        (("kind = gateway", "kind = toaster"), "[node] kind: expected one of gateway, storage"),
        (("[web]", "[web]\nport = 1\nport = 2"), "not a valid INI file"),
        (
            ("[node]", "[storage]\nreserved_space = 1G\n[node]"),
            "[storage] reserved_space: not used by a gateway node",
        ),
    ],
)
def test_bad_config_lines_are_refused_at_start(
    tmp_path: Path, reaper: NodeReaper, edit: tuple[str, str], message: str
) -> None:
    """Each bad config line makes start fail with one line naming file, section and key."""
    node_dir = _create(tmp_path, reaper)
    cfg = node_dir / "node.cfg"
    cfg.write_text(cfg.read_text().replace(edit[0], edit[1], 1))
    result = gateway("start", node_dir)
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert str(cfg) in lines[0]
    assert message in lines[0]
    assert gateway("status", node_dir).code == 3


def test_missing_host_key_names_the_file(tmp_path: Path, reaper: NodeReaper) -> None:
    """A gateway whose SSH host key is gone refuses to start, naming the file."""
    node_dir = _create(tmp_path, reaper)
    key = node_dir / "private" / "ssh_host_ed25519_key"
    key.unlink()
    result = gateway("start", node_dir)
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1
    assert f"sftp: cannot read host key {key}" in lines[0]
    assert gateway("status", node_dir).code == 3


def test_damaged_accounts_file_is_refused_at_start(tmp_path: Path, reaper: NodeReaper) -> None:
    """A damaged accounts file stops the start with one line instead of serving no accounts."""
    node_dir = _create(tmp_path, reaper)
    accounts = node_dir / "private" / "accounts.json"
    accounts.write_text("{not json")
    accounts.chmod(0o600)
    result = gateway("start", node_dir)
    assert result.code == 1
    assert "sftp:" in result.err and str(accounts) in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_relative_node_directory(tmp_path: Path, reaper: NodeReaper) -> None:
    """A node directory given relative to the working directory starts and stops."""
    reaper.track(tmp_path / "rel")
    assert os.getcwd() == str(tmp_path)
    assert gateway("create", "rel", "--sftp-port", "0", "--web-port", "0").code == 0
    started = gateway("start", "rel")
    assert started.code == 0, started.err
    assert gateway("status", "rel").code == 0
    assert gateway("stop", "rel").code == 0
