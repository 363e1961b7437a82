"""Node directories are private whatever the umask, and a node whose secrets others could read
or whose directory others could change refuses to start (real processes)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.nodes import NodeReaper, gateway
from tests.sftp.gateway_node import PASSWORD, restart_gateway

PUBLIC = {"ssh_host_ed25519_key.pub", "tls-cert.pem"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _unsafe_modes(node_dir: Path) -> list[str]:
    """Every path of a node directory whose mode gives others more than the design allows:
    nothing in private/, staging/, state/ or storage/ (but the public key halves), and no
    write access to anything."""
    found = []
    for path in [node_dir, *node_dir.rglob("*")]:
        mode = _mode(path)
        top = path.relative_to(node_dir).parts[:1]
        secret = top and top[0] in ("private", "staging", "state", "storage")
        if mode & 0o022 or (secret and path.name not in PUBLIC and mode & 0o077):
            found.append(f"{path.relative_to(node_dir)} {mode:04o}")
    return found


def test_nodes_made_and_run_under_umask_000_are_private(tmp_path: Path, reaper: NodeReaper) -> None:
    """Under umask 000, create, create-storage, account add and start (and a file written
    over SFTP) leave private/, staging/, state/ and storage/ 0700 with 0600 files, and
    nothing anyone else may write."""
    storage = reaper.track(tmp_path / "deep" / "storage")
    created = gateway("create-storage", storage, "--reserved-space", "1M", umask=0)
    assert created.code == 0, created.err
    nurl = created.out.strip().splitlines()[-1]
    gw = reaper.track(tmp_path / "gw")
    created = gateway(
        "create", gw, "--sftp-port", "0", "--web-port", "0", "--storage", nurl, umask=0
    )
    assert created.code == 0, created.err
    added = gateway("account", "add", gw, "alice", "--password-stdin", stdin=PASSWORD, umask=0)
    assert added.code == 0, added.err

    assert _mode(tmp_path / "deep") == 0o755
    for node_dir in (storage, gw):
        assert _mode(node_dir) == 0o755
        assert _mode(node_dir / "private") == 0o700
        assert _mode(node_dir / "node.cfg") == 0o644
        assert _unsafe_modes(node_dir) == []
    assert _mode(gw / "private" / "accounts.json") == 0o600
    assert _mode(storage / "private" / "tls-cert.pem") == 0o644

    assert gateway("start", storage, umask=0).code == 0
    started = gateway("start", gw, umask=0)
    assert started.code == 0, started.err
    running = restart_gateway(gw)  # already running: learns where it listens
    transport, sftp = running.sftp()
    try:
        with sftp.open("/hello.txt", "wb") as f:
            f.write(b"hello\n" * 1000)
        assert sftp.open("/hello.txt").read() == b"hello\n" * 1000
    finally:
        transport.close()
    for node_dir in (storage, gw):
        assert (node_dir / "private" / "announce").exists()
        assert _unsafe_modes(node_dir) == []
    assert stat.S_ISSOCK((gw / "private" / "control.sock").stat().st_mode)
    assert gateway("stop", gw).code == 0
    assert gateway("stop", storage).code == 0
    for node_dir in (storage, gw):
        assert _unsafe_modes(node_dir) == []
        assert _mode(node_dir / "logs" / "node.log") == 0o600


def test_readable_secrets_are_refused_at_start(tmp_path: Path, reaper: NodeReaper) -> None:
    """A storage node whose private/ and swissnum others can read does not start: one line
    names both paths, their modes and the chmod that fixes them, never the secret; after
    that chmod it starts."""
    node_dir = reaper.track(tmp_path / "s")
    assert gateway("create-storage", node_dir).code == 0
    private = node_dir / "private"
    private.chmod(0o755)
    (private / "swissnum").chmod(0o644)
    result = gateway("start", node_dir)
    assert result.code == 1
    assert result.err == (
        f"gateway: could not start node in {node_dir}: unsafe permissions: "
        f"{private} (mode 0755) is readable by other users; "
        f"{private / 'swissnum'} (mode 0644) is readable by other users; "
        f"fix with: chmod go-rwx {private} {private / 'swissnum'} "
        "(other users could read secrets: consider rotating them, see docs/operations.rst)\n"
    )
    swissnum = (private / "swissnum").read_text().strip()
    assert swissnum not in result.err
    assert gateway("status", node_dir).code == 3

    os.chmod(private, 0o700)
    (private / "swissnum").chmod(0o600)
    assert gateway("start", node_dir).code == 0
    assert gateway("stop", node_dir).code == 0


def test_writable_node_directory_is_refused(tmp_path: Path, reaper: NodeReaper) -> None:
    """A gateway directory (or node.cfg, or staging/) others may write is refused by ``run``
    (what systemd runs) as by ``start``, each with its own fix; a passphrase file named in
    node.cfg is held to private/'s rules."""
    node_dir = reaper.track(tmp_path / "gw")
    assert gateway("create", node_dir, "--sftp-port", "0", "--web-port", "0").code == 0
    node_dir.chmod(0o777)
    (node_dir / "node.cfg").chmod(0o664)
    (node_dir / "staging").chmod(0o710)
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "run", str(node_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert run.stderr == (
        f"gateway: unsafe permissions: {node_dir} (mode 0777) is writable by other users; "
        f"{node_dir / 'node.cfg'} (mode 0664) is writable by other users; "
        f"{node_dir / 'staging'} (mode 0710) is accessible by other users; "
        f"fix with: chmod go-w {node_dir} {node_dir / 'node.cfg'} && "
        f"chmod go-rwx {node_dir / 'staging'} "
        "(other users could read secrets: consider rotating them, see docs/operations.rst)\n"
    )
    node_dir.chmod(0o755)
    (node_dir / "node.cfg").chmod(0o644)
    (node_dir / "staging").chmod(0o700)

    phrase = tmp_path / "phrase"
    phrase.write_text("not used\n")
    phrase.chmod(0o640)
    config = node_dir / "node.cfg"
    config.write_text(
        config.read_text().replace(
            "#host_key_passphrase_file = ", f"host_key_passphrase_file = {phrase}"
        )
    )
    result = gateway("start", node_dir)
    assert result.code == 1
    assert f"{phrase} (mode 0640) is readable by other users" in result.err
    assert f"fix with: chmod go-rwx {phrase} " in result.err


def test_nodes_created_side_by_side_at_once_share_their_new_parent(tmp_path: Path) -> None:
    """Several ``create``s at once under a parent none of them found (a test grid, a
    provisioning script) all succeed: the parent one of them made meanwhile is shared, not an
    error; a node directory made meanwhile by another is refused with a clear error."""
    import threading

    from gateway.nodedir import NodeDirExists, make_node_dir

    for attempt in range(5):
        parent = tmp_path / f"grid{attempt}" / "nodes"
        start = threading.Barrier(8)
        errors: list[BaseException] = []

        def create(
            i: int,
            parent: Path = parent,
            start: threading.Barrier = start,
            errors: list[BaseException] = errors,
        ) -> None:
            start.wait()
            try:
                make_node_dir(parent / f"node-{i}")
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sorted(p.name for p in parent.iterdir()) == [f"node-{i}" for i in range(8)]
    with pytest.raises(NodeDirExists):
        make_node_dir(tmp_path / "grid0" / "nodes" / "node-0")
