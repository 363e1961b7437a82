"""Turns for background work: while clients are busy, uploads and directory publishes send
their requests to the grid only in short slices of time, and leave the rest to the clients.

Holding background work back until clients pause (:mod:`gateway.intents.pacing`) only moves
it: a client that never pauses for long (``cp -r``, then ``tar``, then ``diff``) would
find all of it at once once the hold ran out, and on a grid of several servers every object
costs a dozen HTTPS exchanges, each a few hundred microseconds of the one thread that also
serves the clients. So work that runs in the background asks for a turn before each request
it sends (:func:`turn`): while a client's request was served in the last ``quiet`` seconds,
turns are given in slices of ``slice`` seconds, followed by a rest that leaves the clients
the rest of the time (``share`` is background's part). Background work never stops, so
nothing starves, and it runs at full speed once clients pause, when someone waits for it
(an fsync, ``close = grid``), or when staging fills up.

Whether the calling task is background work is a context variable, set by the upload queue
and the directory write-back for the tasks they start (:func:`run_in_background`); every
task those start inherits it, and requests made for a client's own request never wait.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from gateway.intents.pacing import ClientActivity

#: Seconds since a client's last request within which clients count as busy.
QUIET = 0.25

#: Background's part of the time while clients are busy.
SHARE = 0.25

#: Seconds of a slice in which background requests may start.
SLICE = 0.02


def _never() -> bool:
    return False


@define
class BackgroundTurns:
    """Gives background work its turns (see the module docstring); one per gateway."""

    clock: IReactorTime = field(repr=False)
    activity: ClientActivity = field(repr=False)
    quiet: float = QUIET
    share: float = SHARE
    slice: float = SLICE
    #: Whether background work must run unpaced anyway (staging is filling up).
    pressure: Callable[[], bool] = field(default=_never, repr=False)
    #: Requests that waited for a turn, for the status page.
    held: int = 0
    _slice_end: float = field(default=float("-inf"), repr=False)
    _rest_end: float = field(default=float("-inf"), repr=False)

    def _wait(self, now: float) -> float:
        """Seconds the next background request must wait now (0: it may go)."""
        if now - self.activity.last >= self.quiet or now < self._slice_end:
            return 0.0
        if now >= self._rest_end:
            self._slice_end = now + self.slice
            self._rest_end = self._slice_end + self.slice * (1 - self.share) / self.share
            return 0.0
        return min(self._rest_end, self.activity.last + self.quiet) - now

    async def turn(self, urgent: Callable[[], bool] = _never) -> None:
        """Return once a background request may be sent; at once while ``urgent()``."""
        held = False
        while not (urgent() or self.pressure()):
            wait = self._wait(self.clock.seconds())
            if wait <= 0:
                return
            if not held:
                held = True
                self.held += 1
            await deferLater(self.clock, wait)


_current: ContextVar[tuple[BackgroundTurns, Callable[[], bool]] | None] = ContextVar(
    "background_turns", default=None
)


def run_in_background(turns: BackgroundTurns | None, urgent: Callable[[], bool]) -> None:
    """Mark the calling task, and every task it starts from now on, as background work that
    takes ``turns``; ``urgent()`` says when someone waits for it. None leaves it unpaced.

    Call it at the top of the task's own coroutine (one started with
    ``Deferred.fromCoroutine``, which runs in a copy of its starter's context): the mark
    stays inside that task.
    """
    if turns is not None:
        _current.set((turns, urgent))


async def turn() -> None:
    """Wait for the calling task's turn to send a request to the grid; at once for a task
    not marked as background work."""
    current = _current.get()
    if current is not None:
        turns, urgent = current
        await turns.turn(urgent)
