"""Helpers of the filesystem tests: "threads" the test runs by hand, an in-memory store."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from gateway.objects.crypto import GatewaySecrets
from gateway.objects.immutable_format import EncodingParams
from gateway.objects.store import ObjectStore
from tests.objects.grid import make_grid

T = TypeVar("T")


class ManualThreads:
    """A thread runner the test drives: each call waits until the test runs it.

    ``running`` is true while a call runs, so a fake system call can tell it is "in a
    thread" rather than in the reactor.
    """

    def __init__(self) -> None:
        self.queue: list[tuple[Callable[[], Any], Deferred[Any]]] = []
        self.running = False

    def __call__(self, call: Callable[[], T], /) -> Deferred[T]:
        result: Deferred[T] = Deferred()
        self.queue.append((call, result))
        return result

    def run_next(self) -> None:
        """Run the oldest waiting call "in a thread" and deliver its result (or the exception
        it raised) to the reactor."""
        call, result = self.queue.pop(0)
        self.running = True
        try:
            value = call()
        except Exception:
            self.running = False
            result.errback(Failure())
            return
        self.running = False
        result.callback(value)

    def run_all(self) -> None:
        """Run calls until none waits (a result may start another call)."""
        while self.queue:
            self.run_next()


def drive(coroutine: Coroutine[Any, Any, T], threads: ManualThreads) -> T:
    """Run a coroutine, running the background calls it waits for, and return its result."""
    outcome: list[Any] = []
    Deferred.fromCoroutine(coroutine).addBoth(outcome.append)
    while not outcome:
        assert threads.queue, "the coroutine waits for something that is not a background call"
        threads.run_next()
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]  # type: ignore[no-any-return]


def memory_store(clock: Any, servers: int = 1) -> ObjectStore:
    """An object store on ``servers`` in-memory storage servers, keeping one share (1-of-1)."""
    grid = make_grid(servers)
    return ObjectStore(
        lambda: grid,
        GatewaySecrets(convergence=b"c" * 32, lease=b"l" * 32),
        EncodingParams(k=1, happy=1, n=servers),
        clock,
    )
