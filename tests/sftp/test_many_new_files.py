"""Copying many new files at once works under a low descriptor limit (real gateway process).

Every new file stays staged until its upload ends, and uploads wait while the client
keeps the gateway busy. Each staged file held a descriptor meanwhile: under the usual
limit of 1,024 per process, the 1,008th file of a copy failed ("open failed") and the
embedded storage could no longer open a directory's share. The gateway now keeps at most
a quarter of its limit open for staged files. These tests start it with a hard limit of
256 (so raising the soft limit cannot help) and copy more files than that with paramiko
and with sshfs's ``cp -r``: every file arrives, byte for byte.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nodes import NodeReaper, gateway, node_pid
from tests.sftp.gateway_node import RunningGateway, restart_gateway, sshfs_mount, start_gateway

LIMIT = 256


@pytest.fixture
def limited_gateway(tmp_path: Path, reaper: NodeReaper) -> Iterator[RunningGateway]:
    """A gateway on the embedded grid whose process may open at most LIMIT files."""
    created = start_gateway(tmp_path, reaper)
    assert gateway("stop", created.node_dir).code == 0
    gw = restart_gateway(created.node_dir, open_files=LIMIT)
    pid = node_pid(gw.node_dir)
    assert pid is not None
    limits = [line for line in Path(f"/proc/{pid}/limits").read_text().splitlines()]
    assert [line.split()[3:5] for line in limits if line.startswith("Max open files")] == [
        [str(LIMIT), str(LIMIT)]
    ]
    yield gw
    stopped = gateway("stop", gw.node_dir)
    assert stopped.code == 0, stopped.err


def _contents(i: int) -> bytes:
    """File ``i``'s bytes: most small (staged in memory), every fifth 40 KiB (on disk)."""
    unit = b"file %05d\n" % i
    return unit * (4096 if i % 5 == 0 else 3)


def test_paramiko_writes_three_times_the_limit_in_new_files(
    limited_gateway: RunningGateway,
) -> None:
    """768 new files written back to back through one session all arrive and read back
    exactly, and the gateway never holds more descriptors than its limit allows."""
    transport, sftp = limited_gateway.sftp()
    pid = node_pid(limited_gateway.node_dir)
    most = 0
    try:
        sftp.mkdir("many")
        for i in range(3 * LIMIT):
            with sftp.open(f"many/f{i:05d}", "wb") as f:
                f.write(_contents(i))
            if i % 64 == 0:
                most = max(most, len(os.listdir(f"/proc/{pid}/fd")))
        assert sorted(sftp.listdir("many")) == [f"f{i:05d}" for i in range(3 * LIMIT)]
        for i in range(3 * LIMIT):
            with sftp.open(f"many/f{i:05d}", "rb") as f:
                assert f.read() == _contents(i), f"file {i}"
    finally:
        transport.close()
    assert most < LIMIT


def test_sshfs_copies_a_tree_of_more_files_than_the_limit(
    limited_gateway: RunningGateway, tmp_path: Path
) -> None:
    """``cp -r`` of 600 files in 6 directories onto an sshfs mount succeeds, and ``diff -r``
    finds the copy identical, right after and through a fresh mount."""
    tree = tmp_path / "tree"
    for d in range(6):
        (tree / f"d{d}").mkdir(parents=True)
        for i in range(100):
            (tree / f"d{d}" / f"f{i:03d}").write_bytes(_contents(d * 100 + i))
    point = tmp_path / "mnt"
    point.mkdir()
    try:
        sshfs_mount(limited_gateway, point)
        subprocess.run(["cp", "-r", str(tree), str(point / "tree")], check=True, timeout=300)
        diff = subprocess.run(["diff", "-r", str(tree), str(point / "tree")], timeout=300)
        assert diff.returncode == 0
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(point)], check=False, timeout=30)
    try:
        sshfs_mount(limited_gateway, point)
        diff = subprocess.run(["diff", "-r", str(tree), str(point / "tree")], timeout=300)
        assert diff.returncode == 0
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(point)], check=False, timeout=30)
