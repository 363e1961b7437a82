"""Background turns on a fake clock: uploads and publishes get a quarter of the process for
their requests while clients are busy, all of it otherwise, and go at once when someone
waits for them."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from gateway.intents.pacing import ClientActivity
from gateway.intents.turns import (
    BYTE_COST,
    MAX_DEBT,
    REQUEST_COST,
    BackgroundTurns,
    run_in_background,
    turn,
)
from gateway.uploads.journal import UploadJob, UploadJournal, new_job_id
from gateway.uploads.queue import UploadQueue

MiB = 1024 * 1024


def _turns(clock: Clock, grace: float = 0.0, **kw: object) -> BackgroundTurns:
    # A quarter of the time (at once, unless told otherwise), at most 5 ms of work at once.
    return BackgroundTurns(
        clock,
        ClientActivity(clock),
        quiet=0.25,
        share=0.25,
        burst=0.005,
        grace=grace,
        **kw,  # type: ignore[arg-type]
    )


def _asked(turns: BackgroundTurns, urgent: bool = False, size: int = 0) -> Deferred[None]:
    return Deferred.fromCoroutine(turns.turn(lambda: urgent, size))


def test_no_client_busy_means_no_wait() -> None:
    """With no client request served lately, every background request goes at once."""
    clock = Clock()
    turns = _turns(clock)
    clock.advance(10)
    assert all(_asked(turns, size=MiB).called for _ in range(100))
    assert turns.held == 0


def test_busy_clients_leave_background_a_quarter_of_the_work() -> None:
    """While a client is busy, each request is charged what it costs the process (more for
    more bytes) against a budget growing by a quarter of the time: a request after a large
    one waits four times that one's cost (less what the budget held)."""
    clock = Clock()
    turns = _turns(clock)
    clock.advance(10)
    turns.activity.touch()
    assert _asked(turns).called  # a small request: the budget had 5 ms
    assert _asked(turns, size=10 * MiB).called  # overdraws it
    overdrawn = 10 * MiB * BYTE_COST + 2 * REQUEST_COST - 0.005
    late = [_asked(turns) for _ in range(3)]
    assert not any(d.called for d in late)
    assert turns.held == 3
    clock.advance(overdrawn * 4 - 0.001)
    assert not any(d.called for d in late)
    clock.advance(0.002)
    assert late[0].called  # the budget is back: one goes and overdraws it a little
    assert not late[2].called


def test_small_requests_go_in_small_bursts() -> None:
    """While a client is busy, small requests go a few at a time, never more than the
    budget allows over the time that passed."""
    clock = Clock()
    turns = _turns(clock)
    clock.advance(10)
    turns.activity.touch()
    waiting = [_asked(turns) for _ in range(200)]
    for _ in range(40):
        clock.advance(0.001)  # 40 ms, the client busy throughout
        turns.activity.touch()
    gone = sum(d.called for d in waiting)
    budget = 0.005 + 0.040 * 0.25
    assert budget / REQUEST_COST - 2 <= gone <= budget / REQUEST_COST + 2


def test_background_waits_for_the_first_seconds_clients_are_busy() -> None:
    """For ``grace`` seconds after clients became busy, background work gets nothing but
    the budget it had (a ``cp -r``, ``tar`` and ``diff`` in a row run alone); after that,
    its quarter."""
    clock = Clock()
    turns = _turns(clock, grace=10.0)
    clock.advance(10)
    waiting = []
    for _ in range(200):
        turns.activity.touch()
        waiting.append(_asked(turns))
        clock.advance(0.04)  # a client busy for 8 s
    assert sum(d.called for d in waiting) == 13  # 5 ms of budget, 0.4 ms each: no more
    for _ in range(50):
        turns.activity.touch()
        clock.advance(0.04)  # busy 2 s more: the grace is over
    for _ in range(80):
        turns.activity.touch()
        clock.advance(0.001)  # and 80 ms past it: 0.02 s of budget
    gone = sum(d.called for d in waiting) - 13
    assert 0.02 / REQUEST_COST - 5 <= gone <= 0.02 / REQUEST_COST + 5


class _Cpu:
    """A process CPU clock the test advances."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds


def test_work_beyond_the_estimates_is_charged_once_measured() -> None:
    """Background work that took more of the process than its requests' estimates (a
    publish packing a large directory) is charged the rest at its next turn: the request
    after it waits four times that (a quarter of the process); what serving clients took
    is not charged, nor is what the process did while clients were idle."""
    clock, cpu = Clock(), _Cpu()
    turns = _turns(clock, cpu=cpu)
    clock.advance(10)
    cpu.seconds += 5.0  # work while no client was busy: never charged
    turns.activity.touch()
    assert _asked(turns).called
    cpu.seconds += 0.100  # what followed that turn took 100 ms of the process...
    turns.activity.serving(0.060)  # ...60 of them serving clients
    turns.activity.touch()
    held = _asked(turns)
    assert not held.called
    owed = 0.040 - REQUEST_COST - (0.005 - REQUEST_COST)  # beyond its estimate, less the budget
    assert abs(turns.measured - (0.040 - REQUEST_COST)) < 1e-9
    clock.advance(owed / 0.25 - 0.002)
    turns.activity.touch()
    assert not held.called
    clock.advance(0.004)
    turns.activity.touch()
    assert held.called


def test_measured_work_owes_at_most_max_debt() -> None:
    """However much the process did beside clients (a read the grid answered late counts
    as background's), a request waits at most MAX_DEBT / share for it."""
    clock, cpu = Clock(), _Cpu()
    turns = _turns(clock, cpu=cpu)
    clock.advance(10)
    turns.activity.touch()
    assert _asked(turns).called
    cpu.seconds += 30.0
    held = _asked(turns)
    assert not held.called
    for _ in range(int(MAX_DEBT / 0.25 / 0.01) + 2):
        clock.advance(0.01)
        turns.activity.touch()  # the client stays busy throughout
    assert held.called


def test_without_a_cpu_clock_only_estimates_are_charged() -> None:
    """A turns object given no CPU clock charges estimates only (the tests' fake reactors)."""
    clock = Clock()
    turns = _turns(clock)
    clock.advance(10)
    turns.activity.touch()
    assert _asked(turns).called and _asked(turns).called
    assert turns.measured == 0.0


def test_waiting_requests_go_once_clients_pause() -> None:
    """A request held back goes when the client's last request is ``quiet`` seconds old,
    however overdrawn the budget."""
    clock = Clock()
    turns = BackgroundTurns(
        clock, ClientActivity(clock), quiet=0.03, share=0.1, burst=0.001, grace=5
    )
    clock.advance(1)
    turns.activity.touch()
    assert _asked(turns, size=100 * MiB).called  # overdraws it by 10 s of background work
    held = _asked(turns)
    assert not held.called
    clock.advance(0.028)
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
    assert _asked(turns, size=100 * MiB).called  # overdraws the budget
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
    assert _asked(turns, size=10 * MiB).called  # overdraws the budget: ~70 ms to wait
    seen: list[str] = []

    async def request(name: str) -> None:
        await turn()
        seen.append(name)

    async def background() -> None:
        await run_in_background(turns, lambda: False)
        await Deferred.fromCoroutine(request("child of background"))

    started = Deferred.fromCoroutine(background())
    foreground = Deferred.fromCoroutine(request("foreground"))
    assert foreground.called and seen == ["foreground"]
    assert not started.called
    clock.advance(0.1)
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
    clock.advance(0)  # starts: three small requests fit the budget
    assert requests == ["a 0", "a 1", "a 2"]
    assert _asked(turns, size=10 * MiB).called  # another background request overdraws it
    other = UploadJob(new_job_id(), "/staging/b", 10, "b", {"cap": "secret"}, 0.0)
    queue.enqueue(other)
    turns.activity.touch()
    clock.advance(0.001)  # b starts: its first request waits
    assert requests == ["a 0", "a 1", "a 2"]
    done = queue.wait_for(other.job_id)
    clock.advance(0.1)  # the waiting request goes once it wakes, the others at once
    assert requests[3:] == ["b 0", "b 1", "b 2"]
    assert done.called


def test_a_stop_while_an_upload_waits_for_its_turn_leaves_it_journaled(tmp_path: Path) -> None:
    """An upload still waiting for its first turn when the grace period of a stop runs out
    is cancelled cleanly: it never ran, nothing counts it as running, its record stays."""
    clock = Clock()
    turns = _turns(clock, grace=10.0)
    ran: list[str] = []

    async def uploader(job: UploadJob) -> None:
        ran.append(job.display)

    journal = UploadJournal(tmp_path / "journal")
    queue = UploadQueue(clock, journal, uploader, turns=turns, grace_period=1.0)
    queue.startService()
    clock.advance(10)
    turns.activity.touch()
    assert _asked(turns, size=100 * MiB).called  # the budget is spent: the grace holds
    queue.enqueue(UploadJob(new_job_id(), "/staging/a", 10, "a", {"cap": "secret"}, 0.0))
    clock.advance(0)
    assert queue.status()["pending"][0]["uploading"]
    stopped = Deferred.fromCoroutine(queue.stop())
    for _ in range(20):
        turns.activity.touch()  # the client stays busy through the grace period
        clock.advance(0.1)
    assert stopped.called and ran == []
    assert not queue.status()["pending"][0]["uploading"]
    assert [job.display for job in journal.load()] == ["a"]
