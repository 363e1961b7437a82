"""A test grid: real storage cores (``StorageServer`` over ``MemoryBackend``) behind the real
in-process adapter (``gateway.grid.local.LocalStorageClient``).

Each client wraps that adapter, provides ``IStorageClient``, and can be told to be
unreachable, to fail after some number of requests, or to take simulated time
(driven by a ``task.Clock``). Every request is recorded for assertions.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from attrs import define, evolve, field
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.grid.interfaces import IStorageClient, ServerHealth, ServerUnavailable
from gateway.grid.local import LocalStorageClient
from storage.interfaces import (
    AllocationResult,
    ReadTestWriteResult,
    ReadVector,
    TestWriteVectors,
    VersionInfo,
    WriteResult,
)
from storage.memory import MemoryBackend
from storage.server import StorageServer

T = TypeVar("T")


@implementer(IStorageClient)
@define(eq=False)
class GridClient:
    """One in-process storage server as the gateway sees it, with fault injection."""

    server: StorageServer
    server_id: bytes
    nickname: str
    clock: Clock | None = None
    latency: float = 0.0
    available: bool = True
    fail_after: int | None = None
    requests: list[tuple[Any, ...]] = field(factory=list)
    inner: LocalStorageClient = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.inner = LocalStorageClient(
            self.server, server_id=self.server_id, nickname=self.nickname
        )

    async def _request(self, *what: Any) -> None:
        self.requests.append(what)
        if self.fail_after is not None and len(self.requests) > self.fail_after:
            self.available = False
        if self.clock is not None and self.latency:
            await deferLater(self.clock, self.latency)
        if not self.available:
            raise ServerUnavailable(f"{self.nickname} is down")

    @property
    def health(self) -> ServerHealth:
        """The adapter's record; while told to be unreachable, not connected (and why)."""
        if self.available:
            return self.inner.health
        return evolve(self.inner.health, connected=False, last_error=f"{self.nickname} is down")

    async def close(self) -> None:
        await self.inner.close()

    async def get_version(self) -> VersionInfo:
        await self._request("get_version")
        return await self.inner.get_version()

    async def add_or_renew_lease(
        self, storage_index: bytes, renew_secret: bytes, cancel_secret: bytes
    ) -> None:
        await self._request("add_or_renew_lease", storage_index)
        await self.inner.add_or_renew_lease(storage_index, renew_secret, cancel_secret)

    async def allocate_buckets(
        self,
        storage_index: bytes,
        share_numbers: frozenset[int],
        allocated_size: int,
        upload_secret: bytes,
        renew_secret: bytes,
        cancel_secret: bytes,
    ) -> AllocationResult:
        await self._request("allocate_buckets", storage_index, share_numbers, allocated_size)
        return await self.inner.allocate_buckets(
            storage_index,
            share_numbers,
            allocated_size,
            upload_secret,
            renew_secret,
            cancel_secret,
        )

    async def write_immutable(
        self,
        storage_index: bytes,
        share_number: int,
        upload_secret: bytes,
        offset: int,
        data: bytes,
    ) -> WriteResult:
        await self._request("write_immutable", storage_index, share_number, offset, len(data))
        return await self.inner.write_immutable(
            storage_index, share_number, upload_secret, offset, data
        )

    async def abort_immutable(
        self, storage_index: bytes, share_number: int, upload_secret: bytes
    ) -> None:
        await self._request("abort_immutable", storage_index, share_number)
        await self.inner.abort_immutable(storage_index, share_number, upload_secret)

    async def list_immutable(self, storage_index: bytes) -> frozenset[int]:
        await self._request("list_immutable", storage_index)
        return await self.inner.list_immutable(storage_index)

    async def read_immutable(
        self, storage_index: bytes, share_number: int, offset: int, length: int
    ) -> bytes:
        await self._request("read_immutable", storage_index, share_number, offset, length)
        return await self.inner.read_immutable(storage_index, share_number, offset, length)

    async def advise_corrupt_immutable(
        self, storage_index: bytes, share_number: int, reason: str
    ) -> None:
        await self._request("advise_corrupt_immutable", storage_index, share_number, reason)
        await self.inner.advise_corrupt_immutable(storage_index, share_number, reason)

    async def read_test_write(
        self,
        storage_index: bytes,
        write_enabler: bytes,
        renew_secret: bytes,
        cancel_secret: bytes,
        test_write_vectors: dict[int, TestWriteVectors],
        read_vector: tuple[ReadVector, ...],
    ) -> ReadTestWriteResult:
        await self._request("read_test_write", storage_index)
        return await self.inner.read_test_write(
            storage_index,
            write_enabler,
            renew_secret,
            cancel_secret,
            test_write_vectors,
            read_vector,
        )

    async def list_mutable(self, storage_index: bytes) -> frozenset[int]:
        await self._request("list_mutable", storage_index)
        return await self.inner.list_mutable(storage_index)

    async def read_mutable(
        self, storage_index: bytes, share_number: int, offset: int, length: int
    ) -> bytes:
        await self._request("read_mutable", storage_index, share_number, offset, length)
        return await self.inner.read_mutable(storage_index, share_number, offset, length)

    async def advise_corrupt_mutable(
        self, storage_index: bytes, share_number: int, reason: str
    ) -> None:
        await self._request("advise_corrupt_mutable", storage_index, share_number, reason)
        await self.inner.advise_corrupt_mutable(storage_index, share_number, reason)

    # -- helpers for tests --

    @property
    def backend(self) -> MemoryBackend:
        backend = self.server.backend
        assert isinstance(backend, MemoryBackend)
        return backend

    def flip_byte(self, storage_index: bytes, share_number: int, offset: int) -> None:
        """Corrupt one byte of a stored share, as disk rot would."""
        data = self.backend.read_share(storage_index, share_number, offset, 1)
        self.backend.write_share(
            storage_index, share_number, [(offset, bytes([data[0] ^ 0x01]))], None
        )

    def count(self, name: str) -> int:
        """How many requests of one kind this client has seen."""
        return sum(1 for r in self.requests if r[0] == name)


def make_grid(
    size: int, clock: Clock | None = None, latency: float = 0.0, capacity: int | None = None
) -> list[GridClient]:
    """``size`` independent storage servers, each with its own clients."""
    clock_for_servers = clock or Clock()
    return [
        GridClient(
            StorageServer(MemoryBackend(capacity=capacity), clock_for_servers),
            server_id=b"server-%03d" % i,
            nickname=f"server {i}",
            clock=clock,
            latency=latency,
        )
        for i in range(size)
    ]


def run(coroutine: Coroutine[Any, Any, T], clock: Clock | None = None, step: float = 0.01) -> T:
    """Run a coroutine to completion (advancing ``clock`` if given) and return its result."""
    outcome: list[Any] = []
    d = Deferred.fromCoroutine(coroutine)
    d.addBoth(outcome.append)
    advances = 0
    while not outcome:
        assert clock is not None, "the coroutine is waiting but no clock drives it"
        clock.advance(step)
        advances += 1
        assert advances < 1_000_000, "the coroutine never finished"
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


@define(eq=False)
class _Intercepted:
    """Stands in for a client's inner adapter, calling a hook before each request reaches it."""

    inner: Any
    hook: Callable[[str, tuple[Any, ...]], None]

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if not callable(method):
            return method

        async def call(*args: Any) -> Any:
            self.hook(name, args)
            return await method(*args)

        return call


def intercept(client: GridClient, hook: Callable[[str, tuple[Any, ...]], None]) -> None:
    """Call ``hook(method name, arguments)`` just before each request reaches ``client``'s server.

    The hook runs after the request passed the fault injection and latency, so it
    can change the grid between a gateway's requests (e.g. publish a new version
    while a read is in flight). Calling it again replaces the hook.
    """
    inner = client.inner
    if isinstance(inner, _Intercepted):
        inner = inner.inner
    client.inner = _Intercepted(inner, hook)  # type: ignore[assignment]
