"""CLOSE with the upload journal flushed in a thread: answered only once the record is on disk.

One volume in process on an in-memory grid; the journal's flushes run in "threads" the test
runs by hand, so it can look at what a client sees before and after the flush (a gateway
made with ``in_place_below=0``: else, on a disk that flushes fast, a CLOSE's flush runs in
place, which the last test shows).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from gateway.fs.errors import NoSpace
from gateway.fs.gridfs import GridFilesystem
from gateway.fs.interfaces import OpenFlags, SetAttributes
from gateway.fs.staging import StagingArea
from gateway.fs.volume import Volume
from gateway.fs.writing import Writers
from gateway.intents.log import IN_PLACE_BELOW
from gateway.objects.caps import DirectoryWriteCap
from gateway.uploads.journal import UploadJob, UploadJournal
from gateway.uploads.queue import UploadQueue
from tests.fs.support import ManualThreads, drive, memory_store, recorded

CREATE = OpenFlags(write=True, create=True, truncate=True)


class Gateway:
    """A volume whose queue flushes the journal in the test's threads (uploads never start)."""

    def __init__(self, base: Path, in_place_below: float = 0.0) -> None:
        self.clock = Clock()
        store = memory_store(self.clock, 1)
        self.threads = ManualThreads()
        self.journal_dir = base / "journal"
        journal = UploadJournal(self.journal_dir, in_place_below=in_place_below)
        self.queue = UploadQueue(self.clock, journal, self._upload, threads=self.threads)
        self.queue.startService()
        self.staging = StagingArea(base / "staging", quota=1 << 30, spare_files=0)
        root = DirectoryWriteCap.generate().to_string()
        self.volume = Volume(root, store, self.staging, self.queue, self.clock)
        self.writers = Writers(self.volume, self.clock, self.threads)
        self.fs = GridFilesystem(self.volume)

    async def _upload(self, job: UploadJob) -> None:
        await self.volume.upload(job)

    def journaled(self) -> list[str]:
        """The files whose upload records the next start would read."""
        return [job.display for job in UploadJournal(self.journal_dir).load()]

    def write_file(self, name: str, data: bytes) -> list[object]:
        """OPEN, WRITE and start the CLOSE; the list gets the CLOSE's outcome."""
        handle = drive(self.writers.open((name,), CREATE, SetAttributes()), self.threads)
        drive(handle.write(0, data), self.threads)
        closed: list[object] = []
        Deferred.fromCoroutine(handle.close()).addBoth(closed.append)
        return closed


def test_close_answers_once_the_record_is_flushed_in_a_thread(tmp_path: Path) -> None:
    """The CLOSE of a small file waits for the journal flush in a thread; files closed while
    it runs share the next flush; each CLOSE is answered once its record is durable."""
    gw = Gateway(tmp_path)
    first = gw.write_file("a.txt", b"alpha")
    assert first == [] and len(gw.threads.queue) == 1
    second = gw.write_file("b.txt", b"beta")
    third = gw.write_file("c.txt", b"gamma")
    assert second == [] and third == [] and len(gw.threads.queue) == 1
    gw.threads.run_next()
    assert first == [None] and second == [] and third == []
    gw.threads.run_next()
    assert second == [None] and third == [None] and not gw.threads.queue
    assert sorted(gw.journaled()) == ["/a.txt", "/b.txt", "/c.txt"]
    handle = drive(gw.fs.open("/b.txt", OpenFlags(read=True), SetAttributes()), gw.threads)
    assert drive(handle.read(0, 100), gw.threads) == b"beta"


def test_a_failed_journal_flush_fails_the_close_and_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk found flushing the journal fails the CLOSE with "disk is full"; the file is
    not visible afterwards and its staged bytes and quota are released."""
    gw = Gateway(tmp_path)

    def fdatasync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    closed = gw.write_file("full.txt", b"x" * 100)
    gw.threads.run_all()
    (failure,) = closed
    assert isinstance(failure.value, NoSpace)  # type: ignore[attr-defined]
    assert "disk is full" in str(failure.value)  # type: ignore[attr-defined]
    assert gw.volume.overlay.local(("full.txt",)) is None
    assert gw.staging.used == 0 and list(gw.staging.directory.iterdir()) == []
    assert drive(gw.fs.list("/"), gw.threads) == []


def test_close_answers_after_flushing_in_place_while_flushes_are_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a disk that flushes fast, a CLOSE's record is flushed in place, before the CLOSE
    is answered, with no thread: the file is journaled and readable at once."""
    gw = Gateway(tmp_path, in_place_below=IN_PLACE_BELOW)
    flushes = recorded(monkeypatch, "fdatasync")
    closed = gw.write_file("a.txt", b"alpha")
    assert closed == [None] and not gw.threads.queue and len(flushes) == 1
    assert gw.journaled() == ["/a.txt"]
    handle = drive(gw.fs.open("/a.txt", OpenFlags(read=True), SetAttributes()), gw.threads)
    assert drive(handle.read(0, 100), gw.threads) == b"alpha"
