"""Running blocking calls (fsync, file creation) in the reactor's thread pool.

Code that needs a thread takes a :class:`Threads` (so tests can run the calls by
hand) and gets the reactor's pool from :func:`reactor_threads`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool

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
