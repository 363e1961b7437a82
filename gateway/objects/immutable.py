"""Reading byte ranges of immutable files back from storage servers.

Shares are located with one ``list`` per server; ``k`` shares (on distinct
servers first) are opened by reading and verifying their first bytes; each
segment of the requested range is then rebuilt from ``k`` blocks, every block
checked against the hash trees. A bad block or a failing server makes the
reader switch to another share (reporting corruption to the server that held
it); NotEnoughShares is raised only when no usable share remains. One share
being read, and checking its blocks against the hash trees, is
:mod:`gateway.objects.share_source`'s. Uploading is
:mod:`gateway.objects.upload`'s.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredLock

from gateway.grid.interfaces import IStorageClient, ServerUnavailable
from gateway.objects import immutable_format as fmt
from gateway.objects.caps import ImmutableReadCap, LiteralCap, b32encode
from gateway.objects.concurrency import gather, start
from gateway.objects.crypto import HASH_SIZE
from gateway.objects.errors import CorruptShare, NotEnoughShares
from gateway.objects.placement import permuted_ring, spread
from gateway.objects.share_source import ShareSource, coalesce, run_siblings, verify_run
from storage.errors import StorageError

SERVER_FAILURES = (ServerUnavailable, StorageError)
"""What a storage request may raise that means "this server, not this upload, failed"."""

_W = TypeVar("_W")
_R = TypeVar("_R")


@define(eq=False)
class ImmutableReader:
    """Reads byte ranges of one immutable file, verifying every block against the cap."""

    cap: ImmutableReadCap
    servers: Sequence[IStorageClient]
    batch_segments: int = 8
    """Consecutive segments whose blocks are fetched with one request per share (a share's
    blocks lie next to each other: 8 segments of 128 KiB make one ~350 KiB read per share)."""
    pipeline_depth: int = 2
    """Runs of segments fetched ahead of the one being read (sequential reads)."""
    _candidates: deque[tuple[IStorageClient, int]] | None = field(default=None, init=False)
    _active: dict[int, ShareSource] = field(factory=dict, init=False)
    _codec: fmt.SegmentCodec | None = field(default=None, init=False)
    _layout: fmt.ShareLayout | None = field(default=None, init=False)
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
        end = _clamped_end(offset, length, self.cap.size)
        if offset >= end:
            return
        layout = await self.layout()
        runs = deque(self._runs(layout.segments_for(offset, end - offset)))
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
                    yield _clip(plaintext, offset - base, end - base)
        finally:
            for _, pending in in_flight:
                pending.addErrback(lambda _: None)  # abandoned read-ahead: nobody awaits it

    async def read_pieces(self, offset: int, length: int) -> list[bytes]:
        """The bytes of a range as one piece per segment it touches, not joined.

        A segment wholly inside the range is the very buffer its decryption produced
        (no copy), so a caller whose ranges are segment-aligned gets each segment as is.
        The segments are fetched in runs of up to ``batch_segments`` (one request per
        share for a run), all runs at once: the caller bounds ``length``.
        """
        end = _clamped_end(offset, length, self.cap.size)
        if offset >= end:
            return []
        layout = await self.layout()
        runs = self._runs(layout.segments_for(offset, end - offset))
        results = await gather(self._segments(layout, run) for run in runs)
        pieces: list[bytes] = []
        for run, result in zip(runs, results, strict=True):
            if isinstance(result, Exception):
                raise result
            for segment, plaintext in zip(run, result, strict=True):
                base = segment * layout.segment_size
                pieces.append(_clip(plaintext, offset - base, end - base))
        return pieces

    def reusable(self) -> bool:
        """Whether a later read may go through this reader: it has not looked for its
        shares yet, or holds enough of them open (one whose servers failed is made afresh,
        so a server that came back is asked again)."""
        if self._candidates is None:
            return True
        return self._layout is not None and len(self._active) >= self.cap.k

    async def layout(self) -> fmt.ShareLayout:
        """Where everything lies in the file's shares (opens shares on first use).

        Every share's layout comes from a URI extension block checked against the
        cap's hash, so the first one opened holds for the file.
        """
        if self._layout is None:
            await self._ensure_sources(self.cap.k)
            if not self._active:
                raise self._not_enough(None, 0)
            self._layout = next(iter(self._active.values())).verified.layout
        return self._layout

    def _runs(self, segments: range) -> list[range]:
        """``segments`` cut into runs at multiples of ``batch_segments``.

        Aligned runs (of a power of two) need fewer tree nodes: the subtrees under
        them are computed from their own blocks.
        """
        batch = max(1, self.batch_segments)
        cuts = [
            segments.start,
            *range(-(-(segments.start + 1) // batch) * batch, segments.stop, batch),
        ]
        return [range(a, b) for a, b in zip(cuts, [*cuts[1:], segments.stop], strict=True)]

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
        return deque(_primary_first(spread(holdings), self.cap.k))

    async def _open(self, server: IStorageClient, share: int) -> ShareSource:
        prefix = await server.read_immutable(
            self.cap.storage_index, share, 0, fmt.prefix_length(self.cap.n)
        )
        return ShareSource(server, fmt.verify_prefix(self.cap, share, prefix))

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
                if isinstance(result, ShareSource):
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

    async def _fetch_block(self, source: ShareSource, segment: int) -> bytes:
        return (await self._fetch_run(source, range(segment, segment + 1)))[0]

    async def _fetch_run(self, source: ShareSource, run: range) -> list[bytes]:
        """The verified blocks of consecutive segments, read with one request (plus tree nodes)."""
        layout = source.verified.layout
        si, share = self.cap.storage_index, source.share_number
        first, last = run[0], run[-1]
        start_at = layout.block_offset(first)
        stop_at = layout.block_offset(last) + layout.block_length(last)

        async def read(offset: int, length: int) -> bytes:
            return await source.server.read_immutable(si, share, offset, length)

        blocks_read = start(read(start_at, stop_at - start_at))
        try:
            siblings = await self._siblings(source, run, read)
        except BaseException:
            blocks_read.addErrback(lambda _: None)  # nobody awaits it now
            raise
        data = await blocks_read
        if len(run) == 1 and len(data) == layout.block_length(first):
            blocks = [data]
        else:
            view = memoryview(data)
            blocks = [
                bytes(view[at : at + layout.block_length(segment)])
                for segment in run
                for at in (layout.block_offset(segment) - start_at,)
            ]
        good = verify_run(source.verified, run, blocks, siblings)
        source.check_top(good)
        source.nodes.update(good)
        return blocks

    async def _siblings(
        self,
        source: ShareSource,
        run: range,
        read: Callable[[int, int], Coroutine[Any, Any, bytes]],
    ) -> dict[int, bytes]:
        """The (unverified) block-tree nodes outside the run that checking it needs."""
        layout = source.verified.layout
        needed = run_siblings(layout.num_segments, run)
        missing = [i for i in needed if source.known(i) is None]
        if source.wants_top(missing, bulk=len(run) > 1):
            await source.read_top(read)
            missing = [i for i in missing if source.known(i) is None]
        runs = coalesce(missing)
        results = await gather(
            read(layout.tree_offset + a * HASH_SIZE, (b - a + 1) * HASH_SIZE) for a, b in runs
        )
        fetched: dict[int, bytes] = {}
        for (a, b), nodes in zip(runs, results, strict=True):
            if isinstance(nodes, Exception):
                raise nodes
            if len(nodes) != (b - a + 1) * HASH_SIZE:
                raise CorruptShare(f"share {source.share_number} has a truncated block hash tree")
            fetched.update(
                (i, nodes[(i - a) * HASH_SIZE : (i - a + 1) * HASH_SIZE])
                for i in missing
                if a <= i <= b
            )
        siblings: dict[int, bytes] = {}
        for i in needed:
            node = source.known(i)
            siblings[i] = fetched[i] if node is None else node
        return siblings

    async def _segments(self, layout: fmt.ShareLayout, run: range) -> list[bytes]:
        """The plaintexts of consecutive segments.

        Each of ``k`` shares' blocks for the whole run are read at once; a share that
        fails or does not verify is dropped (and reported when corrupt) and another
        share's blocks for the run are read instead. Only when too few shares remain
        for the whole run is it read segment by segment (which says what is missing).
        """
        k = self.cap.k
        if len(run) > 1:
            runs = await self._blocks(run, k, self._fetch_run)
            if len(runs) == k:
                codec = self._segment_codec(layout)
                return [
                    codec.decode(segment, {share: blocks[i] for share, blocks in runs.items()})
                    for i, segment in enumerate(run)
                ]
        return [await self._segment(layout, segment) for segment in run]

    async def _blocks(
        self,
        what: _W,
        k: int,
        fetch: Callable[[ShareSource, _W], Coroutine[Any, Any, _R]],
    ) -> dict[int, _R]:
        """``fetch(source, what)`` from ``k`` shares, replacing those that fail, by share
        number; fewer than ``k`` when no usable share remains."""
        got: dict[int, _R] = {}
        tried: set[int] = set()
        while len(got) < k:
            await self._ensure_sources(k - len(got), frozenset(tried))
            sources = [s for sh, s in self._active.items() if sh not in tried][: k - len(got)]
            if not sources:
                break
            results = await gather(fetch(s, what) for s in sources)
            for source, result in zip(sources, results, strict=True):
                tried.add(source.share_number)
                if isinstance(result, Exception):
                    await self._failed(source.server, source.share_number, result)
                else:
                    got[source.share_number] = result
        return got

    def _segment_codec(self, layout: fmt.ShareLayout) -> fmt.SegmentCodec:
        """The file's codec (made once)."""
        if self._codec is None:
            self._codec = fmt.SegmentCodec(self.cap.key, layout)
        return self._codec

    async def _segment(self, layout: fmt.ShareLayout, segment: int) -> bytes:
        blocks = await self._blocks(segment, self.cap.k, self._fetch_block)
        if len(blocks) < self.cap.k:
            raise self._not_enough(segment, len(blocks))
        return self._segment_codec(layout).decode(segment, blocks)

    def _not_enough(self, segment: int | None, have: int) -> NotEnoughShares:
        si = b32encode(self.cap.storage_index)
        where = "" if segment is None else f" (segment {segment})"
        return NotEnoughShares(
            f"cannot read the file with storage index {si}{where}: {self.cap.k} intact"
            f" shares are needed but only {have} could be used"
            f" ({self._found} share(s) found on {len(self.servers)} server(s),"
            f" {self._corrupt} corrupt, {self._unreachable} server failure(s))"
        )


def _primary_first(
    candidates: list[tuple[IStorageClient, int]], k: int
) -> list[tuple[IStorageClient, int]]:
    """``candidates`` (one share per server first, see :func:`spread`) with, at each such
    level, the primary shares (numbers below ``k``) first.

    Primary blocks are the ciphertext itself: decoding a segment from ``k`` primary
    blocks is a join, from any other set zfec's arithmetic over every byte (about
    100 µs per 128 KiB segment here, against 0.3 µs).
    """
    level: dict[int, int] = {}
    keyed = []
    for position, (server, share) in enumerate(candidates):
        depth = level.get(id(server), 0)
        level[id(server)] = depth + 1
        keyed.append(((depth, share >= k, position), (server, share)))
    keyed.sort(key=lambda item: item[0])
    return [pair for _, pair in keyed]


def _clamped_end(offset: int, length: int, size: int) -> int:
    """Where a read of ``length`` bytes at ``offset`` ends in a file of ``size`` bytes."""
    if offset < 0 or length < 0:
        raise ValueError("offset and length must not be negative")
    return min(offset + length, size)


def _clip(plaintext: bytes, begin: int, end: int) -> bytes:
    """``plaintext[begin:end]`` (bounds clamped), the buffer itself when that is all of it."""
    if begin <= 0 and end >= len(plaintext):
        return plaintext
    return plaintext[max(0, begin) : end]


async def read_immutable(
    cap: LiteralCap | ImmutableReadCap,
    servers: Sequence[IStorageClient],
    offset: int = 0,
    length: int | None = None,
) -> bytes:
    """Read a range of an immutable file (literal or on the grid); the whole file by default."""
    if length is None:
        length = max(0, cap.size - offset)
    if isinstance(cap, LiteralCap):
        return cap.data[offset : offset + length]
    return await ImmutableReader(cap, servers).read(offset, length)
