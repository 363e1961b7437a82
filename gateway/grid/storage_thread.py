"""The embedded storage core's own thread: its file work off the reactor thread.

The embedded grid runs the storage core (a :class:`storage.server.StorageServer`
over a :class:`storage.disk.DiskBackend`) inside the gateway process. Its work is
system calls: a directory, a metadata file and a share file created per object
stored, the redo log appended and flushed, a checkpoint's fsync of every file
changed. On the reactor thread each of them held up every client: in a SQLite
run over sshfs, about a third of the reactor thread's busy time was the core's
(``docs/performance.rst``).

:class:`StorageThread` runs every call on the core in one thread of its own, in
the order the reactor thread handed them over. The thread takes everything
queued as one *batch*: it runs each call, then ``after_batch`` (the backend's
group commit: one flush for every share the batch completed), then hands the
answers back in one wake-up of the reactor. A call may answer a Deferred (a
share's durability); it must have fired by the end of its batch, and what it
fired with is the answer.

Only that thread touches the core while it has work: from the moment a call is
handed over until its answer is back. While it has none, the reactor thread may
run a call itself: a read or a change that leaves nothing for the commit
(:meth:`StorageThread.here`), so that a client's READ of uncached data pays no
thread hand-off, and a change someone waits for (an
fsync's upload, :meth:`StorageThread.soon`), a chain of calls each waiting for
the one before, where a hand-off per call only adds latency. Such changes are
committed at the end of the reactor turn they ran in, together: an update's
patch and node complete with one flush. Behind pending calls either queues like
any other (it must see what they did). Background
work (uploads no one waits for, directory publishes) always goes to the thread,
which is where the thread pays: the reactor thread keeps serving clients.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

T = TypeVar("T")

MAX_BATCH = 64
"""Calls run before their answers go back (and before ``after_batch``)."""

_Call = tuple[Callable[[], Any], Deferred[Any]]


class StorageStopped(Exception):
    """A call handed to a storage thread that was stopped."""


class StorageThread:
    """One thread that runs the calls handed to it in order, in batches (see the module)."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        after_batch: Callable[[], None] = lambda: None,
        name: str = "storage",
    ) -> None:
        self._reactor = reactor
        self._after_batch = after_batch
        self._name = name
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._outstanding = 0
        self._stopping = False
        self._ended = False
        self._stop_waiters: list[Deferred[None]] = []
        #: Changes run in place this reactor turn, with who waits for each (see :meth:`soon`).
        self._open: list[tuple[Any, Deferred[Any]]] | None = None
        self._closing: IDelayedCall | None = None
        self.batches = 0
        """Batches run so far (a figure for tests and benchmarks)."""

    @property
    def idle(self) -> bool:
        """Whether no call is queued, running or unanswered (the core is the caller's)."""
        return self._outstanding == 0 and self._open is None

    def __call__(self, call: Callable[[], T | Deferred[T]], /) -> Deferred[T]:
        """Run ``call`` in the thread, after every call handed over before it."""
        self._close_open()  # the thread starts from a core whose changes are committed
        if self._stopping:
            return fail(StorageStopped("the embedded storage has stopped"))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        answer: Deferred[T] = Deferred()
        self._outstanding += 1
        self._queue.put((call, answer))
        return answer

    def here(self, call: Callable[[], T | Deferred[T]], /) -> Deferred[T]:
        """Run ``call`` in the caller's thread, now, and answer at once, while the thread is
        idle: no hand-off to pay. For calls that leave nothing for the commit: a read, an
        allocation (its state is in memory), a mutable write or a lease (they flush what
        they log by themselves), so an fsync's update allocates and writes its objects in
        one reactor turn and its directory's write is answered once durable. Behind
        pending calls it is handed over instead."""
        if self._outstanding or self._stopping:
            return self(call)
        answer = _settled(_answer(call))
        if isinstance(answer, Failure):
            return fail(answer)
        return succeed(answer)

    def soon(self, call: Callable[[], T | Deferred[T]], /) -> Deferred[T]:
        """Run a change someone waits for in the caller's thread, now, while the thread is
        idle; ``after_batch`` and the answer follow at the end of this reactor turn, shared
        by every change run so in the same turn: the shares an update stores side by side
        (a patch and its node) complete with one flush. Behind pending calls it is handed
        over instead."""
        if self._outstanding or self._stopping:
            return self(call)
        waiter: Deferred[T] = Deferred()
        self._opened().append((_answer(call), waiter))
        return waiter

    def made(self, call: Callable[[], T], /) -> Deferred[T]:
        """Run a change in the caller's thread, now, while the thread is idle, and answer
        once it is made (its result, or its error), not once durable: what it leaves for
        the commit is committed at the end of this reactor turn with the changes run in
        place (:meth:`soon`). For an ordered core's writes
        (:class:`gateway.grid.interfaces.IOrderedStorage`). Behind pending calls it is
        handed over instead, and answered once its batch is committed."""
        if self._outstanding or self._stopping:
            return self(call)
        self._opened()
        answer = _answer(call)
        if isinstance(answer, Failure):
            return fail(answer)
        return succeed(answer)

    def _opened(self) -> list[tuple[Any, Deferred[Any]]]:
        """The changes run in place this turn, committed at its end."""
        if self._open is None:
            self._open = []
            self._closing = self._reactor.callLater(0, self._close_open)
        return self._open

    def _close_open(self) -> None:
        """Commit the changes run in place (:meth:`soon`) and answer them."""
        batch, self._open = self._open, None
        if batch is None:
            return
        if self._closing is not None and self._closing.active():
            self._closing.cancel()
        self._closing = None
        answers = self._finish([answer for answer, _ in batch])
        for (_, waiter), answer in zip(batch, answers, strict=True):
            if isinstance(answer, Failure):
                waiter.errback(answer)
            else:
                waiter.callback(answer)

    def stop(self) -> Deferred[None]:
        """Let the calls handed over finish, then end the thread; fires once it has."""
        self._close_open()
        if not self._stopping:
            self._stopping = True
            if self._thread is None:
                self._ended = True
            else:
                self._queue.put(None)
        if self._ended:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._stop_waiters.append(waiter)
        return waiter

    # -- in the thread ---------------------------------------------------------

    def _run(self) -> None:
        running = True
        while running:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    call = self._queue.get_nowait()
                except queue.Empty:
                    break
                if call is None:
                    running = False
                    break
                batch.append(call)
            answers = self._batch([call for call, _ in batch])
            self.batches += 1
            self._reactor.callFromThread(self._deliver, batch, answers)
        self._reactor.callFromThread(self._joined)

    def _batch(self, calls: list[Callable[[], Any]]) -> list[Any]:
        """Run the calls, then ``after_batch``; each one's answer (a Failure if it raised)."""
        return self._finish([_answer(call) for call in calls])

    def _finish(self, answers: list[Any]) -> list[Any]:
        """``after_batch``, then the calls' answers, settled."""
        try:
            self._after_batch()
        except Exception:
            self.log.failure("the embedded storage's commit after a batch failed")
        return [_settled(answer) for answer in answers]

    # -- in the reactor thread -------------------------------------------------

    def _deliver(self, batch: list[_Call], answers: list[Any]) -> None:
        self._outstanding -= len(batch)
        for (_, waiter), answer in zip(batch, answers, strict=True):
            if isinstance(answer, Failure):
                waiter.errback(answer)
            else:
                waiter.callback(answer)

    def _joined(self) -> None:
        if self._thread is not None:
            self._thread.join()
        self._ended = True
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            waiter.callback(None)


def _answer(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception:
        return Failure()


def _settled(answer: Any) -> Any:
    """A Deferred answer's result (it fired during the batch), else the answer itself."""
    if not isinstance(answer, Deferred):
        return answer
    results: list[Any] = []
    answer.addBoth(results.append)
    if not results:
        return Failure(RuntimeError("a storage call was still pending at the end of its batch"))
    return results[0]
