"""An in-process :class:`IStorageClient` over an :class:`IStorageServer`: the embedded grid.

The single-machine default runs the storage core inside the gateway process;
this adapter gives the object layer the same interface it uses for remote
servers, with the core's errors passing through unchanged. Given a
:class:`~gateway.grid.storage_thread.StorageThread` (as the gateway runs it), every
call runs in that thread, reads in the caller's while the thread is idle; without
one (tests, benchmarks of the object layer), in the caller's thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar, cast

from attrs import evolve
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from gateway.grid.interfaces import IOrderedStorage, IStorageClient, IWholeShares, ServerHealth
from gateway.grid.storage_thread import StorageThread
from gateway.intents.turns import in_background, turn
from storage.errors import StorageError
from storage.interfaces import (
    AllocationResult,
    IStorageServer,
    ReadTestWriteResult,
    ReadVector,
    TestWriteVectors,
    VersionInfo,
    WriteResult,
)

T = TypeVar("T")


@implementer(IStorageClient, IOrderedStorage, IWholeShares)
class LocalStorageClient:
    """The embedded storage core, seen as one more storage server (an ordered one: its
    disk backend is batched, or completes each share before answering)."""

    def __init__(
        self,
        server: IStorageServer,
        *,
        server_id: bytes = b"local",
        nickname: str = "local",
        clock: IReactorTime | None = None,
        thread: StorageThread | None = None,
    ) -> None:
        self._server = server
        self._clock = clock
        self._thread = thread
        self.server_id = server_id
        self.nickname = nickname
        self._health = ServerHealth(connected=True, last_latency=0.0)

    def __repr__(self) -> str:
        return f"<LocalStorageClient {self.nickname}>"

    @property
    def health(self) -> ServerHealth:
        """Always connected; available space as of the last version query (see the interface)."""
        return self._health

    def _run(self, call: Callable[[], T | Deferred[T]], *, commit: bool = True) -> Deferred[T]:
        """A call that changes the core: in its thread when it has one, unless someone waits
        for it and the thread is idle. Then it runs in place and is answered at the end of
        the reactor turn, after the group commit (:meth:`StorageThread.soon`), or at once
        with ``commit=False``: a change that leaves nothing for the commit (an allocation,
        a slot's test-and-write, a lease, which flush what they log by themselves;
        :meth:`StorageThread.here`)."""
        if self._thread is None:
            return cast("Deferred[T]", maybeDeferred(call))
        if in_background():
            return self._thread(call)
        if commit:
            return self._thread.soon(call)
        return self._thread.here(call)

    def _read(self, call: Callable[[], T]) -> Deferred[T]:
        """A call that only reads the core: in place while its thread is idle, whoever
        asks (see :meth:`StorageThread.here`)."""
        if self._thread is None:
            return maybeDeferred(call)
        return self._thread.here(call)

    async def close(self) -> None:
        """Nothing to close: there is no connection (the interface's promise holds trivially)."""

    async def get_version(self) -> VersionInfo:
        """Ask the core for its limits and available space."""
        info = await self._read(self._server.get_version)
        now = self._clock.seconds() if self._clock is not None else None
        self._health = evolve(self._health, available_space=info.available_space, last_contact=now)
        return info

    async def add_or_renew_lease(
        self, storage_index: bytes, renew_secret: bytes, cancel_secret: bytes
    ) -> None:
        """Renew or add a lease on every share of the index."""
        await self._run(
            partial(self._server.add_or_renew_lease, storage_index, renew_secret, cancel_secret),
            commit=False,
        )

    async def allocate_buckets(
        self,
        storage_index: bytes,
        share_numbers: frozenset[int],
        allocated_size: int,
        upload_secret: bytes,
        renew_secret: bytes,
        cancel_secret: bytes,
    ) -> AllocationResult:
        """Open immutable shares for writing."""
        await turn()  # background work waits while clients are busy (as over HTTP)
        return await self._run(
            partial(
                self._server.allocate_buckets,
                storage_index,
                frozenset(share_numbers),
                allocated_size,
                upload_secret,
                renew_secret,
                cancel_secret,
            ),
            commit=False,
        )

    async def write_immutable(
        self,
        storage_index: bytes,
        share_number: int,
        upload_secret: bytes,
        offset: int,
        data: bytes,
    ) -> WriteResult:
        """Write a chunk of an allocated immutable share; the one that completes it returns
        once the share is durable (its flushes grouped with others')."""
        await turn(len(data))
        server, data = self._server, bytes(data)

        def write() -> WriteResult | Deferred[WriteResult]:
            result = server.write_immutable(
                storage_index, share_number, upload_secret, offset, data
            )
            if not result.finished:
                return result
            return server.durable(storage_index, share_number).addCallback(lambda _: result)

        return await self._run(write)

    async def write_immutable_ordered(
        self,
        storage_index: bytes,
        share_number: int,
        upload_secret: bytes,
        offset: int,
        data: bytes,
    ) -> WriteResult:
        """Write a chunk of an allocated immutable share; answered once made, durable with
        the next flush (see :class:`IOrderedStorage`). Background work and a busy thread
        get the durable answer, as from :meth:`write_immutable`."""
        if self._thread is None or in_background():
            return await self.write_immutable(
                storage_index, share_number, upload_secret, offset, data
            )
        await turn(len(data))
        return await self._thread.made(
            partial(
                self._server.write_immutable,
                storage_index,
                share_number,
                upload_secret,
                offset,
                bytes(data),
            )
        )

    async def put_whole_ordered(
        self,
        storage_index: bytes,
        shares: Sequence[bytes],
        upload_secret: bytes,
        renew_secret: bytes,
        cancel_secret: bytes,
    ) -> AllocationResult:
        """Allocate and write a small object's shares in one call on the core (see
        :class:`IWholeShares`); background work and a busy thread make the calls one by
        one, as :meth:`write_immutable_ordered` would."""
        numbers = frozenset(range(len(shares)))
        size = len(shares[0])
        if self._thread is None or in_background():
            result = await self.allocate_buckets(
                storage_index, numbers, size, upload_secret, renew_secret, cancel_secret
            )
            try:
                for share in sorted(result.allocated):
                    await self.write_immutable_ordered(
                        storage_index, share, upload_secret, 0, shares[share]
                    )
            except BaseException:
                for share in result.allocated:
                    try:
                        await self.abort_immutable(storage_index, share, upload_secret)
                    except StorageError:
                        pass  # (one that completed)
                raise
            return result
        await turn(sum(map(len, shares)))
        server = self._server

        def put() -> AllocationResult:
            result = server.allocate_buckets(
                storage_index, numbers, size, upload_secret, renew_secret, cancel_secret
            )
            try:
                for share in sorted(result.allocated):
                    data = bytes(shares[share])
                    written = server.write_immutable(storage_index, share, upload_secret, 0, data)
                    if not written.finished:
                        raise StorageError(f"share {share} is incomplete after its last write")
            except BaseException:
                for share in result.allocated:
                    try:
                        server.abort_immutable(storage_index, share, upload_secret)
                    except StorageError:
                        pass  # (one that completed, or was never opened)
                raise
            return result

        return await self._thread.made(put)

    async def sync(self) -> None:
        """Make every change made so far durable (committing the completions made in this
        reactor turn now, not at its end)."""
        await self._run(self._server.sync, commit=False)

    async def abort_immutable(
        self, storage_index: bytes, share_number: int, upload_secret: bytes
    ) -> None:
        """Discard an incomplete immutable upload."""
        await self._run(
            partial(self._server.abort_immutable, storage_index, share_number, upload_secret)
        )

    async def list_immutable(self, storage_index: bytes) -> frozenset[int]:
        """Complete immutable shares held for the index."""
        return frozenset(await self._read(partial(self._server.list_immutable, storage_index)))

    async def read_immutable(
        self, storage_index: bytes, share_number: int, offset: int, length: int
    ) -> bytes:
        """Read a byte range of an immutable share (clamped at its end)."""
        return await self._read(
            partial(self._server.read_immutable, storage_index, share_number, offset, length)
        )

    async def advise_corrupt_immutable(
        self, storage_index: bytes, share_number: int, reason: str
    ) -> None:
        """Tell the core one of its immutable shares is corrupt."""
        await self._run(
            partial(self._server.advise_corrupt_immutable, storage_index, share_number, reason)
        )

    async def read_test_write(
        self,
        storage_index: bytes,
        write_enabler: bytes,
        renew_secret: bytes,
        cancel_secret: bytes,
        test_write_vectors: dict[int, TestWriteVectors],
        read_vector: tuple[ReadVector, ...],
    ) -> ReadTestWriteResult:
        """Atomic read, test and write on a mutable slot."""
        await turn()
        return await self._run(
            partial(
                self._server.read_test_write,
                storage_index,
                write_enabler,
                renew_secret,
                cancel_secret,
                dict(test_write_vectors),
                tuple(read_vector),
            ),
            commit=False,
        )

    async def list_mutable(self, storage_index: bytes) -> frozenset[int]:
        """Shares of a mutable slot."""
        return frozenset(await self._read(partial(self._server.list_mutable, storage_index)))

    async def read_mutable(
        self, storage_index: bytes, share_number: int, offset: int, length: int
    ) -> bytes:
        """Read a byte range of a mutable share."""
        return await self._read(
            partial(self._server.read_mutable, storage_index, share_number, offset, length)
        )

    async def advise_corrupt_mutable(
        self, storage_index: bytes, share_number: int, reason: str
    ) -> None:
        """Tell the core one of its mutable shares is corrupt."""
        await self._run(
            partial(self._server.advise_corrupt_mutable, storage_index, share_number, reason)
        )
