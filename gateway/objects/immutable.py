"""Uploading immutable files to storage servers and reading byte ranges back.

Upload: a first pass hashes the plaintext (for the convergent key), then shares
are allocated on servers in permuted-ring order until servers-of-happiness is
met (see :mod:`gateway.objects.placement`), and a second pass encodes segment by
segment, writing each segment's blocks to every server while up to
``pipeline_depth`` segments are in flight. Memory stays at a few segments plus
32 bytes per block hash. The share metadata (header, hash chain, UEB, block tree)
is written last, completing each share.

Download: shares are located with one ``list`` per server; ``k`` shares (on
distinct servers first) are opened by reading and verifying their first bytes;
each segment of the requested range is then rebuilt from ``k`` blocks, every
block checked against the hash trees. A bad block or a failing server makes the
reader switch to another share (reporting corruption to the server that held
it); NotEnoughShares is raised only when no usable share remains.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import BinaryIO, cast

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from gateway.grid.interfaces import IStorageClient, ServerUnavailable
from gateway.objects import immutable_format as fmt
from gateway.objects import merkle
from gateway.objects.caps import ImmutableCap, ImmutableReadCap, LiteralCap, b32encode
from gateway.objects.concurrency import gather, start
from gateway.objects.crypto import (
    HASH_SIZE,
    PERSON_PLAINTEXT,
    GatewaySecrets,
    convergent_key,
    immutable_storage_index,
    random_key,
    streaming_hasher,
)
from gateway.objects.errors import CorruptShare, NotEnoughShares, UploadUnhappy
from gateway.objects.placement import happiness, permuted_ring, spread
from storage.errors import StorageError

SERVER_FAILURES = (ServerUnavailable, StorageError)

WHOLE_TREE_LIMIT = 64 * 1024
"""Block hash trees up to this size (2048 nodes: files of up to 1024 segments) are read whole."""

SLICE_SECONDS = 0.02
"""How long an upload may run without letting the reactor serve anything else."""


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


"""What a storage request may raise that means "this server, not this upload, failed"."""


# --- upload ------------------------------------------------------------------------


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

    async def upload_bytes(self, data: bytes) -> ImmutableCap:
        """Upload a buffer (convenience for small objects and tests)."""
        import io

        return await self.upload(io.BytesIO(data))

    async def upload(self, source: BinaryIO) -> ImmutableCap:
        """Upload a seekable binary file from its current position to its end.

        Returns a literal cap for tiny files (nothing is stored), else the read cap.
        Raises UploadUnhappy (and aborts what was allocated) when the shares
        cannot be spread over ``happy`` servers.
        """
        params = self.params
        start_at = source.tell()
        hasher = streaming_hasher(PERSON_PLAINTEXT)
        size = 0
        head = b""
        pacer = _Pacer()
        while chunk := source.read(params.segment_size):
            await pacer.pause()
            if size <= fmt.LITERAL_THRESHOLD:
                head += chunk
            size += len(chunk)
            if not self.convergent and size > fmt.LITERAL_THRESHOLD:
                here = source.tell()
                size += source.seek(0, 2) - here
                break
            hasher.update(chunk)
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
        placement = await self._place(storage_index, layout.share_size)
        try:
            source.seek(start_at)
            cap = await self._write(source, key, layout, placement)
        except BaseException:
            await self._abort(placement)
            raise
        return cap

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
        placement: _Placement,
        in_flight: deque[Deferred[None]],
    ) -> None:
        pacer = _Pacer()
        for segment in range(layout.num_segments):
            await pacer.pause()
            plaintext = source.read(layout.segment_length(segment))
            if len(plaintext) != layout.segment_length(segment):
                raise ValueError("the file changed size while it was being uploaded")
            blocks = builder.add_segment(plaintext)
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
            for share in sorted(shares):
                result = await server.write_immutable(si, share, secret, offset, blocks[share])
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


# --- download ----------------------------------------------------------------------


@define(eq=False)
class _ShareSource:
    """One share on one server, its verified metadata and the tree nodes known good."""

    server: IStorageClient
    verified: fmt.VerifiedShare
    nodes: dict[int, bytes] = field(factory=dict)
    tree: bytes | None = None
    """The whole stored block hash tree (unverified: each path is checked against the root)."""
    tree_fetches: int = 0

    @property
    def share_number(self) -> int:
        return self.verified.share_number

    def tree_reads(self, needed: set[int]) -> list[tuple[int, int]]:
        """(first, last) node runs to read for ``needed`` nodes not known yet.

        From the second fetch on, a tree of at most ``WHOLE_TREE_LIMIT`` bytes is
        read whole, once (one request instead of one per run of siblings on every
        later block); a single small read still reads only the nodes it needs."""
        missing = [i for i in needed if i not in self.nodes]
        if not missing or self.tree is not None:
            return []
        self.tree_fetches += 1
        count = merkle.tree_size(self.verified.layout.num_segments)
        if self.tree_fetches > 1 and count * HASH_SIZE <= WHOLE_TREE_LIMIT:
            return [(0, count - 1)]
        return _coalesce(missing)

    def fetched_nodes(
        self, runs: list[tuple[int, int]], data: list[bytes], needed: set[int]
    ) -> dict[int, bytes]:
        """The unverified nodes ``needed`` from what ``runs`` read (or the stored whole tree)."""
        whole = (
            len(runs) == 1
            and runs[0][0] == 0
            and runs[0][1] + 1 == merkle.tree_size(self.verified.layout.num_segments)
        )
        if whole and len(data[0]) == (runs[0][1] + 1) * HASH_SIZE:
            self.tree = data[0]
        fetched: dict[int, bytes] = {}
        for (a, b), nodes in zip(runs, data, strict=True):
            if len(nodes) != (b - a + 1) * HASH_SIZE:
                raise CorruptShare(f"share {self.share_number} has a truncated block hash tree")
            for i in range(a, b + 1):
                if i in needed:
                    fetched[i] = nodes[(i - a) * HASH_SIZE : (i - a + 1) * HASH_SIZE]
        if self.tree is not None:
            for i in needed:
                if i not in fetched and (i + 1) * HASH_SIZE <= len(self.tree):
                    fetched[i] = self.tree[i * HASH_SIZE : (i + 1) * HASH_SIZE]
        return fetched


def _coalesce(indexes: Sequence[int], gap: int = 32) -> list[tuple[int, int]]:
    """Group sorted node indexes into (first, last) runs whose gaps are at most ``gap`` nodes."""
    runs: list[tuple[int, int]] = []
    for i in sorted(indexes):
        if runs and i - runs[-1][1] <= gap:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


@define(eq=False)
class ImmutableReader:
    """Reads byte ranges of one immutable file, verifying every block against the cap."""

    cap: ImmutableReadCap
    servers: Sequence[IStorageClient]
    batch_segments: int = 4
    """Consecutive segments whose blocks are fetched with one request per share."""
    pipeline_depth: int = 2
    """Runs of segments fetched ahead of the one being read (sequential reads)."""
    _candidates: deque[tuple[IStorageClient, int]] | None = field(default=None, init=False)
    _active: dict[int, _ShareSource] = field(factory=dict, init=False)
    _codec: fmt.SegmentCodec | None = field(default=None, init=False)
    _found: int = field(default=0, init=False)
    _unreachable: int = field(default=0, init=False)
    _corrupt: int = field(default=0, init=False)
    _opening: DeferredLock = field(factory=DeferredLock, init=False)

    @property
    def size(self) -> int:
        """The file's length (from the cap; no I/O)."""
        return self.cap.size

    async def read(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)``, clamped to the file's end."""
        return b"".join([piece async for piece in self.iter_range(offset, length)])

    async def iter_range(self, offset: int, length: int) -> AsyncIterator[bytes]:
        """The bytes of a range, a segment's worth at a time (memory stays bounded).

        Segments are fetched in runs of up to ``batch_segments`` (one request per
        share for a run's blocks, which lie next to each other in the share), and
        up to ``pipeline_depth`` runs are in flight ahead of the one being yielded.
        """
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        end = min(offset + length, self.cap.size)
        if offset >= end:
            return
        await self._ensure_sources(self.cap.k)
        if not self._active:
            raise self._not_enough(None, 0)
        layout = next(iter(self._active.values())).verified.layout
        wanted = layout.segments_for(offset, end - offset)
        batch = max(1, self.batch_segments)
        runs = deque(
            range(first, min(first + batch, wanted.stop))
            for first in range(wanted.start, wanted.stop, batch)
        )
        in_flight: deque[tuple[range, Deferred[list[bytes]]]] = deque()
        try:
            while runs or in_flight:
                while runs and len(in_flight) < max(1, self.pipeline_depth):
                    run = runs.popleft()
                    in_flight.append((run, start(self._segments(layout, run))))
                run, pending = in_flight.popleft()
                plaintexts = await pending
                for segment, plaintext in zip(run, plaintexts, strict=True):
                    base = segment * layout.segment_size
                    yield plaintext[max(0, offset - base) : end - base]
        finally:
            for _, pending in in_flight:
                pending.addErrback(lambda _: None)  # abandoned read-ahead: nobody awaits it

    # -- locating and opening shares --

    async def _locate(self) -> deque[tuple[IStorageClient, int]]:
        ring = permuted_ring(self.servers, self.cap.storage_index)
        results = await gather(s.list_immutable(self.cap.storage_index) for s in ring)
        holdings: list[tuple[IStorageClient, list[int]]] = []
        for server, result in zip(ring, results, strict=True):
            if isinstance(result, SERVER_FAILURES):
                self._unreachable += 1
            elif isinstance(result, Exception):
                raise result
            else:
                shares = sorted(sh for sh in result if 0 <= sh < self.cap.n)
                self._found += len(shares)
                holdings.append((server, shares))
        return deque(spread(holdings))

    async def _open(self, server: IStorageClient, share: int) -> _ShareSource:
        prefix = await server.read_immutable(
            self.cap.storage_index, share, 0, fmt.prefix_length(self.cap.n)
        )
        return _ShareSource(server, fmt.verify_prefix(self.cap, share, prefix))

    async def _ensure_sources(self, wanted: int, exclude: frozenset[int] = frozenset()) -> None:
        """Open shares until ``wanted`` sources outside ``exclude`` are active, or none remain.

        Concurrent reads (an SFTP client pipelines them) take turns: otherwise one read
        could find the candidate list emptied by another whose opens are still in flight,
        and give up with nothing active although a share is about to open.
        """
        await self._opening.acquire()
        try:
            await self._ensure_sources_locked(wanted, exclude)
        finally:
            self._opening.release()

    async def _ensure_sources_locked(self, wanted: int, exclude: frozenset[int]) -> None:
        if self._candidates is None:
            self._candidates = await self._locate()
        candidates = self._candidates

        def usable() -> int:
            return sum(1 for sh in self._active if sh not in exclude)

        while usable() < wanted and candidates:
            batch: list[tuple[IStorageClient, int]] = []
            taken = set(self._active)
            while candidates and len(batch) < wanted - usable():
                server, share = candidates.popleft()
                if share not in taken and share not in exclude:
                    batch.append((server, share))
                    taken.add(share)
            results = await gather(self._open(s, sh) for s, sh in batch)
            for (server, share), result in zip(batch, results, strict=True):
                if isinstance(result, _ShareSource):
                    self._active[share] = result
                else:
                    await self._failed(server, share, result)

    async def _failed(self, server: IStorageClient, share: int, error: Exception) -> None:
        """Forget a share that failed; tell its server when it was corrupt."""
        self._active.pop(share, None)
        if isinstance(error, CorruptShare):
            self._corrupt += 1
            try:
                await server.advise_corrupt_immutable(self.cap.storage_index, share, str(error))
            except SERVER_FAILURES:
                pass
        elif isinstance(error, SERVER_FAILURES):
            self._unreachable += 1
        else:
            raise error

    # -- fetching and checking blocks --

    async def _fetch_block(self, source: _ShareSource, segment: int) -> bytes:
        return (await self._fetch_run(source, range(segment, segment + 1)))[0]

    async def _fetch_run(self, source: _ShareSource, run: range) -> list[bytes]:
        """The verified blocks of consecutive segments, read with one request (plus tree nodes)."""
        layout = source.verified.layout
        si, share = self.cap.storage_index, source.share_number
        wanted: set[int] = set()
        for segment in run:
            wanted.update(fmt.block_tree_nodes_needed(layout, segment))
        runs = source.tree_reads(wanted)
        first, last = run[0], run[-1]
        start_at = layout.block_offset(first)
        stop_at = layout.block_offset(last) + layout.block_length(last)

        async def read(offset: int, length: int) -> bytes:
            return await source.server.read_immutable(si, share, offset, length)

        reads = [read(start_at, stop_at - start_at)]
        reads += [
            read(layout.tree_offset + a * HASH_SIZE, (b - a + 1) * HASH_SIZE) for a, b in runs
        ]
        results = await gather(reads)
        for result in results:
            if isinstance(result, Exception):
                raise result
        data, *run_data = (bytes(r) for r in results if isinstance(r, bytes))
        fetched = source.fetched_nodes(runs, run_data, wanted)
        blocks = []
        for segment in run:
            at = layout.block_offset(segment) - start_at
            block = data[at : at + layout.block_length(segment)]
            # Nodes verified earlier (including by this run's earlier blocks) win over fetched ones.
            known = {**fetched, **source.nodes}
            source.nodes.update(fmt.verify_block(source.verified, segment, block, known))
            blocks.append(block)
        return blocks

    async def _segments(self, layout: fmt.ShareLayout, run: range) -> list[bytes]:
        """The plaintexts of consecutive segments.

        The fast path reads each of ``k`` shares' blocks for the whole run at once;
        when a share fails or does not verify, the run is read segment by segment,
        which switches shares and reports corruption.
        """
        k = self.cap.k
        if len(run) > 1:
            await self._ensure_sources(k)
            sources = list(self._active.values())[:k]
            if len(sources) == k:
                results = await gather(self._fetch_run(s, run) for s in sources)
                if all(isinstance(r, list) for r in results):
                    if self._codec is None:
                        self._codec = fmt.SegmentCodec(self.cap.key, layout)
                    codec = self._codec
                    return [
                        codec.decode(
                            segment,
                            {
                                s.share_number: cast(list[bytes], r)[i]
                                for s, r in zip(sources, results, strict=True)
                            },
                        )
                        for i, segment in enumerate(run)
                    ]
                for source, result in zip(sources, results, strict=True):
                    if isinstance(result, SERVER_FAILURES):
                        await self._failed(source.server, source.share_number, result)
                    elif isinstance(result, Exception) and not isinstance(result, CorruptShare):
                        raise result
        return [await self._segment(layout, segment) for segment in run]

    async def _segment(self, layout: fmt.ShareLayout, segment: int) -> bytes:
        k = self.cap.k
        blocks: dict[int, bytes] = {}
        tried: set[int] = set()
        while len(blocks) < k:
            await self._ensure_sources(k - len(blocks), frozenset(tried))
            sources = [s for sh, s in self._active.items() if sh not in tried][: k - len(blocks)]
            if not sources:
                raise self._not_enough(segment, len(blocks))
            results = await gather(self._fetch_block(s, segment) for s in sources)
            for source, result in zip(sources, results, strict=True):
                tried.add(source.share_number)
                if isinstance(result, bytes):
                    blocks[source.share_number] = result
                else:
                    await self._failed(source.server, source.share_number, result)
        if self._codec is None:
            self._codec = fmt.SegmentCodec(self.cap.key, layout)
        return self._codec.decode(segment, blocks)

    def _not_enough(self, segment: int | None, have: int) -> NotEnoughShares:
        si = b32encode(self.cap.storage_index)
        where = "" if segment is None else f" (segment {segment})"
        return NotEnoughShares(
            f"cannot read the file with storage index {si}{where}: {self.cap.k} intact"
            f" shares are needed but only {have} could be used"
            f" ({self._found} share(s) found on {len(self.servers)} server(s),"
            f" {self._corrupt} corrupt, {self._unreachable} server failure(s))"
        )


async def read_immutable(
    cap: ImmutableCap, servers: Sequence[IStorageClient], offset: int = 0, length: int | None = None
) -> bytes:
    """Read a range of an immutable file (literal or on the grid); the whole file by default."""
    if length is None:
        length = max(0, cap.size - offset)
    if isinstance(cap, LiteralCap):
        return cap.data[offset : offset + length]
    return await ImmutableReader(cap, servers).read(offset, length)
