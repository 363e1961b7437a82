"""Running blocking calls (fsync, file creation) in the reactor's thread pool, and
CPU-heavy encoding in a pool of its own.

Code that needs a thread takes a :class:`Threads` (so tests can run the calls by
hand) and gets the reactor's pool from :func:`reactor_threads`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class Threads(Protocol):
    """Runs a blocking call in a thread; the Deferred fires (in the reactor) with its result."""

    def __call__(self, call: Callable[[], T], /) -> Deferred[T]:
        """Start ``call`` in a thread."""


def reactor_threads(reactor: Any) -> Threads | None:
    """The reactor's thread pool as a :class:`Threads`, or None for a reactor without one
    (a test's ``Clock``)."""
    if not IReactorThreads.providedBy(reactor):
        return None

    def run(call: Callable[[], T]) -> Deferred[T]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), call)

    return run


class CpuThreads:
    """A pool of its own for CPU-heavy work (encrypting, hashing and erasure-coding what
    uploads in the background); calling it runs a call there, as a :class:`Threads` does.

    It is not the reactor's pool: that one runs the fsyncs a CLOSE or a directory change
    waits for, which must never queue behind a large upload's encoding. ``size`` defaults
    to the machine's CPUs (at most 4): libsodium, zfec and hashlib release the GIL, so
    that many segments are encoded at once while the reactor thread serves clients. The
    pool starts on first use; :meth:`stop` (or the reactor's shutdown) stops it.
    """

    def __init__(self, reactor: Any, size: int | None = None):
        self._reactor = reactor
        self._size = size or min(4, os.cpu_count() or 1)
        self._pool: ThreadPool | None = None
        self._trigger: Any = None

    @property
    def idle(self) -> bool:
        """Whether no call runs in the pool now (a hint: one may start at any moment)."""
        return pool_idle(self._pool)

    def __call__(self, call: Callable[[], T], /) -> Deferred[T]:
        """Start ``call`` in the pool."""
        if self._pool is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=self._size, name="cpu")
            self._pool.start()
            self._trigger = self._reactor.addSystemEventTrigger("during", "shutdown", self.stop)
        return deferToThreadPool(self._reactor, self._pool, call)

    def stop(self) -> None:
        """Stop the pool (after the calls it runs); a later call starts it again."""
        pool, self._pool = self._pool, None
        if pool is not None:
            if self._trigger is not None and self._reactor.running:
                self._reactor.removeSystemEventTrigger(self._trigger)
            self._trigger = None
            pool.stop()


def pool_idle(pool: ThreadPool | None) -> bool:
    """Whether no call runs in ``pool`` now (no pool yet: idle)."""
    return pool is None or not pool.working


def reactor_pool_idle(reactor: Any) -> bool:
    """Whether no call runs in the reactor's thread pool now."""
    return pool_idle(getattr(reactor, "threadpool", None))


def cpu_threads(reactor: Any, size: int | None = None) -> CpuThreads | None:
    """A :class:`CpuThreads` on ``reactor``; None for a reactor without threads (a test's
    ``Clock``)."""
    if not IReactorThreads.providedBy(reactor):
        return None
    return CpuThreads(reactor, size)
