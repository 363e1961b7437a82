"""The upload queue on a fake clock: journaling, retries with backoff, resume, graceful stop."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from gateway.uploads.journal import UploadJob, UploadJournal, new_job_id
from gateway.uploads.queue import QueueStopped, UploadQueue


class RecordingUploader:
    """An uploader whose every attempt is a Deferred the test fires or fails."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, Deferred[None]]] = []

    async def __call__(self, job: UploadJob) -> None:
        d: Deferred[None] = Deferred()
        self.attempts.append((job.display, d))
        await d

    def succeed(self, index: int = -1) -> None:
        self.attempts[index][1].callback(None)

    def fail(self, message: str, index: int = -1) -> None:
        self.attempts[index][1].errback(ConnectionError(message))


def _job(name: str, created: float = 0.0) -> UploadJob:
    return UploadJob(new_job_id(), f"/staging/{name}", 10, name, {"cap": "secret"}, created)


def _started(tmp_path: Path, uploader: RecordingUploader, clock: Clock, **kw: float) -> UploadQueue:
    queue = UploadQueue(clock, UploadJournal(tmp_path / "journal"), uploader, **kw)  # type: ignore[arg-type]
    queue.startService()
    assert queue.when_ready().called
    return queue


def _records(tmp_path: Path) -> list[UploadJob]:
    return list(UploadJournal(tmp_path / "journal").load())


def test_a_job_is_journaled_until_uploaded(tmp_path: Path) -> None:
    """The record exists from enqueue until the upload succeeds; waiters fire then."""
    uploader, clock = RecordingUploader(), Clock()
    queue = _started(tmp_path, uploader, clock)
    job = _job("a.txt")
    queue.enqueue(job)
    clock.advance(0)  # jobs start on the next reactor turn
    assert [r.job_id for r in _records(tmp_path)] == [job.job_id]
    done = queue.wait_for(job.job_id)
    assert not done.called
    uploader.succeed()
    assert done.called
    assert _records(tmp_path) == []
    assert queue.pending() == []
    assert [f.display for f in queue.finished] == ["a.txt"]


def test_failures_are_recorded_and_retried_with_backoff(tmp_path: Path) -> None:
    """Each failure is journaled with its message; retries come after 1, 2, 4 s."""
    uploader, clock = RecordingUploader(), Clock()
    queue = _started(tmp_path, uploader, clock)
    job = _job("b.bin")
    queue.enqueue(job)
    clock.advance(0)  # jobs start on the next reactor turn
    for attempt, delay in enumerate([1.0, 2.0, 4.0], start=1):
        uploader.fail("grid unreachable")
        (record,) = _records(tmp_path)
        assert record.attempts == attempt and record.last_error == "grid unreachable"
        assert queue.status()["pending"][0]["next_retry"] == clock.seconds() + delay
        clock.advance(delay - 0.01)
        assert len(uploader.attempts) == attempt
        clock.advance(0.01)
        assert len(uploader.attempts) == attempt + 1
    uploader.succeed()
    assert _records(tmp_path) == []
    assert queue.finished[-1].attempts == 4


def test_journaled_jobs_resume_in_order_after_restart(tmp_path: Path) -> None:
    """Jobs journaled by a previous run are uploaded on start, oldest first."""
    journal = UploadJournal(tmp_path / "journal")
    for name, created in [("late", 20.0), ("early", 10.0)]:
        journal.record(_job(name, created))
    uploader = RecordingUploader()
    queue = _started(tmp_path, uploader, Clock(), concurrency=1)
    assert [name for name, _ in uploader.attempts] == ["early"]
    uploader.succeed()
    assert [name for name, _ in uploader.attempts] == ["early", "late"]
    uploader.succeed()
    assert queue.pending() == [] and _records(tmp_path) == []


def test_concurrency_is_bounded(tmp_path: Path) -> None:
    """No more than `concurrency` uploads run at once."""
    uploader, clock = RecordingUploader(), Clock()
    queue = _started(tmp_path, uploader, clock, concurrency=2)
    for name in "xyz":
        queue.enqueue(_job(name))
        clock.advance(0)  # jobs start on the next reactor turn
    assert [n for n, _ in uploader.attempts] == ["x", "y"]
    uploader.succeed(0)
    assert [n for n, _ in uploader.attempts] == ["x", "y", "z"]


def test_stop_waits_for_the_grace_period_then_leaves_jobs_journaled(tmp_path: Path) -> None:
    """A stuck upload holds stop only for the grace period; its record survives; waiters learn."""
    uploader, clock = RecordingUploader(), Clock()
    queue = _started(tmp_path, uploader, clock, grace_period=5.0)
    job = _job("stuck")
    queue.enqueue(job)
    clock.advance(0)  # jobs start on the next reactor turn
    waiter = queue.wait_for(job.job_id)
    failures: list[BaseException] = []
    waiter.addErrback(lambda f: failures.append(f.value))
    stopped = queue.stopService()
    assert not stopped.called
    clock.advance(5.0)
    assert stopped.called
    assert [r.job_id for r in _records(tmp_path)] == [job.job_id]
    assert len(failures) == 1 and isinstance(failures[0], QueueStopped)
    with pytest.raises(QueueStopped):
        queue.enqueue(_job("after"))


def test_stop_lets_a_running_upload_finish(tmp_path: Path) -> None:
    """An upload that completes within the grace period is published and forgotten."""
    uploader, clock = RecordingUploader(), Clock()
    queue = _started(tmp_path, uploader, clock, grace_period=5.0)
    queue.enqueue(_job("quick"))
    clock.advance(0)  # jobs start on the next reactor turn
    stopped = queue.stopService()
    uploader.succeed()
    assert stopped.called
    assert _records(tmp_path) == []


def test_damaged_records_are_set_aside(tmp_path: Path) -> None:
    """A record that does not decode is renamed aside and the rest still resume."""
    journal = UploadJournal(tmp_path / "journal")
    journal.record(_job("good"))
    (tmp_path / "journal" / "bad.upload").write_bytes(b"\xff\x00garbage")
    uploader = RecordingUploader()
    _started(tmp_path, uploader, Clock())
    assert [n for n, _ in uploader.attempts] == ["good"]
    assert (tmp_path / "journal" / "bad.damaged").exists()


def test_status_never_shows_the_target(tmp_path: Path) -> None:
    """The status summary names files, never the target capability."""
    uploader, clock = RecordingUploader(), Clock()
    queue = _started(tmp_path, uploader, clock)
    queue.enqueue(_job("visible.txt"))
    clock.advance(0)  # jobs start on the next reactor turn
    status = queue.status()
    assert status["pending"][0]["file"] == "visible.txt"
    assert "secret" not in repr(status)
    assert "secret" not in repr(queue.pending())


def test_enqueue_returns_before_the_upload_starts(tmp_path: Path) -> None:
    """A CLOSE that enqueues never runs the upload itself; it starts on the next turn."""
    uploader, clock = RecordingUploader(), Clock()
    queue = _started(tmp_path, uploader, clock)
    queue.enqueue(_job("later"))
    assert uploader.attempts == []
    clock.advance(0)
    assert [n for n, _ in uploader.attempts] == ["later"]


def _instant_queue(tmp_path: Path) -> tuple[UploadQueue, list[str], Clock]:
    """A started queue (2 at a time) whose uploads complete without waiting, recording the
    names uploaded."""
    done: list[str] = []

    async def instant(job: UploadJob) -> None:
        done.append(job.display)

    clock = Clock()
    queue = UploadQueue(clock, UploadJournal(tmp_path / "journal"), instant, concurrency=2)
    queue.startService()
    return queue, done, clock


def test_uploads_that_finish_at_once_free_their_slot(tmp_path: Path) -> None:
    """Jobs whose upload completes without waiting never hold a slot (the queue keeps going)."""
    queue, done, clock = _instant_queue(tmp_path)
    for name in "abcde":
        queue.enqueue(_job(name))
    clock.advance(0)
    assert done == list("abcde")
    assert queue.pending() == [] and _records(tmp_path) == []


def test_uploads_wait_for_closes_to_settle_within_a_limit(tmp_path: Path) -> None:
    """With a settle time, jobs start once no new job came for that long, or at the limit."""
    uploader, clock = RecordingUploader(), Clock()
    queue = _started(tmp_path, uploader, clock, settle=0.25, settle_limit=1.0)
    queue.enqueue(_job("a"))
    clock.advance(0.2)
    queue.enqueue(_job("b"))
    clock.advance(0.2)
    assert uploader.attempts == [], "files still arriving: nothing starts"
    for name in "cdef":
        queue.enqueue(_job(name))
        clock.advance(0.2)
    assert [n for n, _ in uploader.attempts] == ["a", "b"], "the limit starts them anyway"
    queue.enqueue(_job("g"))
    clock.advance(0.25)
    assert len(uploader.attempts) == 2  # concurrency 2: the rest queue behind


def test_waiting_for_a_job_or_stopping_skips_the_settle_time(tmp_path: Path) -> None:
    """A CLOSE that waits for the grid, or a stop (its grace period), starts jobs at once."""
    uploader, clock = RecordingUploader(), Clock()
    queue = _started(tmp_path, uploader, clock, settle=5.0)
    job = _job("waited")
    queue.enqueue(job)
    queue.wait_for(job.job_id)
    clock.advance(0)
    assert [n for n, _ in uploader.attempts] == ["waited"]
    uploader.succeed()
    queue.enqueue(_job("at stop"))
    stopping = Deferred.fromCoroutine(queue.stop())
    assert [n for n, _ in uploader.attempts] == ["waited", "at stop"]
    uploader.succeed()
    assert stopping.called


def test_uploads_hold_while_a_client_is_active_up_to_the_limit(tmp_path: Path) -> None:
    """Requests served after a CLOSE hold waiting uploads back as CLOSEs do: they start once
    requests stop for ``settle`` seconds, and never later than ``settle_limit``."""
    uploader, clock = RecordingUploader(), Clock()
    queue = _started(tmp_path, uploader, clock, settle=0.25, settle_limit=2.0)
    queue.enqueue(_job("quiet"))
    clock.advance(0.2)
    queue.client_active()  # the client reads back what it wrote
    clock.advance(0.2)
    assert uploader.attempts == []
    clock.advance(0.05)
    assert [name for name, _ in uploader.attempts] == ["quiet"]
    uploader.succeed()
    queue.enqueue(_job("busy"))
    enqueued, started = clock.seconds(), None
    for _ in range(30):  # a client that never pauses
        clock.advance(0.1)
        queue.client_active()
        if started is None and len(uploader.attempts) == 2:
            started = clock.seconds()
    assert uploader.attempts[-1][0] == "busy"
    assert started == pytest.approx(enqueued + 2.0)


def test_someone_waiting_for_the_grid_is_not_held_by_active_clients(tmp_path: Path) -> None:
    """An fsync (or ``close = grid``) waiting for a job starts it at once, however busy the
    clients are."""
    uploader, clock = RecordingUploader(), Clock()
    queue = _started(tmp_path, uploader, clock, settle=0.25, settle_limit=2.0)
    job = _job("synced")
    queue.enqueue(job)
    queue.client_active()
    queue.wait_for(job.job_id)
    clock.advance(0)
    assert [name for name, _ in uploader.attempts] == ["synced"]


def test_idle_callbacks_run_when_the_last_job_finishes(tmp_path: Path) -> None:
    """A callback registered (twice) with when_idle runs once each time no job is left."""
    uploader, clock = RecordingUploader(), Clock()
    queue = _started(tmp_path, uploader, clock)
    calls: list[bool] = []

    def idle() -> None:
        calls.append(queue.idle)

    queue.when_idle(idle)
    queue.when_idle(idle)
    queue.enqueue(_job("one"))
    queue.enqueue(_job("two"))
    clock.advance(0)
    uploader.succeed(0)
    assert calls == [] and not queue.idle
    uploader.succeed(1)
    assert calls == [True]


def test_thousands_of_uploads_that_finish_at_once_all_finish(tmp_path: Path) -> None:
    """A long run of uploads that complete without waiting (small files on the embedded grid)
    all finish and leave the journal empty: starting the next one does not nest a call per
    upload (3000 nested calls used to exceed Python's recursion limit and strand jobs)."""
    queue, done, clock = _instant_queue(tmp_path)
    names = [f"f{i}" for i in range(3000)]
    for name in names:
        queue.enqueue(_job(name))
    clock.advance(0)
    assert done == names
    assert queue.pending() == [] and _records(tmp_path) == []
    assert not clock.getDelayedCalls()  # no retry was needed


def test_a_job_someone_waits_for_starts_ahead_of_the_others(tmp_path: Path) -> None:
    """An fsync's upload does not queue behind uploads no one waits for: it starts at once,
    even with every slot taken, and jobs queued before it wait."""
    uploader, clock = RecordingUploader(), Clock()
    queue = _started(tmp_path, uploader, clock, concurrency=1)
    jobs = [_job(f"{name}.txt") for name in ("a", "b", "c")]
    for job in jobs:
        queue.enqueue(job)
    clock.advance(0)
    assert [name for name, _ in uploader.attempts] == ["a.txt"]
    done = queue.wait_for(jobs[2].job_id)
    clock.advance(0)
    assert [name for name, _ in uploader.attempts] == ["a.txt", "c.txt"]
    uploader.succeed()
    assert done.called
    uploader.succeed(0)
    assert [name for name, _ in uploader.attempts] == ["a.txt", "c.txt", "b.txt"]
