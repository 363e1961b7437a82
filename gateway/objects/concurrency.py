"""Running several storage requests at once from inside a coroutine.

The storage clients' coroutines await Twisted Deferreds, so concurrency uses
Twisted: each coroutine becomes a Deferred and the caller awaits them together.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar, cast

from twisted.internet.defer import Deferred, DeferredList
from twisted.python.failure import Failure

T = TypeVar("T")


async def gather(coroutines: Iterable[Coroutine[Any, Any, T]]) -> list[T | Exception]:
    """Run the coroutines concurrently; return each one's result or the exception it raised.

    Only :class:`Exception` is captured; anything else (cancellation,
    KeyboardInterrupt) propagates.
    """
    deferreds = [Deferred.fromCoroutine(c) for c in coroutines]
    if not deferreds:
        return []
    results = await DeferredList(deferreds, consumeErrors=True)
    out: list[T | Exception] = []
    for ok, value in results:
        if ok:
            out.append(value)
        else:
            failure = cast(Failure, value)
            error = failure.value
            if not isinstance(error, Exception):
                failure.raiseException()
            out.append(error)
    return out


def start(coroutine: Coroutine[Any, Any, T]) -> Deferred[T]:
    """Start a coroutine now; await the returned Deferred later (for pipelining)."""
    return Deferred.fromCoroutine(coroutine)


async def shared(result: Deferred[T]) -> T:
    """Await a Deferred that others may await too: its result stays in it for them."""
    waiter: Deferred[T] = Deferred()

    def deliver(value: object) -> object:
        if isinstance(value, Failure):
            waiter.errback(value)
        else:
            waiter.callback(value)  # type: ignore[arg-type]
        return value

    result.addBoth(deliver)
    return await waiter


async def owned(result: Deferred[T]) -> T:
    """Await, as its owner, a Deferred that others may await through :func:`shared`.

    A failure is raised here and then consumed, after the waiters attached by then have
    had it (an errback added while the Deferred runs its callbacks runs after them; one
    that has already fired gave them the failure when they attached). The owner forgets
    the Deferred as it fires, so no waiter comes later, and dropping it logs nothing: a
    failure it still held was reported as "Unhandled error in Deferred", with a
    traceback, when it was garbage collected.
    """
    try:
        return await shared(result)
    except BaseException:
        result.addErrback(lambda _: None)
        raise
