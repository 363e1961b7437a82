"""CLOSE of a written file with its fsync in a thread: answered only once the bytes are durable.

The last CLOSE of a file syncs its staged bytes in a thread (the reactor serves
others meanwhile), then the volume journals the upload. These tests run one
volume in process on an in-memory grid, with the "threads" driven by hand, and
check what a client relies on: the CLOSE answers after an fsync that follows
the last write and after the journal record; an OPEN of the path while the
CLOSE syncs sees the closed file; a remove in that time wins; a failed sync
fails the CLOSE and leaves nothing behind.
"""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from gateway.fs import staging
from gateway.fs.errors import NoSpace
from gateway.fs.gridfs import GridFilesystem
from gateway.fs.interfaces import OpenFlags, SetAttributes
from gateway.fs.staging import StagingArea
from gateway.fs.volume import Volume
from gateway.fs.writing import WriteHandle, Writers
from gateway.objects.caps import DirectoryWriteCap
from gateway.uploads.journal import UploadJob, UploadJournal
from gateway.uploads.queue import UploadQueue
from tests.fs.support import ManualThreads, drive, memory_store

KiB = 1024
CHUNK = 64 * KiB  # FLUSH_BEHIND_BYTES and PRESYNC_BYTES in these tests
CREATE = OpenFlags(write=True, create=True, truncate=True)
APPEND = OpenFlags(write=True, append=True)


class Gateway:
    """One volume on an in-memory grid; uploads never start (the clock is not advanced)."""

    def __init__(self, base: Path) -> None:
        self.clock = Clock()
        store = memory_store(self.clock, 3)
        self.journal_dir = base / "journal"
        self.queue = UploadQueue(self.clock, UploadJournal(self.journal_dir), self._upload)
        self.queue.startService()
        self.staging = StagingArea(base / "staging", quota=1 << 30, spare_files=0)
        root = DirectoryWriteCap.generate().to_string()
        self.volume = Volume(root, store, self.staging, self.queue, self.clock)
        self.threads = ManualThreads()
        self.writers = Writers(self.volume, self.clock, self.threads)

    async def _upload(self, job: UploadJob) -> None:
        await self.volume.upload(job)

    def open(self, name: str, flags: OpenFlags = CREATE) -> WriteHandle:
        """OPEN for writing (the root is created on the way)."""
        return drive(self.writers.open((name,), flags, SetAttributes()), self.threads)

    def journaled(self) -> list[UploadJob]:
        """The upload records on disk, as the next start would read them."""
        return list(UploadJournal(self.journal_dir).load())


@pytest.fixture
def gw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    """A gateway with flush-behind every 64 KiB and presync from 64 KiB."""
    monkeypatch.setattr(staging, "FLUSH_BEHIND_BYTES", CHUNK)
    monkeypatch.setattr(staging, "PRESYNC_BYTES", CHUNK)
    return Gateway(tmp_path)


def write_all(handle: WriteHandle, data: bytes, offset: int = 0, piece: int = 32 * KiB) -> None:
    """WRITE requests of ``piece`` bytes, as a client sends them."""
    for start in range(0, len(data), piece):
        Deferred.fromCoroutine(handle.write(offset + start, data[start : start + piece]))


def started(coroutine: Any) -> list[object]:
    """Start a coroutine; the list gets its result (or Failure) when it finishes."""
    outcome: list[object] = []
    Deferred.fromCoroutine(coroutine).addBoth(outcome.append)
    return outcome


def test_close_answers_after_an_fsync_of_every_byte_and_the_journal_record(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLOSE waits for the flush-behind under way and an fsync in a thread; by its answer
    the staged file was fsynced after the last write, and its record is on disk."""
    data = random.Random(3).randbytes(5 * CHUNK + 777)
    handle = gw.open("f.bin")
    staged = handle.state.staged
    assert staged is not None
    fsynced: list[tuple[int, int]] = []  # (descriptor, size when fsynced)
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        fsynced.append((fd, staged.size))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_all(handle, data)
    assert gw.threads.queue  # flush-behind started while writing
    closed = started(handle.close())
    assert not closed and gw.journaled() == []
    gw.threads.run_all()
    assert closed == [None]
    assert (staged.fd, len(data)) in fsynced
    (job,) = gw.journaled()
    assert job.staged == str(staged.path) and job.size == len(data)
    assert staged.path.read_bytes() == data
    assert gw.staging.background_calls == 0


def test_an_open_while_the_close_syncs_waits_and_gets_the_closed_bytes(gw: Gateway) -> None:
    """An OPEN of the path (another session appending) waits for the CLOSE in progress, then
    starts from the file that CLOSE published; nothing written is lost."""
    first = random.Random(4).randbytes(3 * CHUNK)
    handle = gw.open("log.txt")
    write_all(handle, first)
    closed = started(handle.close())
    reopened = started(gw.writers.open(("log.txt",), APPEND, SetAttributes()))
    assert not closed and not reopened
    state = gw.volume.overlay.local(("log.txt",))  # still listed with its size meanwhile
    assert state is not None and state.attributes(0.0).size == len(first)
    gw.threads.run_all()
    assert closed == [None]
    (again,) = reopened
    assert isinstance(again, WriteHandle) and again.state is not handle.state
    more = b"appended" * 1000
    Deferred.fromCoroutine(again.write(0, more))  # an appending handle writes at the end
    drive(again.close(), gw.threads)
    assert sorted(job.size for job in gw.journaled()) == [len(first), len(first) + len(more)]
    newest = gw.volume.overlay.pending[("log.txt",)]
    assert newest.staged.read(0, newest.staged.size) == first + more


def test_a_remove_while_the_close_syncs_wins(gw: Gateway) -> None:
    """A remove that arrives while the CLOSE syncs abandons the file: the CLOSE succeeds,
    nothing is journaled, the staged file and its quota are gone."""
    handle = gw.open("gone.bin")
    write_all(handle, b"r" * (2 * CHUNK))
    staged = handle.state.staged
    assert staged is not None
    closed = started(handle.close())
    removed = started(GridFilesystem(gw.volume).remove("/gone.bin"))
    assert removed == [None] and not closed
    gw.threads.run_all()
    assert closed == [None]
    assert gw.journaled() == [] and gw.volume.overlay.local(("gone.bin",)) is None
    assert not staged.path.exists() and gw.staging.used == 0


def test_a_failed_sync_fails_the_close_and_keeps_nothing(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk found by the fsync in the thread fails the CLOSE with "disk is full" (never
    a success the bytes would not back); nothing is journaled or left visible, and the path
    can be opened again."""
    handle = gw.open("full.bin")
    write_all(handle, b"f" * (2 * CHUNK))
    staged = handle.state.staged
    assert staged is not None
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if gw.threads.running and fd == staged.fd:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(NoSpace, match="disk is full"):
        drive(handle.close(), gw.threads)
    assert gw.journaled() == [] and gw.volume.overlay.local(("full.bin",)) is None
    assert not staged.path.exists() and gw.staging.used == 0
    monkeypatch.undo()
    again = gw.open("full.bin")
    write_all(again, b"ok")
    drive(again.close(), gw.threads)
    assert [job.size for job in gw.journaled()] == [2]
