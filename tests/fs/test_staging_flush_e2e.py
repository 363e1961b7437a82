"""Large files through a real gateway process, with their staged bytes flushed behind in threads.

A file of several flush-behind chunks (8 MiB each) is durable once its CLOSE is
answered: a SIGKILL right after it loses nothing. Many such files, some of them
abandoned mid-write (session gone without CLOSE, while their flush-behind may be
running), leave no descriptor, staged file or extra thread behind.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from gateway.fs.staging import FLUSH_BEHIND_BYTES
from tests.durability.cluster import (
    MiB,
    Session,
    kill_gateway,
    put_bytes,
    read_all,
    restart,
    wait_drained,
    wait_for,
)
from tests.nodes import NodeReaper, gateway, node_pid
from tests.sftp.gateway_node import start_gateway

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")


def _open_files(pid: int) -> list[str]:
    """What a process's descriptors other than sockets point at (a leaked staged file shows as
    ``…/staging/….staged (deleted)``)."""
    targets = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue  # closed meanwhile
        if not target.startswith("socket:"):  # connections come and go with clients
            targets.append(target)
    return sorted(targets)


def _threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def test_a_large_file_survives_a_sigkill_right_after_its_close(
    tmp_path: Path, reaper: NodeReaper
) -> None:
    """SIGKILL as soon as the CLOSE of a 2.5-chunk file is answered: after the restart the
    file reads back whole, from staging and then from the grid."""
    gw = start_gateway(tmp_path, reaper)
    data = random.Random(11).randbytes(FLUSH_BEHIND_BYTES * 5 // 2 + 12345)
    with Session(gw) as sftp:
        put_bytes(sftp, "/big.bin", data)
        kill_gateway(gw)
    gw = restart(gw)
    with Session(gw) as sftp:
        assert read_all(sftp, "/big.bin") == data
    wait_drained(gw)
    with Session(gw) as sftp:
        assert read_all(sftp, "/big.bin") == data


def test_many_files_leave_no_descriptor_staged_file_or_thread_behind(
    tmp_path: Path, reaper: NodeReaper
) -> None:
    """Twelve files just over one flush-behind chunk, and four abandoned after one chunk and a
    half: once uploads are done the gateway has the descriptors and threads it had after the
    first file, and its staging directory holds only the kept copies of the thirteen files
    uploaded (no descriptor each); once the gateway stops, nothing."""
    gw = start_gateway(tmp_path, reaper)
    pid = node_pid(gw.node_dir)
    assert pid is not None
    rng = random.Random(12)
    size = FLUSH_BEHIND_BYTES + MiB
    with Session(gw) as sftp:
        put_bytes(sftp, "/warm.bin", rng.randbytes(size))
        wait_drained(gw)
        staged = gw.node_dir / "staging"
        # The spare staged files made for it go a few seconds later (gateway.fs.spares).
        wait_for(lambda: len(list(staged.iterdir())) == 1, 30, "the spares to go")
        files, threads = _open_files(pid), _threads(pid)
        written = {f"/f{i:02d}.bin": rng.randbytes(size) for i in range(12)}
        for name, data in written.items():
            put_bytes(sftp, name, data)
        for i in range(4):
            abandoned = Session(gw)
            f = abandoned.sftp.open(f"/abandoned{i}.bin", "wb")
            f.set_pipelined(True)
            f.write(rng.randbytes(FLUSH_BEHIND_BYTES * 3 // 2))
            f.flush()
            abandoned.close()  # no CLOSE: the gateway discards the file
        wait_drained(gw)
        for name, data in written.items():
            assert read_all(sftp, name) == data
        assert sorted(n for n in sftp.listdir("/") if n.startswith("abandoned")) == []
        wait_for(
            lambda: sorted(p.stat().st_size for p in staged.iterdir()) == [size] * 13,
            30,
            "the staging directory to hold the uploaded files' kept copies only",
        )
        wait_for(lambda: _open_files(pid) == files, 30, f"the gateway's open files to be {files}")
        # The reactor's pool keeps its workers (at most 10); nothing grows with the files.
        assert _threads(pid) <= threads + 10
    assert gateway("stop", gw.node_dir).code == 0
    assert list(staged.iterdir()) == []
