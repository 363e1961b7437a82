"""Turns for background work: while clients are busy, uploads, directory publishes and
lease renewal wait, then get a quarter of the process, and leave the rest to the clients.

Holding the *start* of background work until clients pause (the upload queue's settle,
:mod:`gateway.intents.pacing`) is not enough: once started, an upload ran flat out, and on a
grid of several servers every object costs a dozen HTTPS exchanges, each a few hundred
microseconds of the one thread that also serves the clients, plus the time to encrypt and
send its bytes; the servers' own work and fsyncs compete for the same disks and CPUs. On a
3/5/5 grid of five local servers, an sshfs ``cp -r``, ``tar`` and ``diff`` right after
other work took 8 to 15 times OpenSSH's time, for the uploads of what came before.

So work that runs in the background asks for a turn before each request it sends
(:func:`turn`), telling how many bytes it carries:

* While no client request was served in the last ``quiet`` seconds, it goes at once: idle
  time is background's.
* For the first ``grace`` seconds clients are busy, background requests wait (but for the
  few a budget of ``burst`` seconds of work holds when clients become busy). A client's
  burst of work (``cp -r``, then ``tar``, then ``diff``) runs alone.
* Clients busy longer: each request is charged what it costs the process
  (:data:`REQUEST_COST` plus :data:`BYTE_COST` per byte) against a budget that grows by
  ``share`` seconds per second, up to ``burst``; a request waits while the budget is spent.
  Charging by cost, not by the number of requests, matters: a 2 MiB share write costs
  several times what a small one does. So background work never stops for long, and
  nothing starves.
* The charges are estimates, made before a request goes; what background work takes
  besides its requests (a finished upload's journal records, the directory entries it
  changes, the packing of a large directory for its publish, the encoding threads) is
  charged too, once measured (with ``cpu``, the process's CPU clock): at each turn, the
  process's CPU since the last one, less what the SFTP connections' reads took
  (:attr:`~gateway.intents.pacing.ClientActivity.served`), less the estimates charged
  meanwhile. Estimates alone let 1,300 queued uploads take three quarters of the process
  beside an sshfs ``tar`` (docs/performance.rst). The debt is bounded (:data:`MAX_DEBT`):
  work a client's request started but finished later (a read that waited for the grid)
  counts as background's, and must not hold background back for long.
* Someone waits for it (an fsync, ``close = grid``), or staging is more than half full:
  it goes at once.

Requests that must wait queue in order, and only the first waits on a timer.

Whether the calling task is background work is a context variable, set by the upload queue,
the directory write-back and lease renewal for the tasks they start
(:func:`run_in_background`); every task those start inherits it, and requests made for a
client's own request never wait. Data waiting is safe meanwhile: an acknowledged file is
durable locally (staged and journaled) before its upload starts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from contextvars import ContextVar

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from gateway.intents.pacing import ClientActivity

#: Seconds since a client's last request within which clients count as busy.
QUIET = 0.25

#: Seconds clients may stay busy before background work gets any part of the process (but
#: a few milliseconds' worth, its budget when they became busy)...
GRACE = 10.0

#: ...and its part once they have been busy longer.
SHARE = 0.25

#: Seconds of work background may do at once after waiting (its budget's cap).
BURST = 0.005

#: What a request costs the process (seconds), besides its bytes: an HTTPS exchange on the
#: reactor thread (~370 µs measured, ``HttpStorageClient`` against one storage node).
REQUEST_COST = 0.0004

#: ...and per byte it carries (encrypting and sending it, ~1.7 ms per MiB measured the same
#: way, and the servers' work writing it).
BYTE_COST = 2e-9

#: Seconds of measured work background may owe at most (it then waits MAX_DEBT / share).
MAX_DEBT = 0.25


def _never() -> bool:
    return False


@define
class BackgroundTurns:
    """Gives background work its turns (see the module docstring); one per gateway."""

    clock: IReactorTime = field(repr=False)
    activity: ClientActivity = field(repr=False)
    quiet: float = QUIET
    share: float = SHARE
    burst: float = BURST
    grace: float = GRACE
    #: Whether background work must run unpaced anyway (staging is filling up).
    pressure: Callable[[], bool] = field(default=_never, repr=False)
    #: The process's CPU seconds (every thread's), to charge what background work took
    #: beyond the estimates; None: the estimates alone.
    cpu: Callable[[], float] | None = field(default=None, repr=False)
    #: Requests that waited for a turn, for the status page.
    held: int = 0
    #: Seconds of measured work charged beyond the estimates, for the status page.
    measured: float = 0.0
    _budget: float = field(default=BURST, repr=False)
    _charged: float = field(default=0.0, repr=False)
    _cpu_at: float | None = field(default=None, repr=False)
    _served_at: float = field(default=0.0, repr=False)
    _at: float = field(default=float("-inf"), repr=False)
    _busy_since: float | None = field(default=None, repr=False)
    _waiting: deque[_Waiting] = field(factory=deque, repr=False)
    _timer: IDelayedCall | None = field(default=None, repr=False)

    def _wait(self, now: float, cost: float) -> float:
        """Seconds a request costing ``cost`` must wait now; 0: it may go (and is charged)."""
        if now - self.activity.last >= self.quiet:
            self._budget, self._at, self._busy_since = self.burst, now, None
            self._cpu_at = None  # what idle time's work took is not charged
            return 0.0
        if self._busy_since is None:
            self._busy_since = now
        grace_end = self._busy_since + self.grace
        if now > grace_end:
            self._budget += (now - max(self._at, grace_end)) * self.share
            self._budget = min(self.burst, self._budget)
        self._at = now
        self._charge_measured()
        if self._budget > -1e-9:  # it goes, even if that overdraws the budget
            self._budget -= cost
            self._charged += cost
            return 0.0
        wait = max(0.0, grace_end - now) - self._budget / self.share
        return min(wait, self.activity.last + self.quiet - now)

    def _charge_measured(self) -> None:
        """Charge what background work took since the last look beyond the estimates
        charged for it: the process's CPU, less what serving clients took."""
        if self.cpu is None:
            return
        cpu, served = self.cpu(), self.activity.served
        if self._cpu_at is not None:
            beyond = (cpu - self._cpu_at) - (served - self._served_at) - self._charged
            if beyond > 0:
                self.measured += beyond
                self._budget = max(self._budget - beyond, -MAX_DEBT)
        self._cpu_at, self._served_at, self._charged = cpu, served, 0.0

    async def turn(self, urgent: Callable[[], bool] = _never, size: int = 0) -> None:
        """Return once a background request carrying ``size`` bytes may be sent; at once
        while ``urgent()``."""
        cost = REQUEST_COST + size * BYTE_COST
        if urgent() or self.pressure():
            return
        if not self._waiting and self._wait(self.clock.seconds(), cost) <= 0:
            return
        self.held += 1
        waiter: Deferred[None] = Deferred()
        self._waiting.append(_Waiting(waiter, cost, urgent))
        if self._timer is None or not self._timer.active():
            self._release()
        await waiter

    def _release(self) -> None:
        """Let waiting requests go while the budget allows (and every urgent one); wait for
        the first of the others."""
        self._timer = None
        if self.pressure():
            go, self._waiting = list(self._waiting), deque()
        else:
            go = [w for w in self._waiting if w.urgent()]
            for w in go:
                self._waiting.remove(w)
            while self._waiting:
                wait = self._wait(self.clock.seconds(), self._waiting[0].cost)
                if wait > 0:
                    self._timer = self.clock.callLater(wait, self._release)
                    break
                go.append(self._waiting.popleft())
        for w in go:
            if not w.deferred.called:  # (cancelled meanwhile)
                w.deferred.callback(None)


@frozen
class _Waiting:
    deferred: Deferred[None]
    cost: float
    urgent: Callable[[], bool]


_current: ContextVar[tuple[BackgroundTurns, Callable[[], bool]] | None] = ContextVar(
    "background_turns", default=None
)


async def run_in_background(turns: BackgroundTurns | None, urgent: Callable[[], bool]) -> None:
    """Mark the calling task, and every task it starts from now on, as background work that
    takes ``turns``; ``urgent()`` says when someone waits for it. Then wait for a first
    turn: the work's own start (encoding a file, a directory's records) costs the process
    too. None leaves the task unpaced.

    Call it at the top of the task's own coroutine (one started with
    ``Deferred.fromCoroutine``, which runs in a copy of its starter's context): the mark
    stays inside that task.
    """
    if turns is not None:
        _current.set((turns, urgent))
        await turns.turn(urgent)


def in_background() -> bool:
    """Whether the calling task is background work that nobody waits for now."""
    current = _current.get()
    return current is not None and not current[1]()


async def turn(size: int = 0) -> None:
    """Wait for the calling task's turn to send a request carrying ``size`` bytes to the
    grid; at once for a task not marked as background work."""
    current = _current.get()
    if current is not None:
        turns, urgent = current
        await turns.turn(urgent, size)
