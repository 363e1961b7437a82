"""The staging area's calls in threads (flush-behind, fsync, spare files), counted.

A staged file's blocking calls (:mod:`gateway.fs.staging`) run in threads, at most
:data:`FLUSH_THREADS` at once; the area counts them, so a node that stops (and a test)
can wait until none is queued or running (:meth:`BackgroundCalls.idle`).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, DeferredSemaphore, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.threads import Threads

#: Flush-behind and sync calls of the whole staging area that may run in threads at once.
FLUSH_THREADS = 2

log = Logger()


class BackgroundCalls:
    """The calls a staging area runs in threads: a few at a time, counted."""

    def __init__(self) -> None:
        self._slots = DeferredSemaphore(FLUSH_THREADS)
        self._background = 0
        self._idle_waiters: list[Deferred[None]] = []

    def background(
        self,
        threads: Threads,
        call: Callable[[], OSError | None],
        done: Callable[[OSError | Failure | None], None],
    ) -> None:
        """Run a staged file's blocking call in a thread, a few at a time; then ``done``."""
        self._background += 1
        result = self._slots.run(threads, call)
        result.addBoth(done)
        result.addBoth(self._ended)

    def _started(self) -> None:
        self._background += 1

    def _ended(self, result: object) -> None:
        if isinstance(result, Failure):
            log.failure("a staged file's background call failed", result)
        self._background -= 1
        if not self._background:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    @property
    def background_calls(self) -> int:
        """Flush-behind and sync calls queued or running in threads."""
        return self._background

    def idle(self) -> Deferred[None]:
        """Fires once no background call is queued or running (at once if none is).

        A node that stops may await it; so do tests. Every descriptor a discarded
        file's call was using is closed by then.
        """
        if not self._background:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle_waiters.append(waiter)
        return waiter
