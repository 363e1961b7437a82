"""Handing a coroutine to code that wants a Deferred, at the edges (SFTP, HTTP).

:meth:`Deferred.fromCoroutine` schedules every coroutine through Twisted's
generator driver, even one that never waits: a STAT or a READ answered from
memory paid a driver, a status object and a context copy per request (about
4 % of a STAT's CPU). :func:`eager` runs the coroutine at once and answers a
fired Deferred when it ends without waiting; one that waits goes on under
Twisted's driver, from where it stopped.
"""

from __future__ import annotations

from collections.abc import Coroutine
from contextvars import copy_context
from typing import Any, TypeVar, cast

from twisted.internet.defer import Deferred, fail, succeed

T = TypeVar("T")


def started(coroutine: Coroutine[Any, Any, T]) -> T | Deferred[T]:
    """Run a coroutine now: its value when it ends without waiting (its exception raised
    when it fails so), else a Deferred of the rest of it. No Deferred, status object or
    Failure is made for a request answered from memory: the SFTP layer replies to such a
    result at once (:mod:`gateway.sftp.answers`). The coroutine must not return a Deferred.
    Like :meth:`Deferred.fromCoroutine`, it runs in a copy of the caller's context."""
    context = copy_context()
    try:
        waiting = context.run(coroutine.send, None)
    except StopIteration as done:
        return cast(T, done.value)
    return context.run(Deferred.fromCoroutine, _resume(coroutine, waiting))


def eager(coroutine: Coroutine[Any, Any, T]) -> Deferred[T]:
    """Run a coroutine now; a Deferred of its result (already fired when it never waited)."""
    try:
        result = started(coroutine)
    except BaseException:
        return fail()
    return result if isinstance(result, Deferred) else succeed(result)


async def _resume(coroutine: Coroutine[Any, Any, T], waiting: Any) -> T:
    """Drive a coroutine that :func:`eager` started and that now waits on ``waiting`` (what
    it yielded: a Deferred), as Twisted drives any other; a cancellation or failure of what
    it waits on is thrown into it."""
    while True:
        try:
            result = await waiting
        except BaseException as error:
            try:
                waiting = coroutine.throw(error)
            except StopIteration as done:
                return cast(T, done.value)
        else:
            try:
                waiting = coroutine.send(result)
            except StopIteration as done:
                return cast(T, done.value)
