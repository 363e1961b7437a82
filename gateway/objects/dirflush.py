"""When the directory journal is flushed, and what a flush that fails means.

A change's record is written before the client is answered
(:class:`~gateway.objects.writeback.DirectoryWriteBack`); its ``fdatasync`` starts
``JOURNAL_DELAY`` later, in a thread, shared with the changes made meanwhile: a
client's mkdir, rename and rmdir come one after the other, and a flush each cost
every one of them a hand-off to a thread and back (the GIL passing between the
threads, the waker, the callbacks: about a sixth of a mkdir's time). Whatever
must not outlive a change (a CLOSE, an upload's end, an fsync) waits with
:meth:`JournalFlushes.durable`, which flushes at once. A flush that fails is
logged once, and :attr:`JournalFlushes.error` refuses the changes after it until
the journal flushes again.

A journal entry may name objects that an ordered grid holds as written but not yet
durable (an fsync's, until the publish that follows flushes them): ``barrier`` is
awaited before every flush, so that the journal never outlives them.
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.intents.log import IntentLog
from gateway.objects.dirjournal import reason
from gateway.threads import Threads

#: Seconds after a change is journaled before the journal's flush starts. A power loss
#: can take an answered change at most this much older than with a flush per change
#: (ext4 commits every 5 s).
JOURNAL_DELAY = 0.002


class JournalFlushes:
    """The flushes of one directory journal (see the module docstring)."""

    log = Logger()

    def __init__(
        self,
        intents: IntentLog,
        clock: IReactorTime,
        threads: Threads | None,
        delay: float = JOURNAL_DELAY,
        barrier: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._intents = intents
        self._barrier = barrier
        self._clock = clock
        self._threads = threads
        self._delay = delay
        self._timer: IDelayedCall | None = None
        #: The error of the last flush, when it failed (changes are refused meanwhile).
        self.error: OSError | None = None

    def soon(self) -> None:
        """A change was journaled: flush it ``delay`` seconds from now, unless one is due
        (at once without threads or delay)."""
        if self._threads is None or self._delay <= 0:
            self.now()
        elif self._timer is None:
            self._timer = self._clock.callLater(self._delay, self.now)

    def now(self) -> None:
        """Start flushing what the journal holds (a failure is noted, not raised)."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        Deferred.fromCoroutine(self._flush_behind_barrier())

    async def _flush_behind_barrier(self) -> None:
        try:
            await self._flushed_after_barrier()
        except OSError as e:
            self._not_flushed(Failure(e))
        else:
            self._flushed(None)

    async def _flushed_after_barrier(self) -> None:
        """The barrier, then the journal's flush (an error of the barrier's that is not an
        OSError, such as a storage stopped, is raised as one: the journal is not flushed)."""
        if self._barrier is not None:
            try:
                await self._barrier()
            except OSError:
                raise
            except Exception as e:
                raise OSError(errno.EIO, f"the objects it names are not durable: {e}") from e
        await self._intents.flushed(self._threads)

    async def durable(self) -> None:
        """Wait until every change journaled so far is on disk (raises the flush's OSError)."""
        if self._timer is not None:
            self.now()  # now, not after the delay
        try:
            await self._flushed_after_barrier()
        except OSError as e:
            self._not_flushed(Failure(e))
            raise
        self._flushed(None)

    def close(self) -> None:
        """At stop: flush here whatever the last flushes did not cover, and close."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        try:
            self._intents.sync()
        except OSError as e:
            self._not_flushed(Failure(e))
        self._intents.close()

    def _flushed(self, _: object) -> None:
        if self.error is not None:
            self.log.info("the directory journal is flushed again; changes are accepted")
        self.error = None

    def _not_flushed(self, failure: Failure) -> Failure | None:
        error = failure.value
        if not isinstance(error, OSError):
            return failure  # a bug, not the disk: logged as unhandled
        if self.error is None:
            self.log.error(
                "the directory journal cannot be flushed ({why}): the changes answered are "
                "published from memory; new changes are refused until it can",
                why=reason(error),
            )
        self.error = error
        return None
