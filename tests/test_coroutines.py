"""A coroutine handed to a frontend runs at once, and one that waits goes on as
Twisted runs any other (gateway.coroutines.eager)."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TypeVar, cast

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from gateway.coroutines import eager

T = TypeVar("T")
_mark: ContextVar[str] = ContextVar("mark", default="caller")


def _result(d: Deferred[T]) -> T:
    """The result of a fired Deferred (its failure raised)."""
    results: list[T | Failure] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    outcome = results[0]
    if isinstance(outcome, Failure):
        outcome.raiseException()
    return cast(T, outcome)


def test_a_coroutine_that_never_waits_is_answered_at_once() -> None:
    """Its result is in the Deferred when eager returns."""
    steps: list[str] = []

    async def stat() -> int:
        steps.append("ran")
        return 7

    answer = eager(stat())
    assert steps == ["ran"]
    assert _result(answer) == 7


def test_an_error_raised_before_any_wait_fails_the_deferred() -> None:
    """The exception itself reaches the caller's errback."""

    async def missing() -> None:
        raise FileNotFoundError("no such file")

    with pytest.raises(FileNotFoundError, match="no such file"):
        _result(eager(missing()))


def test_a_coroutine_that_waits_goes_on_when_what_it_waits_for_fires() -> None:
    """Each wait gets the result of what it awaited, and the Deferred the coroutine's."""
    first: Deferred[int] = Deferred()
    second: Deferred[int] = Deferred()
    seen: list[int] = []

    async def read() -> int:
        seen.append(await first)
        seen.append(await second)
        return sum(seen)

    answer = eager(read())
    assert not answer.called
    first.callback(1)
    assert seen == [1] and not answer.called
    second.callback(2)
    assert _result(answer) == 3


def test_a_failure_of_what_it_waits_for_is_raised_inside_it() -> None:
    """The coroutine may catch it and answer otherwise."""
    grid: Deferred[bytes] = Deferred()

    async def read() -> bytes:
        try:
            return await grid
        except ConnectionError:
            return b"fallback"

    answer = eager(read())
    grid.errback(ConnectionError("server gone"))
    assert _result(answer) == b"fallback"


def test_cancelling_the_answer_cancels_the_wait_inside() -> None:
    """A client that goes away cancels the request: the coroutine sees CancelledError."""
    grid: Deferred[bytes] = Deferred()
    seen: list[str] = []

    async def read() -> bytes:
        try:
            return await grid
        except CancelledError:
            seen.append("cancelled")
            raise

    answer = eager(read())
    answer.cancel()
    assert seen == ["cancelled"]
    assert grid.called
    with pytest.raises(CancelledError):
        _result(answer)


def test_context_changes_inside_stay_inside() -> None:
    """A context variable set by the coroutine, before or after a wait, is not the
    caller's (as with Deferred.fromCoroutine)."""
    later: Deferred[None] = Deferred()
    seen: list[str] = []

    async def marked() -> None:
        _mark.set("inside")
        await later
        seen.append(_mark.get())
        _mark.set("after")

    answer = eager(marked())
    assert _mark.get() == "caller"
    later.callback(None)
    _result(answer)
    assert seen == ["inside"]
    assert _mark.get() == "caller"
