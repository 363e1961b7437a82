"""Random-access reads of one immutable file (a literal, or a CHK object on the grid):
:class:`FileReader`, what :meth:`gateway.objects.store.ObjectStore.reader` opens for a file
of one object and for each extent of a chunk tree."""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Sequence

from attrs import define
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.grid.interfaces import IStorageClient
from gateway.objects.caps import ImmutableReadCap, LiteralCap
from gateway.objects.immutable import ImmutableReader
from gateway.objects.immutable_format import DEFAULT_SEGMENT_SIZE
from gateway.objects.interfaces import IFileReader

__all__ = ["FileReader"]


@implementer(IFileReader)
class FileReader:
    """Byte ranges of one immutable file; literal files need no grid.

    SFTP clients read in 32–255 KiB requests, several in flight; each would make
    the reader fetch and decrypt a whole segment. So reads go through
    segment-aligned chunks: a chunk wanted by several reads is fetched once, and
    fetched chunks stay in a small LRU cache.

    Wanted chunks wait in a queue that is fetched in runs of up to ``batch``
    consecutive chunks, cut at multiples of ``batch`` (one request per share for a
    run's blocks; aligned runs need fewer hash-tree nodes), at most ``depth`` runs
    at once: the chunks reads wait for before read-ahead, the lowest first. While
    reads are sequential the next ``readahead`` chunks are queued ahead of them
    (the window doubles from ``batch // 2`` with each sequential read, and is
    topped up once half of it has been read, so even a slow reader's read-ahead
    goes in whole runs). A chunk still queued or being fetched is never evicted,
    so memory stays at ``max(cached_chunks, readahead + 2 * batch)`` cached
    chunks plus ``depth * batch`` in flight, plus what the reads waiting on them
    will return anyway.
    """

    def __init__(
        self,
        cap: LiteralCap | ImmutableReadCap,
        servers: Sequence[IStorageClient],
        chunk_size: int = DEFAULT_SEGMENT_SIZE,
        cached_chunks: int = 32,
        readahead: int = 24,
        batch: int = 8,
        depth: int = 3,
        reader: ImmutableReader | None = None,
    ):
        self.cap = cap
        self._reader = (
            (reader or ImmutableReader(cap, servers, batch_segments=max(1, batch)))
            if isinstance(cap, ImmutableReadCap)
            else None
        )
        self._chunk_size = chunk_size
        self._count = -(-cap.size // chunk_size)
        # Read-ahead chunks wait here until read: room for the window and a run either side.
        self._capacity = max(1, cached_chunks, readahead + 2 * batch)
        self._readahead = max(0, readahead)
        self._batch = max(1, batch)
        self._depth = max(1, depth)
        self._chunks: OrderedDict[int, bytes] = OrderedDict()  # fetched chunks, least recent first
        self._pending: dict[int, list[Deferred[bytes | _Failed]]] = {}  # queued or fetching
        self._queued: set[int] = set()  # pending chunks whose fetch has not started
        self._order: list[tuple[int, int]] = []  # heap of (0 wanted / 1 read-ahead, chunk)
        self._running = 0
        self._pumping = False
        self._last_end = -1  # where the previous read ended
        self._window = 0  # read-ahead window, in chunks (0 after a non-sequential read)
        self._ahead = 0  # read-ahead has queued the chunks before this index

    @property
    def size(self) -> int:
        """The file's length."""
        return self.cap.size

    async def read(self, offset: int, length: int) -> bytes:
        """Bytes at ``offset`` (clamped at the end)."""
        if isinstance(self.cap, LiteralCap):
            return self.cap.data[offset : offset + length]
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        size = self._chunk_size
        first, last = offset // size, (end - 1) // size
        sequential = offset == self._last_end
        self._last_end = end
        wanted = [self._want(i) for i in range(first, last + 1)]
        self._read_ahead(last, sequential)
        self._pump()
        pieces: list[bytes] = []
        for piece in wanted:
            if isinstance(piece, Deferred):
                result = await piece
                if isinstance(result, _Failed):
                    result.failure.raiseException()
                piece = result
            pieces.append(piece)
        start = offset - first * size
        stop = end - last * size  # where the read ends in the last chunk
        if len(pieces) == 1:
            piece = pieces[0]
            return piece if start == 0 and stop == len(piece) else piece[start:stop]
        # One copy: the ends are views, not slices that the join would copy again.
        head, *middle, tail = pieces
        return b"".join([memoryview(head)[start:], *middle, memoryview(tail)[:stop]])

    # -- the queue ---------------------------------------------------------------------

    def _want(self, index: int) -> bytes | Deferred[bytes | _Failed]:
        """A chunk's bytes if fetched, else a Deferred fired with them (queued if need be)."""
        done = self._chunks.get(index)
        if done is not None:
            self._chunks.move_to_end(index)
            return done
        waiter: Deferred[bytes | _Failed] = Deferred()
        waiters = self._pending.get(index)
        if waiters is None:
            self._pending[index] = [waiter]
            self._queued.add(index)
            heapq.heappush(self._order, (0, index))
        else:
            waiters.append(waiter)
            if index in self._queued:
                heapq.heappush(self._order, (0, index))  # wanted now: ahead of read-ahead
        return waiter

    def _read_ahead(self, last: int, sequential: bool) -> None:
        """Queue the chunks after ``last`` while reads are sequential, in a growing window."""
        if not sequential or self._readahead == 0:
            self._window = self._ahead = 0
            return
        self._window = min(self._readahead, max(self._batch // 2, 1, 2 * self._window))
        begin = max(self._ahead, last + 1)
        if begin - (last + 1) > self._window // 2:
            return  # more than half a window is still ahead: top up later, a run at once
        stop = -(-(last + 1 + self._window) // self._batch) * self._batch  # a run's end
        self._ahead = stop = min(self._count, stop)
        for index in range(begin, stop):
            if index not in self._chunks and index not in self._pending:
                self._pending[index] = []
                self._queued.add(index)
                heapq.heappush(self._order, (1, index))

    def _pump(self) -> None:
        """Start fetching queued runs while fewer than ``depth`` are in flight.

        Not re-entered: a fetch that completes at once (the embedded grid answers
        synchronously) calls back in here, and the loop already running picks up the
        slot it freed and whatever its readers queued, instead of recursing per run.
        """
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._running < self._depth and self._queued:
                if len(self._order) > 2 * len(self._queued) + 64:  # drop started chunks' entries
                    self._order = [entry for entry in self._order if entry[1] in self._queued]
                    heapq.heapify(self._order)
                _, first = heapq.heappop(self._order)
                if first not in self._queued:
                    continue  # an entry for a chunk already started (or bumped)
                stop = first + 1  # runs end at multiples of batch: fewer tree nodes to read
                while stop % self._batch and stop in self._queued:
                    stop += 1
                self._queued.difference_update(range(first, stop))
                self._running += 1
                Deferred.fromCoroutine(self._fetch(first, stop))
        finally:
            self._pumping = False

    async def _fetch(self, first: int, stop: int) -> None:
        """Fetch chunks ``[first, stop)`` and hand them to their waiters; never raises."""
        assert self._reader is not None
        size = self._chunk_size
        try:
            pieces = await self._reader.read_pieces(first * size, (stop - first) * size)
            chunks = _chunked(pieces, size)
            if len(chunks) != stop - first:
                raise AssertionError(f"{len(chunks)} chunks read for {stop - first}")
        except Exception:
            failed = _Failed(Failure())
            for index in range(first, stop):
                for waiter in self._pending.pop(index, ()):
                    waiter.callback(failed)  # a failed fetch is not remembered
        else:
            for index, chunk in zip(range(first, stop), chunks, strict=True):
                self._chunks[index] = chunk
                for waiter in self._pending.pop(index, ()):
                    waiter.callback(chunk)
            while len(self._chunks) > self._capacity:
                self._chunks.popitem(last=False)
        finally:
            self._running -= 1
        self._pump()


def _chunked(pieces: list[bytes], size: int) -> list[bytes]:
    """Cut consecutive pieces into chunks of ``size`` bytes (the last may be shorter).

    Segment-sized pieces are the chunks already (no copy); other sizes (a file
    written with another segment size) are joined and cut.
    """
    if all(len(p) == size for p in pieces[:-1]) and pieces and 0 < len(pieces[-1]) <= size:
        return pieces
    data = b"".join(pieces)
    return [data[at : at + size] for at in range(0, len(data), size)]


@define
class _Failed:
    """A chunk whose fetch failed, held as a value: a read that failed on an earlier chunk
    never awaits its later ones, and a failed Deferred nobody awaits is logged as an
    unhandled error."""

    failure: Failure
