"""Directory write-back answers a change once its record is written, and flushes it after.

The journal's ``fdatasync`` runs in "threads" the test runs by hand, so it can look at
what a client is told before the flush ends, what a gateway killed at that moment
finds at its next start, and what waits for the flush: a CLOSE, and the end of an
upload. A flush that fails is logged, and the changes after it are refused until
the journal can be flushed again.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher

from gateway.fs.gridfs import GridFilesystem
from gateway.fs.interfaces import OpenFlags, SetAttributes
from gateway.fs.staging import StagingArea
from gateway.fs.volume import Volume
from gateway.fs.writing import Writers
from gateway.intents.log import IntentLog
from gateway.objects.caps import DirectoryWriteCap
from gateway.objects.dirnode import DirectoryNode
from gateway.objects.mutable import MutableClient
from gateway.objects.writeback import JOURNAL_DELAY, DirectoryWriteBack
from gateway.uploads.journal import UploadJob, UploadJournal
from gateway.uploads.queue import UploadQueue
from tests.fs.support import ManualThreads, drive, memory_store
from tests.objects.grid import GridClient, run
from tests.objects.test_dirnode import PARAMS, SECRETS, meta

T = TypeVar("T")
CREATE = OpenFlags(write=True, create=True, truncate=True)


def _write_back(
    grid: list[GridClient], state: Path, threads: Any, clock: Clock | None = None
) -> DirectoryWriteBack:
    client = MutableClient(grid, SECRETS, PARAMS)
    return DirectoryWriteBack(state, lambda: client, clock or Clock(), threads=threads)


def _node(grid: list[GridClient], cap: DirectoryWriteCap, wb: DirectoryWriteBack) -> DirectoryNode:
    client = MutableClient(grid, SECRETS, PARAMS)
    return DirectoryNode.open(client, cap, clock=Clock(), write_back=wb)


def test_a_change_is_answered_once_written_and_on_disk_once_its_flush_ends(
    grid: list[GridClient], root: DirectoryWriteCap, tmp_path: Path
) -> None:
    """mkdir and rename are answered while their flush waits; the journal already holds them
    (a gateway killed then publishes them at its next start); the flush starts
    JOURNAL_DELAY after the first, and ``durable`` fires once the one flush they share has
    run."""
    threads = ManualThreads()
    clock = Clock()
    wb = _write_back(grid, tmp_path, threads, clock)
    node = _node(grid, root, wb)
    run(node.mkdir("made", meta("dir")))
    clock.advance(JOURNAL_DELAY / 2)
    run(node.rename("made", "moved"))
    assert threads.queue == [], "no flush before the delay"
    clock.advance(JOURNAL_DELAY / 2)
    assert len(threads.queue) == 1, "one flush, shared by both changes"
    durable: list[object] = []
    Deferred.fromCoroutine(wb.durable()).addBoth(durable.append)
    assert durable == []

    restarted = _write_back(grid, tmp_path, None)
    # the new directory, its link and the rename
    assert restarted.pending() == 3, "the journal holds the changes before the flush"
    run(restarted.flush_all())
    assert sorted(run(_node(grid, root, _write_back(grid, tmp_path / "b", None)).list())) == [
        "moved"
    ]

    threads.run_all()
    assert durable == [None]


class _FailingThreads(ManualThreads):
    """Runs each call at once; while ``failing``, the flush raises EIO after running."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False

    def __call__(self, call: Callable[[], T], /) -> Deferred[T]:
        result = super().__call__(self._failing_call(call))
        self.run_all()
        return result

    def _failing_call(self, call: Callable[[], T]) -> Callable[[], T]:
        def run_it() -> T:
            value = call()
            if self.failing:
                raise OSError(errno.EIO, "Input/output error")
            return value

        return run_it


def test_a_failed_flush_is_logged_once_and_refuses_changes_until_it_flushes_again(
    grid: list[GridClient], root: DirectoryWriteCap, tmp_path: Path
) -> None:
    """A change whose flush fails was answered already (as a local filesystem's would be);
    the failure is logged once, every change after it is refused with the error and
    changes nothing, and once the journal flushes again changes are accepted."""
    threads = _FailingThreads()
    clock = Clock()
    wb = _write_back(grid, tmp_path, threads, clock)
    node = _node(grid, root, wb)
    errors: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") == LogLevel.error and "journal" in event.get("log_format", ""):
            errors.append(event["log_format"])

    globalLogPublisher.addObserver(observe)
    try:
        threads.failing = True
        run(node.mkdir("first", meta("dir")))
        clock.advance(JOURNAL_DELAY)  # its flush runs, and fails
        for name in ("second", "third"):
            with pytest.raises(OSError, match="Input/output error"):
                run(node.mkdir(name, meta("dir")))
        assert sorted(run(node.list())) == ["first"]
        assert len(errors) == 1
        threads.failing = False
        run(node.mkdir("fourth", meta("dir")))
        assert sorted(run(node.list())) == ["first", "fourth"]
        run(wb.durable())
    finally:
        globalLogPublisher.removeObserver(observe)
    assert len(errors) == 1


class _Gateway:
    """A volume with directory write-back and an upload queue, both flushing their journals
    in the test's threads."""

    def __init__(self, base: Path) -> None:
        self.clock = Clock()
        self.threads = ManualThreads()
        store = memory_store(self.clock, 1)
        store.write_back = DirectoryWriteBack(
            base / "directories", store.mutable_client, self.clock, threads=self.threads
        )
        queue = UploadQueue(
            self.clock, UploadJournal(base / "uploads"), self._upload, threads=self.threads
        )
        queue.startService()
        staging = StagingArea(base / "staging", quota=1 << 30, spare_files=0)
        root = DirectoryWriteCap.generate().to_string()
        self.volume = Volume(root, store, staging, queue, self.clock)
        self.writers = Writers(self.volume, self.clock, self.threads)
        self.fs = GridFilesystem(self.volume)

    async def _upload(self, job: UploadJob) -> None:
        await self.volume.upload(job)


def test_a_close_waits_for_the_directory_changes_made_before_it(tmp_path: Path) -> None:
    """A file closed in a directory just made is acknowledged only once the mkdir's record
    is on disk too, not only the file's own upload record: after a power loss the file's
    directory is there for it."""
    gw = _Gateway(tmp_path)
    drive(gw.fs.mkdir("/new", SetAttributes()), gw.threads)
    gw.clock.advance(JOURNAL_DELAY)
    dir_flush = gw.threads.queue.pop(0)  # the mkdir's flush waits
    handle = drive(gw.writers.open(("new", "f.txt"), CREATE, SetAttributes()), gw.threads)
    drive(handle.write(0, b"contents"), gw.threads)
    closed: list[object] = []
    Deferred.fromCoroutine(handle.close()).addBoth(closed.append)
    gw.threads.run_all()  # the upload journal's flush
    assert closed == [], "answered before the directory it is in was on disk"
    gw.threads.queue.insert(0, dir_flush)
    gw.threads.run_all()
    assert closed == [None]


def test_waiting_for_the_changes_flushes_them_at_once(
    grid: list[GridClient], root: DirectoryWriteCap, tmp_path: Path
) -> None:
    """``durable`` (a CLOSE, an upload's end) starts the flush now, not after the delay;
    the delayed flush then finds nothing left to do."""
    threads = ManualThreads()
    clock = Clock()
    wb = _write_back(grid, tmp_path, threads, clock)
    node = _node(grid, root, wb)
    run(node.mkdir("made", meta("dir")))
    durable: list[object] = []
    Deferred.fromCoroutine(wb.durable()).addBoth(durable.append)
    assert len(threads.queue) == 1, "flushing without waiting for the delay"
    threads.run_all()
    assert durable == [None]
    clock.advance(JOURNAL_DELAY)
    assert threads.queue == [], "no second flush"


def test_finished_intents_need_no_flush(tmp_path: Path) -> None:
    """ "Done" records are never flushed on their own: once every put is on disk, waiting for
    the journal asks for no flush even with done records appended since (a CLOSE after an
    upload's end would otherwise pay a flush in a thread for nothing)."""
    threads = ManualThreads()
    log = IntentLog(tmp_path / "intents.log")
    log.put("a", {"x": 1})
    first: list[object] = []
    log.flushed(threads).addBoth(first.append)
    threads.run_all()
    assert first == [None]
    log.done("a")
    again: list[object] = []
    log.flushed(threads).addBoth(again.append)
    assert again == [None] and not threads.queue
    log.put("b", {"x": 2})
    third: list[object] = []
    log.flushed(threads).addBoth(third.append)
    assert third == [] and len(threads.queue) == 1
    threads.run_all()
    assert third == [None]
    log.close()


def test_an_intent_done_before_its_flush_needs_none(tmp_path: Path) -> None:
    """A put carried out (done) before any flush covered it is in the grid already: waiting
    for the journal then asks for no flush. A put still live among them is flushed, and
    a flush under way covers only what was put before it started."""
    threads = ManualThreads()
    log = IntentLog(tmp_path / "intents.log")
    log.put("a", {"x": 1})
    log.done("a")
    waited: list[object] = []
    log.flushed(threads).addBoth(waited.append)
    assert waited == [None] and not threads.queue, "nothing live to make durable"
    log.put("b", {"x": 2})
    log.put("c", {"x": 3})
    log.done("b")
    log.flushed(threads).addBoth(waited.append)
    assert waited == [None] and len(threads.queue) == 1, "c is live: flushed"
    log.put("d", {"x": 4})  # after the flush started: not covered by it
    threads.run_all()
    assert waited == [None, None]
    log.flushed(threads).addBoth(waited.append)
    assert len(threads.queue) == 1, "d still needs its flush"
    threads.run_all()
    assert waited == [None, None, None]
    reopened = IntentLog(tmp_path / "intents.log")
    assert set(reopened.live) == {"c", "d"}


def test_a_change_published_before_the_delay_costs_no_flush(
    grid: list[GridClient], root: DirectoryWriteCap, tmp_path: Path
) -> None:
    """An fsync publishes its directory at once: when the delayed flush comes round, the
    change is in the grid and its intent done, so the journal is not flushed."""
    threads = ManualThreads()
    clock = Clock()
    wb = _write_back(grid, tmp_path, threads, clock)
    node = _node(grid, root, wb)
    run(node.mkdir("made", meta("dir")))
    run(wb.flush([node.storage_index]))
    assert threads.queue == []
    clock.advance(JOURNAL_DELAY)
    assert threads.queue == [], "no flush: the change is published"
    listed = run(_node(grid, root, _write_back(grid, tmp_path / "b", None)).list())
    assert sorted(listed) == ["made"]
