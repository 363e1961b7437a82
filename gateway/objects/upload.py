"""Uploading immutable files to storage servers.

A first pass hashes the plaintext (for the convergent key), then shares are
allocated on servers in permuted-ring order until servers-of-happiness is met
(see :mod:`gateway.objects.placement`), and a second pass encodes segment by
segment, writing each segment's blocks to every server while up to
``pipeline_depth`` segments are in flight. Memory stays at a few segments plus
32 bytes per block hash. The share metadata (header, hash chain, UEB, block tree)
is written last, completing each share. Reading them back is
:mod:`gateway.objects.immutable`'s.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, BinaryIO, TypeVar, cast

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from gateway.grid.interfaces import (
    IOrderedStorage,
    IStorageClient,
    IWholeShares,
    ServerUnavailable,
    sync_ordered,
)
from gateway.objects import immutable_format as fmt
from gateway.objects.caps import ImmutableReadCap, LiteralCap, b32encode
from gateway.objects.concurrency import gather, shared, start
from gateway.objects.crypto import (
    PERSON_PLAINTEXT,
    GatewaySecrets,
    convergent_key,
    immutable_storage_index,
    random_key,
    streaming_hasher,
)
from gateway.objects.errors import CorruptShare, UploadUnhappy
from gateway.objects.immutable import SERVER_FAILURES
from gateway.objects.placement import happiness, permuted_ring
from gateway.threads import Threads
from storage.errors import StorageError

SLICE_SECONDS = 0.02
"""How long an upload may run without letting the reactor serve anything else."""

OFFLOAD_AT = 128 * 1024
"""The smallest piece of work (in bytes) handed to the encoding threads: a default
segment. A chunk tree's node with its inline patches (up to ~40 KiB) is encoded in
place: handed to a thread, each of its two passes cost an fsync a wake-up of the reactor
and the GIL passed back and forth, more than the work (random 4 KiB write + fsync in a
256 MiB file: median 2.68 -> 2.51 ms with 32 KiB -> 256 KiB here)."""

HASH_RUN = 8
"""Segments read and hashed per hand-off in the first pass."""

WHOLE_SHARE_WRITE = 2 * 1024 * 1024
"""Shares up to this size are written in one request each, header and blocks together
(every extent of a chunk tree, every small file and node); larger ones segment by segment
as they are encoded, so that memory stays at a few segments."""

T = TypeVar("T")


def _encode_next(source: BinaryIO, builder: fmt.ShareSetBuilder, length: int) -> list[bytes]:
    """Read the next segment and encode it (encrypt, erasure-code, hash its blocks)."""
    plaintext = source.read(length)
    if len(plaintext) != length:
        raise ValueError("the file changed size while it was being uploaded")
    return builder.add_segment(plaintext)


@asynccontextmanager
async def _exclusive(
    uploading: dict[bytes, Deferred[None]],
    storage_index: bytes,
    servers: Sequence[IStorageClient],
) -> AsyncIterator[None]:
    """Hold ``storage_index`` in ``uploading`` (after whoever holds it): the same bytes being
    stored once at a time, a second store finds them there (see ``ImmutableUploader``)."""
    waited = False
    while (other := uploading.get(storage_index)) is not None:
        waited = True
        await shared(other)
    done: Deferred[None] = Deferred()
    uploading[storage_index] = done
    try:
        if waited:  # the other may have left its shares made, not durable: an ordered
            await sync_ordered(servers)  # server offers them to nobody until they are
        yield
    finally:
        del uploading[storage_index]
        done.callback(None)


class _Pacer:
    """Lets the running reactor in at least every ``SLICE_SECONDS`` of a long upload.

    On the embedded grid every storage call completes at once, so a large
    upload would otherwise hash, encrypt and write the whole file in one
    reactor turn: a CLOSE reply already written, and every other session,
    would wait for the entire upload (11.6 s for 1 GiB). Without a running
    reactor (synchronous tests) it does nothing.
    """

    def __init__(self) -> None:
        self._since = time.monotonic()

    async def pause(self) -> None:
        now = time.monotonic()
        if now - self._since < SLICE_SECONDS:
            return
        from twisted.internet import reactor

        if getattr(reactor, "running", False):
            await deferLater(cast(IReactorTime, reactor), 0, lambda: None)
        self._since = time.monotonic()


@define(eq=False)
class _Placement:
    """Which shares each server holds (already had, or newly allocated to us)."""

    storage_index: bytes
    holders: dict[IStorageClient, set[int]] = field(factory=dict)
    allocated: dict[IStorageClient, set[int]] = field(factory=dict)
    refused: int = 0
    unreachable: int = 0
    lost: int = 0

    def happiness(self) -> int:
        return happiness(self.holders)

    def drop(self, server: IStorageClient) -> None:
        """Forget a server that failed mid-upload."""
        self.holders.pop(server, None)
        self.allocated.pop(server, None)
        self.lost += 1

    def unhappy(self, happy: int, queried: int) -> UploadUnhappy:
        si = b32encode(self.storage_index)
        return UploadUnhappy(
            f"could place shares of storage index {si} on only {self.happiness()} distinct"
            f" server(s), {happy} are required: {queried} of the grid's servers asked,"
            f" {self.refused} refused (full), {self.unreachable} unreachable,"
            f" {self.lost} failed while writing"
        )


@define(eq=False)
class ImmutableUploader:
    """Uploads files as immutable objects onto a set of storage servers."""

    servers: Sequence[IStorageClient]
    secrets: GatewaySecrets
    params: fmt.EncodingParams = fmt.EncodingParams()
    convergent: bool = True
    pipeline_depth: int = 4
    threads: Threads | None = None
    """Where reading, hashing and encoding a segment run (a pool of their own: see
    :func:`gateway.threads.cpu_threads`), so the reactor thread keeps serving clients while
    a large upload runs; None runs them in the reactor thread, in slices."""
    uploading: dict[bytes, Deferred[None]] | None = None
    """Convergent uploads under way, by storage index, shared by a store's uploaders: a
    second upload of the same bytes (two identical files closed together) waits for the
    first and then finds the shares there, instead of being refused the shares the first
    is still writing (which failed it as if the servers were full, to be retried)."""
    ordered: bool = False
    """Writes to an ordered server (:class:`gateway.grid.interfaces.IOrderedStorage`)
    are answered once made, not once durable: the caller makes them durable by a later
    durable change or a ``sync``."""

    async def _cpu(self, size: int, call: Callable[[], T]) -> T:
        """``call()``, in :attr:`threads` when it handles at least ``OFFLOAD_AT`` bytes (a
        smaller one costs less than the hand-off to a thread)."""
        if self.threads is None or size < OFFLOAD_AT:
            return call()
        return await self.threads(call)

    def _read_hashed(
        self, source: BinaryIO, hasher: hashlib.blake2b, size: int
    ) -> Callable[[], Awaitable[bytes]]:
        """Reads the source a run of segments at a time (b"" at its end), hashing each.
        ``size`` is what the source holds from here: a read of less than ``OFFLOAD_AT``
        (a node, a small file, the empty read at the end) runs in place, not in a thread."""
        step = self.params.segment_size * HASH_RUN
        left = size

        def read_and_hash() -> bytes:
            nonlocal left
            data = source.read(step)
            hasher.update(data)
            left -= len(data)
            return data

        return lambda: self._cpu(min(step, max(left, 0)), read_and_hash)

    async def upload_bytes(
        self, data: bytes, durable: list[Coroutine[Any, Any, None]] | None = None
    ) -> LiteralCap | ImmutableReadCap:
        """Upload a buffer (convenience for small objects and tests)."""
        import io

        return await self.upload(io.BytesIO(data), durable)

    async def upload(
        self, source: BinaryIO, durable: list[Coroutine[Any, Any, None]] | None = None
    ) -> LiteralCap | ImmutableReadCap:
        """Upload a seekable binary file from its current position to its end.

        Returns a literal cap for tiny files (nothing is stored), else the read cap.
        Raises UploadUnhappy (and aborts what was allocated) when the shares
        cannot be spread over ``happy`` servers.

        With ``durable``, an object whose shares are written whole (at most
        ``WHOLE_SHARE_WRITE``) is only encoded: its cap is returned before any request,
        and ``durable`` gets the coroutine that places and writes it (raising as the
        upload would have). The caller must run it, whatever happens, and await it
        before anything names the cap: a chunk tree's levels are encoded one after the
        other, then all of an update's objects go to the servers together (one flush
        on each, one wait).
        """
        params = self.params
        start_at = source.tell()
        end = source.seek(0, 2)
        source.seek(start_at)
        hasher = streaming_hasher(PERSON_PLAINTEXT)
        size = 0
        head = b""
        pacer = _Pacer()
        if not self.convergent:
            head = source.read(fmt.LITERAL_THRESHOLD + 1)
            size = end - start_at
        else:
            read = self._read_hashed(source, hasher, end - start_at)
            while chunk := await read():
                await pacer.pause()
                if size <= fmt.LITERAL_THRESHOLD:
                    head += chunk[: fmt.LITERAL_THRESHOLD + 1]
                size += len(chunk)
        if size <= fmt.LITERAL_THRESHOLD:
            return LiteralCap(head[:size])
        if self.convergent:
            key = convergent_key(
                self.secrets.convergence, params.k, params.n, params.segment_size, hasher.digest()
            )
        else:
            key = random_key()
        layout = fmt.ShareLayout(size, params.segment_size, params.k, params.n)
        storage_index = immutable_storage_index(key)
        uploading = self.uploading if self.uploading is not None else {}
        if layout.share_size <= WHOLE_SHARE_WRITE:
            # Encoded first, then each share written whole with its header: one request
            # per share (a chunk's extent, a small file, a node) instead of one per segment
            # and one for the header; on a grid each is an HTTPS exchange. With
            # ``durable`` the store is the caller's to run.
            source.seek(start_at)
            cap, shares = await self._encode_whole(source, key, layout)
            store = self._store_whole(storage_index, layout.share_size, shares, uploading)
            if durable is None:
                await store
            else:
                durable.append(store)
            return cap
        async with _exclusive(uploading, storage_index, self.servers):
            placement = await self._place(storage_index, layout.share_size)
            try:
                source.seek(start_at)
                return await self._write(source, key, layout, placement)
            except BaseException:
                await self._abort(placement)
                raise

    async def _encode_whole(
        self, source: BinaryIO, key: bytes, layout: fmt.ShareLayout
    ) -> tuple[ImmutableReadCap, list[bytes]]:
        """Encode a file whose shares are written whole: its cap and every share's bytes.
        With threads, every segment in one call (a 1 MiB extent handed over segment by
        segment paid eight wake-ups of the reactor)."""
        builder = fmt.ShareSetBuilder(key, layout)
        held: list[list[bytes]] = [[] for _ in range(layout.n)]
        if self.threads is None:  # in the reactor thread, a segment at a time
            await self._write_segments(source, builder, layout, None, deque(), held)
        else:

            def encode_all() -> None:
                for segment in range(layout.num_segments):
                    blocks = _encode_next(source, builder, layout.segment_length(segment))
                    for share, block in enumerate(blocks):
                        held[share].append(block)

            await self._cpu(layout.size, encode_all)
        cap, prefixes = builder.finish()
        return cap, [prefix + b"".join(held[share]) for share, prefix in enumerate(prefixes)]

    async def _store_whole(
        self,
        storage_index: bytes,
        share_size: int,
        shares: list[bytes],
        uploading: dict[bytes, Deferred[None]],
    ) -> None:
        """Place and write shares encoded earlier (see ``upload``'s ``durable``)."""
        async with _exclusive(uploading, storage_index, self.servers):
            if self.ordered and len(self.servers) == 1 and IWholeShares.providedBy(self.servers[0]):
                await self._put_whole(cast(IWholeShares, self.servers[0]), storage_index, shares)
                return
            placement = await self._place(storage_index, share_size)
            try:
                await self._write_blocks(placement, shares, 0, final=True)
            except BaseException:
                await self._abort(placement)
                raise

    async def _allocate(
        self, placement: _Placement, server: IStorageClient, share: int, size: int
    ) -> bool:
        si = placement.storage_index
        sid = server.server_id
        try:
            result = await server.allocate_buckets(
                si,
                frozenset({share}),
                size,
                self.secrets.upload_secret(sid, si),
                self.secrets.renew_secret(sid, si),
                self.secrets.cancel_secret(sid, si),
            )
        except ServerUnavailable:
            placement.unreachable += 1
            return False
        except StorageError:
            placement.refused += 1
            return False
        # Shares the server already had: allocate_buckets has renewed our lease on them
        # (as Tahoe's servers do), so no separate add_or_renew_lease (a durable write) is sent.
        got = set(result.already_have) | set(result.allocated)
        if not got:
            placement.refused += 1
            return False
        placement.holders.setdefault(server, set()).update(got)
        placement.allocated.setdefault(server, set()).update(result.allocated)
        return share in got

    async def _place(self, storage_index: bytes, share_size: int) -> _Placement:
        placement = _Placement(storage_index)
        n = self.params.n
        ring = deque(permuted_ring(self.servers, storage_index))
        homeless = deque(range(n))

        def placed() -> set[int]:
            return set().union(*placement.holders.values())

        # First pass: one share per server, in ring order, batch by batch.
        while homeless and ring:
            batch = [
                (ring.popleft(), homeless.popleft()) for _ in range(min(len(ring), len(homeless)))
            ]
            await gather(self._allocate(placement, s, sh, share_size) for s, sh in batch)
            homeless = deque(sorted(set(homeless) | {sh for _, sh in batch} - placed()))
        # Further passes: the remaining shares round-robin over servers that accepted.
        usable = [s for s in permuted_ring(placement.holders, storage_index)]
        while homeless and usable:
            batch = list(
                zip(
                    usable,
                    [homeless.popleft() for _ in range(min(len(usable), len(homeless)))],
                    strict=False,
                )
            )
            results = await gather(self._allocate(placement, s, sh, share_size) for s, sh in batch)
            usable = [s for (s, _), ok in zip(batch, results, strict=True) if ok is True]
            homeless = deque(sorted(set(homeless) | {sh for _, sh in batch} - placed()))
        if placement.happiness() < self.params.happy:
            await self._abort(placement)
            raise placement.unhappy(self.params.happy, len(self.servers))
        return placement

    async def _write(
        self, source: BinaryIO, key: bytes, layout: fmt.ShareLayout, placement: _Placement
    ) -> ImmutableReadCap:
        """Encode segment by segment, writing each as it is encoded (a share larger than
        ``WHOLE_SHARE_WRITE``), then the header that completes each share."""
        builder = fmt.ShareSetBuilder(key, layout)
        in_flight: deque[Deferred[None]] = deque()
        try:
            await self._write_segments(source, builder, layout, placement, in_flight)
        except BaseException:
            for pending in in_flight:
                pending.addErrback(lambda _: None)
            raise
        cap, prefixes = builder.finish()
        await self._write_blocks(placement, prefixes, 0, final=True)
        return cap

    async def _write_segments(
        self,
        source: BinaryIO,
        builder: fmt.ShareSetBuilder,
        layout: fmt.ShareLayout,
        placement: _Placement | None,
        in_flight: deque[Deferred[None]],
        held: list[list[bytes]] | None = None,
    ) -> None:
        pacer = _Pacer()
        for segment in range(layout.num_segments):
            await pacer.pause()
            length = layout.segment_length(segment)
            encode = functools.partial(_encode_next, source, builder, length)
            blocks = await self._cpu(length, encode)
            if held is not None:  # written with the header (see _encode_whole)
                for share, block in enumerate(blocks):
                    held[share].append(block)
                continue
            assert placement is not None
            offset = layout.block_offset(segment)
            in_flight.append(start(self._write_blocks(placement, blocks, offset)))
            if len(in_flight) >= self.pipeline_depth:
                await in_flight.popleft()
        while in_flight:
            await in_flight.popleft()

    async def _write_blocks(
        self, placement: _Placement, blocks: Sequence[bytes], offset: int, final: bool = False
    ) -> None:
        """Write each share's piece to every server that allocated it; drop failing servers."""
        si = placement.storage_index

        async def to_server(server: IStorageClient, shares: set[int]) -> None:
            secret = self.secrets.upload_secret(server.server_id, si)
            write = server.write_immutable
            if self.ordered and IOrderedStorage.providedBy(server):
                write = cast(IOrderedStorage, server).write_immutable_ordered
            for share in sorted(shares):
                result = await write(si, share, secret, offset, blocks[share])
                if final and not result.finished:
                    raise CorruptShare(f"share {share} is incomplete after its last write")

        targets = [(s, set(shares)) for s, shares in placement.allocated.items() if shares]
        results = await gather(to_server(s, shares) for s, shares in targets)
        for (server, _), result in zip(targets, results, strict=True):
            if isinstance(result, (*SERVER_FAILURES, CorruptShare)):
                placement.drop(server)
            elif isinstance(result, Exception):
                raise result
        if placement.happiness() < self.params.happy:
            raise placement.unhappy(self.params.happy, len(self.servers))

    async def _put_whole(
        self, server: IWholeShares, storage_index: bytes, shares: list[bytes]
    ) -> None:
        """A grid of one server that takes whole shares in one call (the embedded core):
        placed and written as :meth:`_place` and :meth:`_write_blocks` would, in one call."""
        client = cast(IStorageClient, server)
        placement = _Placement(storage_index)
        sid, si = client.server_id, storage_index
        try:
            result = await server.put_whole_ordered(
                si,
                shares,
                self.secrets.upload_secret(sid, si),
                self.secrets.renew_secret(sid, si),
                self.secrets.cancel_secret(sid, si),
            )
        except SERVER_FAILURES:
            placement.lost += 1
        else:
            got = set(result.already_have) | set(result.allocated)
            if got:
                placement.holders[client] = got
            else:
                placement.refused += 1
        if placement.happiness() < self.params.happy:
            raise placement.unhappy(self.params.happy, len(self.servers))

    async def _abort(self, placement: _Placement) -> None:
        si = placement.storage_index

        async def abort(server: IStorageClient, share: int) -> None:
            await server.abort_immutable(
                si, share, self.secrets.upload_secret(server.server_id, si)
            )

        await gather(
            abort(server, share)
            for server, shares in placement.allocated.items()
            for share in shares
        )
