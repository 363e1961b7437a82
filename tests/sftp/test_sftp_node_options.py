"""Node options of the SFTP frontend on real processes: CLOSE waiting for the grid, an
encrypted host key, and polling for a client's next request."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

from gateway.sftp.hostkey import generate_host_key
from tests.grid_e2e.processes import readable
from tests.nodes import NodeReaper, gateway, node_pid
from tests.sftp.gateway_node import RunningGateway, restart_gateway, start_gateway
from tests.sftp.preauth_helpers import status


def _set(node_dir: Path, old: str, new: str) -> None:
    cfg = node_dir / "node.cfg"
    text = cfg.read_text()
    assert old in text, old
    cfg.write_text(text.replace(old, new, 1))


def _kill(node_dir: Path) -> None:
    pid = node_pid(node_dir)
    assert pid
    os.kill(pid, signal.SIGKILL)
    pidfd = os.pidfd_open(pid)
    readable(pidfd, 30)
    os.close(pidfd)


def test_close_waits_for_the_grid_when_configured(tmp_path: Path, reaper: NodeReaper) -> None:
    """With close = grid, a file whose CLOSE was answered survives SIGKILL plus the loss of the
    gateway's staging area and journal: it is already in the grid."""
    gw = start_gateway(
        tmp_path, reaper, configure=lambda d: _set(d, "#close = local", "close = grid")
    )
    data = os.urandom(1_500_000)
    transport, sftp = gw.sftp()
    try:
        with sftp.open("/durable.bin", "wb") as f:
            f.write(data)
    finally:
        transport.close()
    _kill(gw.node_dir)
    shutil.rmtree(gw.node_dir / "staging")
    shutil.rmtree(gw.node_dir / "state")
    again = restart_gateway(gw.node_dir)
    transport, sftp = again.sftp()
    try:
        with sftp.open("/durable.bin", "rb") as f:
            assert f.read() == data
    finally:
        transport.close()
    assert gateway("stop", gw.node_dir).code == 0


def _encrypt_host_key(node_dir: Path, passphrase: str) -> None:
    key = node_dir / "private" / "ssh_host_ed25519_key"
    key.unlink()
    (node_dir / "private" / "ssh_host_ed25519_key.pub").unlink()
    generate_host_key(key, passphrase=passphrase)
    secret = node_dir / "private" / "host_key_passphrase"
    secret.write_text(passphrase + "\n")
    secret.chmod(0o600)
    _set(
        node_dir,
        "#host_key_passphrase_file = ",
        "host_key_passphrase_file = private/host_key_passphrase",
    )


def test_passphrase_protected_host_key(tmp_path: Path, reaper: NodeReaper) -> None:
    """An encrypted host key with its passphrase file serves; the client sees that key."""
    gw = start_gateway(tmp_path, reaper, configure=lambda d: _encrypt_host_key(d, "s3cret pass"))
    public = (gw.node_dir / "private" / "ssh_host_ed25519_key.pub").read_text().split()[1]
    transport, sftp = gw.sftp()
    try:
        assert transport.get_remote_server_key().get_base64() == public
        assert sftp.listdir("/") == []
    finally:
        transport.close()
    assert gateway("stop", gw.node_dir).code == 0
    log = (gw.node_dir / "logs" / "node.log").read_text()
    assert "s3cret pass" not in log


def test_wrong_host_key_passphrase_stops_the_start(tmp_path: Path, reaper: NodeReaper) -> None:
    """A wrong passphrase is refused at start with one line naming the key, never the phrase."""
    node_dir = reaper.track(tmp_path / "gw")
    assert gateway("create", node_dir, "--sftp-port", "0", "--web-port", "0").code == 0
    _encrypt_host_key(node_dir, "right one")
    (node_dir / "private" / "host_key_passphrase").write_text("wrong one\n")
    result = gateway("start", node_dir)
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1
    assert "ssh_host_ed25519_key" in lines[0] and "wrong passphrase" in lines[0]
    assert "wrong one" not in result.err


def _stats(gw: RunningGateway, count: int) -> dict[str, object]:
    """``count`` STATs in lock step over paramiko; then the SFTP part's status."""
    transport, sftp = gw.sftp()
    try:
        sftp.mkdir("/d")
        for _ in range(count):
            assert sftp.stat("/d").st_mode is not None
    finally:
        transport.close()
    return status(gw)


def test_a_client_in_lock_step_is_polled_for(tmp_path: Path, reaper: NodeReaper) -> None:
    """A client sending each request as soon as the last is answered: after its replies
    the gateway polls for its requests (``busy_poll``), or skips a poll while the CPUs are
    crowded (other tests running beside this one), as the status page counts."""
    gw = start_gateway(
        tmp_path, reaper, configure=lambda d: _set(d, "#busy_poll = 300us", "busy_poll = 50ms")
    )
    figures = _stats(gw, 200)
    assert figures["busy_poll_limit_us"] == 50_000
    polls, caught, skipped = (
        figures["busy_polls"],
        figures["busy_polls_caught"],
        figures["busy_polls_skipped_crowded"],
    )
    assert isinstance(polls, int) and isinstance(caught, int) and isinstance(skipped, int)
    assert polls + skipped >= 200
    assert caught <= polls
    assert gateway("stop", gw.node_dir).code == 0


def test_busy_poll_zero_never_polls(tmp_path: Path, reaper: NodeReaper) -> None:
    """``busy_poll = 0``: the same client's requests are all answered; nothing is polled."""
    gw = start_gateway(
        tmp_path, reaper, configure=lambda d: _set(d, "#busy_poll = 300us", "busy_poll = 0")
    )
    figures = _stats(gw, 50)
    assert figures["busy_poll_limit_us"] == 0
    assert (figures["busy_polls"], figures["busy_polls_skipped_crowded"]) == (0, 0)
    assert gateway("stop", gw.node_dir).code == 0
