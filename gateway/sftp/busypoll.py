"""Waiting a moment for a client's next request without letting the CPU sleep.

A client working in lock step (``ls -l``, ``stat``, a read at a time, sshfs
looking up a tree) sends its next request a fraction of a millisecond after our
reply. Between the two the reactor thread blocks in ``epoll_wait`` and its CPU
goes idle. On a virtual machine an idle CPU halts, and the request that arrives
next must wake it through the hypervisor. On this project's test machines that
round trip costs more than the gateway spends serving the request: a STAT took
0.44 ms with both processes free to move between CPUs and 0.25-0.29 ms with
both pinned to one (``docs/performance.rst``, "Waking up").

So a connection that has just sent every reply to what it read polls its socket,
without blocking, for up to :attr:`BusyPoll.limit` (``[sftp] busy_poll``) before
the reactor thread goes back to sleep, as the kernel's own ``haltpoll`` idle
driver and Go's scheduler do. The poll asks the reactor's own epoll, so anything
else the reactor has to do (another connection, a thread's answer, a timer)
ends it at once.

It costs CPU only while a client is in lock step, never when the gateway is
idle. It gives way where it would hurt:

- a connection whose client is slower than the limit (a remote client, a person)
  stops polling after :data:`MISSES` polls in a row found nothing, until a
  request again comes within the limit of a reply;
- nothing is polled while a thread of the node works (the embedded storage,
  encoding, an fsync): the reactor thread would hold the interpreter's lock
  that thread needs, between each of its polls (``quiet``);
- nothing is polled while the machine's CPUs have more to run than they can
  (the tasks ready to run, from ``/proc/loadavg``, averaged over the last
  replies, above the number of CPUs): a CPU would not go idle anyway, and a
  poll would take it from the client or from other work. On two busy CPUs a
  STAT took 0.55 ms polling against 0.24 ms without.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Sequence
from typing import Any

from attrs import define, field

MISSES = 4
"""Polls in a row that find no request before a connection stops polling."""

LOAD_WEIGHT = 1 / 8
"""The weight of each new count of tasks ready to run in their running average."""

POLL_IN = select.EPOLLIN


def never_busy() -> bool:
    """The default ``quiet`` probe: no thread of the node ever works meanwhile."""
    return True


def all_quiet(probes: Sequence[Callable[[], bool]]) -> Callable[[], bool]:
    """One probe: whether every one of ``probes`` says its thread is quiet."""
    checks = tuple(probes)

    def quiet() -> bool:
        for check in checks:
            if not check():
                return False
        return True

    return quiet


@define
class BusyPoll:
    """How long connections poll for a client's next request, and what it has cost.

    ``limit`` is in seconds (0: never poll); ``quiet`` says whether no thread of the
    node works now (see the module's docstring).
    """

    limit: float
    quiet: Callable[[], bool] = field(default=never_busy, repr=False)
    clock: Callable[[], float] = field(default=time.perf_counter, repr=False)
    #: Tasks ready to run on the machine now (this thread included); None: unknown.
    runnable: Callable[[], int] | None = field(factory=lambda: loadavg_runnable(), repr=False)
    cpus: int = field(factory=lambda: os.cpu_count() or 1)
    #: Polls started; polls that found the client's next request (ended by something
    #: else for the reactor, they count as neither); seconds spent polling.
    polls: int = 0
    caught: int = 0
    seconds: float = 0.0
    #: Polls not started because the CPUs had other work (see :meth:`crowded`).
    crowded_skips: int = 0
    #: Polls not started because a thread of the node worked (``quiet`` said no).
    working_skips: int = 0
    #: The running average of ``runnable`` over the replies.
    load: float = 1.0

    def crowded(self) -> bool:
        """Whether the CPUs have had more ready to run than they can lately (then a
        poll takes CPU from others, and no CPU would go idle anyway)."""
        if self.runnable is None:
            return False
        self.load += (self.runnable() - self.load) * LOAD_WEIGHT
        if self.load > self.cpus + 0.5:
            self.crowded_skips += 1
            return True
        return False

    def threads_quiet(self) -> bool:
        """Whether no thread of the node works now (counted when one does)."""
        if self.quiet():
            return True
        self.working_skips += 1
        return False

    def connection(self, fd: int, reactor: Any) -> ConnectionPoll | None:
        """The poller of one connection's socket ``fd``; None when polling is off."""
        if self.limit <= 0:
            return None
        return ConnectionPoll(self, fd, _ready_events(reactor, fd))

    def status(self) -> dict[str, Any]:
        """The figures for the status page."""
        return {
            "busy_poll_limit_us": round(self.limit * 1e6),
            "busy_polls": self.polls,
            "busy_polls_caught": self.caught,
            "busy_poll_seconds": round(self.seconds, 3),
            "busy_polls_skipped_crowded": self.crowded_skips,
            "busy_polls_skipped_working": self.working_skips,
        }


class ConnectionPoll:
    """One connection's polling: :meth:`wait` after its replies are sent, :meth:`arrived`
    whenever the reactor hands it bytes."""

    def __init__(self, policy: BusyPoll, fd: int, ready: Callable[[], list[tuple[int, int]]]):
        self._policy = policy
        self._fd = fd
        self._ready = ready
        self.misses = 0
        self._since: float | None = None  # when the reactor was left to wait, unpolled

    def arrived(self) -> None:
        """The reactor found bytes to read: a connection that had stopped polling polls
        again when they came within the limit of its last reply."""
        since, self._since = self._since, None
        if since is not None and self._policy.clock() - since <= self._policy.limit:
            self.misses = 0

    def wait(self) -> bool:
        """Poll until the client's next bytes are there (True: read them now), something
        else is ready for the reactor, or the limit has passed (False: back to it)."""
        policy = self._policy
        clock = policy.clock
        if policy.crowded() or self.misses >= MISSES or not policy.threads_quiet():
            self._since = clock()
            return False
        started = clock()
        deadline = started + policy.limit
        ready = self._ready
        policy.polls += 1
        try:
            while True:
                events = ready()
                if events:
                    mine = len(events) == 1 and events[0][0] == self._fd and events[0][1] & POLL_IN
                    if mine:
                        policy.caught += 1
                        self.misses = 0
                    return bool(mine)
                if clock() >= deadline:
                    self.misses += 1
                    self._since = clock()
                    return False
        finally:
            policy.seconds += clock() - started


def _ready_events(reactor: Any, fd: int) -> Callable[[], list[tuple[int, int]]]:
    """What is ready now, without blocking: from the reactor's epoll when it has one (so
    anything else for the reactor shows too), else from this socket alone."""
    poller = getattr(reactor, "_poller", None)
    if isinstance(poller, select.epoll):
        poll = poller.poll
        return lambda: poll(0, 2)
    own = select.poll()
    own.register(fd, select.POLLIN)
    mask = select.POLLIN
    poll_own = own.poll

    def ready() -> list[tuple[int, int]]:
        return [(f, POLL_IN if e & mask else e) for f, e in poll_own(0)]

    return ready


_RUNNABLE: list[Callable[[], int] | None] = []


def loadavg_runnable() -> Callable[[], int] | None:
    """Tasks ready to run now, machine-wide, from ``/proc/loadavg`` (its fourth field's
    first number; one descriptor per process, kept open: a read costs about a
    microsecond); None where there is none."""
    if not _RUNNABLE:
        _RUNNABLE.append(_open_loadavg())
    return _RUNNABLE[0]


def _open_loadavg() -> Callable[[], int] | None:
    try:
        fd = os.open("/proc/loadavg", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        int(os.pread(fd, 128, 0).split()[3].split(b"/")[0])
    except (OSError, IndexError, ValueError):
        os.close(fd)
        return None
    pread = os.pread

    def runnable() -> int:
        try:
            return int(pread(fd, 128, 0).split()[3].split(b"/")[0])
        except (OSError, IndexError, ValueError):
            return 1

    return runnable
