"""A Deferred several coroutines await (gateway.objects.concurrency.shared): each gets its
result, and the result stays in it for the next, fired before or after they ask."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred

from gateway.coroutines import eager
from gateway.objects.concurrency import shared


def _value(d: Deferred[object]) -> object:
    """The result of a fired Deferred; its failure raised."""
    out: list[object] = []
    d.addBoth(out.append)
    assert out, "not fired"
    result = out[0]
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


def test_waiters_before_and_after_it_fires_all_get_the_value() -> None:
    """Two waiters before it fires and one after get the same value; it keeps it."""
    ready: Deferred[str] = Deferred()
    early = [eager(shared(ready)), eager(shared(ready))]
    assert not any(d.called for d in early)
    ready.callback("opened")
    late = eager(shared(ready))
    assert [_value(d) for d in [*early, late]] == ["opened"] * 3
    assert _value(ready) == "opened"


def test_a_failure_reaches_every_waiter_and_stays() -> None:
    """A failed Deferred raises its error in each waiter, before and after it failed, and
    still holds the failure for its owner."""
    ready: Deferred[str] = Deferred()
    early = eager(shared(ready))
    ready.errback(PermissionError("denied"))
    late = eager(shared(ready))
    for d in (early, late):
        with pytest.raises(PermissionError, match="denied"):
            _value(d)
    with pytest.raises(PermissionError):
        _value(ready)


def test_a_deferred_still_running_its_callbacks_is_waited_for() -> None:
    """Fired but paused on another Deferred: the waiter gets the final value, not the
    intermediate one."""
    inner: Deferred[str] = Deferred()
    ready: Deferred[str] = Deferred()
    ready.addCallback(lambda _: inner)
    ready.callback("first")
    waiting = eager(shared(ready))
    assert not waiting.called
    inner.callback("final")
    assert _value(waiting) == "final"


def test_a_waiter_resumes_after_the_callbacks_already_in_the_chain() -> None:
    """A coroutine that starts awaiting the Deferred from inside one of its callbacks (an
    upload's next extent finding the same bytes being stored) resumes only once the
    callbacks already in the chain have run. Resuming it inside the chain, before them,
    once hung an upload of a file of one repeated block."""
    ready: Deferred[int] = Deferred()
    order: list[str] = []
    waiting: list[Deferred[None]] = []

    async def waiter() -> None:
        await shared(ready)
        order.append("waiter")

    def first(value: int) -> int:
        waiting.append(eager(waiter()))
        return value

    def second(value: int) -> int:
        order.append("second")
        return value

    ready.addCallback(first)
    ready.addCallback(second)
    ready.callback(1)
    assert order == ["second", "waiter"]
    assert _value(waiting[0]) is None
