"""Background turns on a fake clock: uploads and publishes send their requests in short
slices while clients are busy, at full speed otherwise, and at once when someone waits."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from gateway.intents.pacing import ClientActivity
from gateway.intents.turns import BackgroundTurns, run_in_background, turn
from gateway.uploads.journal import UploadJob, UploadJournal, new_job_id
from gateway.uploads.queue import UploadQueue


def _turns(clock: Clock, **kw: object) -> BackgroundTurns:
    # A slice of 20 ms, and a rest of 60 ms after it: a quarter of the time.
    return BackgroundTurns(clock, ClientActivity(clock), quiet=0.25, share=0.25, slice=0.02, **kw)  # type: ignore[arg-type]


def _asked(turns: BackgroundTurns, urgent: bool = False) -> Deferred[None]:
    return Deferred.fromCoroutine(turns.turn(lambda: urgent))


def test_no_client_busy_means_no_wait() -> None:
    """With no client request served lately, every background request goes at once."""
    clock = Clock()
    turns = _turns(clock)
    clock.advance(10)
    assert all(_asked(turns).called for _ in range(100))
    assert turns.held == 0


def test_busy_clients_leave_background_a_quarter_of_the_time() -> None:
    """While a client is busy, requests go in a 20 ms slice, then wait out a 60 ms rest."""
    clock = Clock()
    turns = _turns(clock)
    clock.advance(10)
    turns.activity.touch()
    assert _asked(turns).called  # opens a slice
    clock.advance(0.019)
    assert _asked(turns).called  # still in it
    clock.advance(0.002)
    late = [_asked(turns) for _ in range(5)]
    assert not any(d.called for d in late)
    assert turns.held == 5
    turns.activity.touch()  # the client is still busy when the rest ends
    clock.advance(0.058)
    assert not any(d.called for d in late)
    clock.advance(0.001)
    assert all(d.called for d in late)  # a new slice: all five go


def test_waiting_requests_go_once_clients_pause() -> None:
    """A request held back goes when the client's last request is ``quiet`` seconds old,
    even in the middle of a rest."""
    clock = Clock()
    turns = BackgroundTurns(clock, ClientActivity(clock), quiet=0.03, share=0.1, slice=0.01)
    clock.advance(1)
    turns.activity.touch()
    assert _asked(turns).called
    clock.advance(0.011)  # the slice is over, the rest lasts until 1.1
    held = _asked(turns)
    assert not held.called
    clock.advance(0.018)
    assert not held.called
    clock.advance(0.002)  # 30 ms after the client's last request
    assert held.called


def test_someone_waiting_or_full_staging_skips_the_turns() -> None:
    """An fsync waiting for the upload, or staging filling up, sends requests at once."""
    clock = Clock()
    full = [False]
    turns = _turns(clock, pressure=lambda: full[0])
    clock.advance(10)
    turns.activity.touch()
    assert _asked(turns).called
    clock.advance(0.03)
    assert not _asked(turns).called
    assert _asked(turns, urgent=True).called
    full[0] = True
    assert _asked(turns).called


def test_only_tasks_marked_as_background_take_turns() -> None:
    """:func:`turn` waits in a task marked with :func:`run_in_background` and in the tasks
    it starts, never in the task that started it nor in an unmarked one."""
    clock = Clock()
    turns = _turns(clock)
    clock.advance(10)
    turns.activity.touch()
    assert _asked(turns).called
    clock.advance(0.03)  # resting
    seen: list[str] = []

    async def request(name: str) -> None:
        await turn()
        seen.append(name)

    async def background() -> None:
        run_in_background(turns, lambda: False)
        await Deferred.fromCoroutine(request("child of background"))

    started = Deferred.fromCoroutine(background())
    foreground = Deferred.fromCoroutine(request("foreground"))
    assert foreground.called and seen == ["foreground"]
    assert not started.called
    clock.advance(0.06)
    assert started.called and seen == ["foreground", "child of background"]


def test_an_upload_someone_waits_for_stops_taking_turns(tmp_path: Path) -> None:
    """The queue marks each upload as background work: its requests wait while a client
    is busy, until an fsync (``wait_for``) waits for it; then they go at once."""
    clock = Clock()
    turns = _turns(clock)
    requests: list[str] = []

    async def uploader(job: UploadJob) -> None:
        for i in range(3):
            await turn()
            requests.append(f"{job.display} {i}")

    queue = UploadQueue(clock, UploadJournal(tmp_path / "journal"), uploader, turns=turns)
    queue.startService()
    clock.advance(10)
    job = UploadJob(new_job_id(), "/staging/a", 10, "a", {"cap": "secret"}, 0.0)
    queue.enqueue(job)
    turns.activity.touch()
    clock.advance(0)  # starts, and opens a slice: every request goes in it
    assert requests == ["a 0", "a 1", "a 2"]
    other = UploadJob(new_job_id(), "/staging/b", 10, "b", {"cap": "secret"}, 0.0)
    queue.enqueue(other)
    clock.advance(0.03)
    turns.activity.touch()
    clock.advance(0.001)  # b starts in the rest: its first request waits
    assert requests == ["a 0", "a 1", "a 2"]
    done = queue.wait_for(other.job_id)
    clock.advance(0.06)  # the waiting request goes at the end of the rest, the others at once
    assert requests[3:] == ["b 0", "b 1", "b 2"]
    assert done.called
