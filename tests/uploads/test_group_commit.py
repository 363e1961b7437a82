"""The upload journal's flushes in a thread: shared by records appended meanwhile, and a job
is acknowledged and uploaded only once its record is on disk."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from gateway.intents.log import IN_PLACE_BELOW
from gateway.uploads.journal import UploadJob, UploadJournal, new_job_id
from gateway.uploads.queue import UploadQueue
from tests.fs.support import ManualThreads


def _job(name: str) -> UploadJob:
    return UploadJob(new_job_id(), f"/staging/{name}", 3, name, {"cap": "secret"}, 1.0)


def _outcome(d: Deferred[None]) -> list[object]:
    seen: list[object] = []
    d.addBoth(seen.append)
    return seen


@pytest.fixture
def threads() -> ManualThreads:
    """Background calls the test runs by hand."""
    return ManualThreads()


@pytest.fixture
def flushes(monkeypatch: pytest.MonkeyPatch, threads: ManualThreads) -> list[bool]:
    """Every ``fdatasync``, as whether it ran in a thread (recorded, then done for real)."""
    seen: list[bool] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        seen.append(threads.running)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return seen


def test_records_appended_during_a_flush_share_the_next_one(
    tmp_path: Path, threads: ManualThreads, flushes: list[bool]
) -> None:
    """Three records, two flushes: the ones appended while the first flush runs wait for the
    second, which covers both; each waiter fires only once its own record is on disk."""
    journal = UploadJournal(tmp_path, in_place_below=0.0)
    first, second, third = _job("a"), _job("b"), _job("c")
    journal.record(first, sync=False)
    one = _outcome(journal.flushed(threads))
    journal.record(second, sync=False)
    two = _outcome(journal.flushed(threads))
    journal.record(third, sync=False)
    three = _outcome(journal.flushed(threads))
    assert len(threads.queue) == 1 and not flushes, "one flush at a time, none in the reactor"
    threads.run_next()
    assert one == [None] and not two and not three
    assert len(threads.queue) == 1
    threads.run_next()
    assert two == [None] and three == [None]
    assert len(flushes) == 2 and not threads.queue
    assert sorted(job.display for job in UploadJournal(tmp_path).load()) == ["a", "b", "c"]
    assert journal.flushed(threads).called, "nothing left to flush: fires at once"


def test_a_synchronous_record_satisfies_waiting_flushes(
    tmp_path: Path, threads: ManualThreads
) -> None:
    """A record written with its own flush (a rename's) makes earlier ones durable too: their
    waiters fire when the flush in the thread returns, and no further flush is started."""
    journal = UploadJournal(tmp_path)
    journal.record(_job("a"), sync=False)
    one = _outcome(journal.flushed(threads))
    journal.record(_job("b"), sync=False)
    two = _outcome(journal.flushed(threads))
    journal.record(_job("c"))  # flushed before it returns
    threads.run_next()
    assert one == [None] and two == [None] and not threads.queue


def _queue(
    tmp_path: Path, threads: ManualThreads, in_place_below: float = 0.0
) -> tuple[UploadQueue, Clock, list[str]]:
    clock, started = Clock(), []

    async def uploader(job: UploadJob) -> None:
        started.append(job.display)

    journal = UploadJournal(tmp_path, in_place_below=in_place_below)
    queue = UploadQueue(clock, journal, uploader, threads=threads)
    queue.startService()
    return queue, clock, started


def test_a_job_is_uploaded_only_once_its_record_is_flushed(
    tmp_path: Path, threads: ManualThreads, flushes: list[bool]
) -> None:
    """enqueue returns with the flush under way in a thread; ``durable`` fires once it has
    returned, and only then may the upload start."""
    queue, clock, started = _queue(tmp_path, threads)
    job = _job("x.txt")
    queue.enqueue(job)
    durable = _outcome(queue.durable(job.job_id))
    clock.advance(10)
    assert not durable and started == [] and flushes == []
    threads.run_all()
    assert durable == [None] and flushes == [True]
    clock.advance(0)
    assert started == ["x.txt"]
    assert queue.durable(job.job_id).called


def test_a_failed_flush_fails_durable_and_drops_the_job(
    tmp_path: Path, threads: ManualThreads, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error flushing the journal reaches whoever waits to acknowledge the file; the
    job is not uploaded and is no longer listed as pending."""
    queue, clock, started = _queue(tmp_path, threads)

    def fdatasync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    job = _job("lost.txt")
    queue.enqueue(job)
    durable = _outcome(queue.durable(job.job_id))
    grid = _outcome(queue.wait_for(job.job_id))
    threads.run_all()
    for outcome in (durable, grid):
        (failure,) = outcome
        assert isinstance(failure.value, OSError) and failure.value.errno == errno.EIO  # type: ignore[attr-defined]
    clock.advance(10)
    assert started == [] and queue.pending() == []


def test_a_waiter_that_appends_again_gets_one_flush_at_a_time(
    tmp_path: Path, threads: ManualThreads, flushes: list[bool]
) -> None:
    """A client whose next file is closed as soon as its previous CLOSE is answered (the
    waiter's callback appends and asks for a flush) still has one flush in flight at a time,
    one per record."""
    journal = UploadJournal(tmp_path)
    answered: list[str] = []

    def close(name: str, then: str | None) -> None:
        journal.record(_job(name), sync=False)
        flushed = journal.flushed(threads)
        flushed.addCallback(lambda _: answered.append(name))
        if then is not None:
            flushed.addCallback(lambda _: close(then, None))

    close("a", "b")
    while threads.queue:
        assert len(threads.queue) == 1
        threads.run_next()
    assert answered == ["a", "b"] and len(flushes) == 2


def test_an_fsync_waiting_as_soon_as_its_record_is_flushed_skips_the_settle_time(
    tmp_path: Path, threads: ManualThreads
) -> None:
    """An fsync asks for its job the moment the record is durable (from the flush's own
    callback, before the queue has even queued the job): the upload starts at once, not
    after the settle time meant for CLOSEs in a row."""
    clock = Clock()
    started: list[str] = []

    async def uploader(job: UploadJob) -> None:
        started.append(job.display)

    queue = UploadQueue(clock, UploadJournal(tmp_path), uploader, threads=threads, settle=5.0)
    queue.startService()
    job = _job("synced")
    queue.enqueue(job)
    waited = _outcome(queue.durable(job.job_id).addCallback(lambda _: queue.wait_for(job.job_id)))
    threads.run_all()
    clock.advance(0)
    assert started == ["synced"]
    assert waited == [None]


def test_a_flush_someone_waits_for_runs_in_place_while_flushes_are_fast(
    tmp_path: Path, threads: ManualThreads, flushes: list[bool]
) -> None:
    """A CLOSE's record (enqueue) is flushed in the reactor thread when no flush runs and
    recent ones were fast: ``durable`` has fired when enqueue returns, no thread was used,
    and the upload may start."""
    queue, clock, started = _queue(tmp_path, threads, in_place_below=IN_PLACE_BELOW)
    job = _job("x.txt")
    queue.enqueue(job)
    assert queue.durable(job.job_id).called and flushes == [False] and not threads.queue
    assert [j.display for j in UploadJournal(tmp_path).load()] == ["x.txt"]
    clock.advance(10)
    assert started == ["x.txt"]


def test_flushes_go_back_to_the_thread_once_they_are_slow(
    tmp_path: Path, threads: ManualThreads, flushes: list[bool]
) -> None:
    """A flush slower than the limit sends the next ones to the thread (a slow disk holds the
    reactor for one flush at most); and a flush asked for while one runs in the thread
    waits for the next one there, which covers it."""
    journal = UploadJournal(tmp_path, in_place_below=1e-9)  # any real flush is slower
    journal.record(_job("a"), sync=False)
    assert journal.flushed(threads, in_place=True).called and flushes == [False]
    journal.record(_job("b"), sync=False)
    second = _outcome(journal.flushed(threads, in_place=True))
    assert not second and len(threads.queue) == 1, "the last flush was slow: a thread"
    fast = UploadJournal(tmp_path / "fast")
    fast.record(_job("c"), sync=False)
    first = _outcome(fast.flushed(threads))  # not in place: in the thread
    fast.record(_job("d"), sync=False)
    waiting = _outcome(fast.flushed(threads, in_place=True))
    assert not first and not waiting and len(threads.queue) == 2
    threads.run_all()
    assert second == [None] and first == [None] and waiting == [None]
    assert flushes == [False, True, True, True]
    assert sorted(j.display for j in UploadJournal(tmp_path / "fast").load()) == ["c", "d"]


def test_a_failed_flush_in_place_fails_durable(
    tmp_path: Path, threads: ManualThreads, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk found flushing in place fails the job's ``durable`` at once, with the
    error, and the job is not uploaded."""
    queue, clock, started = _queue(tmp_path, threads, in_place_below=IN_PLACE_BELOW)

    def fdatasync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    job = _job("full.txt")
    queue.enqueue(job)
    (failure,) = _outcome(queue.durable(job.job_id))
    assert isinstance(failure, Failure) and failure.value.errno == errno.ENOSPC
    clock.advance(10)
    assert started == [] and not threads.queue
