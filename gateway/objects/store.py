"""The object store: one place that knows the grid's servers, secrets and encoding.

Frontends and the CLI get files and directories from here instead of building
uploaders, readers and mutable clients themselves. The server list is asked
for on every operation, so servers that join or leave are used at once.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, BinaryIO, TypeVar

from attrs import define
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.grid.interfaces import IOrderedStorage, IStorageClient, sync_ordered
from gateway.objects.caps import (
    ChunkedCap,
    DirectoryReadCap,
    DirectoryWriteCap,
    ImmutableCap,
    ImmutableReadCap,
    LiteralCap,
    MutableReadCap,
    MutableWriteCap,
)
from gateway.objects.chunk_format import DEFAULT_CHUNK_SIZE, DEFAULT_FANOUT
from gateway.objects.chunk_update import TreeUpdate
from gateway.objects.chunked import ChunkTreeReader, NodeCache, OpenedExtents
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.dirnode import DirectoryNode, pack_contents
from gateway.objects.extent_cache import ExtentCache, KeptExtent
from gateway.objects.immutable import ImmutableReader
from gateway.objects.immutable_format import DEFAULT_SEGMENT_SIZE, EncodingParams
from gateway.objects.interfaces import IFileReader, IObjectStore
from gateway.objects.mutable import MutableClient
from gateway.objects.newkeys import NewDirectoryCaps
from gateway.objects.overlay import OverlaidReader, folded, laid_over
from gateway.objects.upload import ImmutableUploader
from gateway.objects.writeback import DirectoryWriteBack
from gateway.objects.writethrough import WriteThrough
from gateway.threads import Threads

T = TypeVar("T")

DEFERRED_STORE_BYTES = 256 * 1024
"""Objects up to this size that an update stores are stored together, at its end."""

MAX_DEFERRED = 32
"""Objects of an update encoded and not yet stored at most (then they are stored)."""


async def _stored(stores: list[Coroutine[Any, Any, None]]) -> None:
    """Run every store in ``stores`` (emptied) at once; raise the first failure once all
    have ended."""
    running = [Deferred.fromCoroutine(store) for store in stores]
    stores.clear()
    first: Failure | None = None
    for waiter in running:
        try:
            await waiter
        except Exception:
            first = first or Failure()
    if first is not None:
        first.raiseException()


@implementer(IObjectStore)
class ObjectStore:
    """Immutable files, mutable files and directories on the grid."""

    def __init__(
        self,
        servers: Callable[[], Sequence[IStorageClient]],
        secrets: GatewaySecrets,
        params: EncodingParams,
        clock: IReactorTime,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        fanout: int = DEFAULT_FANOUT,
        parallel_uploads: int = 4,
        threads: Threads | None = None,
    ):
        self._servers = servers
        #: Where uploads encode (see :attr:`ImmutableUploader.threads`).
        self.threads = threads
        self._uploading: dict[bytes, Deferred[None]] = {}  # see ImmutableUploader.uploading
        self.secrets = secrets
        self.params = params
        self.clock = clock
        #: The longest extent of a chunked file (files up to this size are one object).
        self.chunk_size = chunk_size
        self.fanout = fanout
        #: Extents of one update stored at once (each holds at most a chunk in memory).
        self.parallel_uploads = parallel_uploads
        #: Write caps for the directories a mkdir makes, made ahead of it.
        self.new_directory_caps = NewDirectoryCaps(clock)
        #: Chunk tree nodes read or stored lately (nodes are immutable: never stale).
        self.nodes = NodeCache()
        #: Files and extents whose shares reads have opened lately (where they lie, no data).
        self.extents = OpenedExtents()
        #: The plaintext of the extents stored last (the next change to them starts there).
        self.recent_extents = ExtentCache()
        #: When set, directory changes are journaled locally and published in the background.
        self.write_back: DirectoryWriteBack | None = None
        #: Otherwise they are published at once, concurrent ones to one directory together.
        self.write_through = WriteThrough(share_publishes=True)
        #: Updates stored with ordered writes so far, and how many of them a sync covered.
        self._ordered_made = self._ordered_synced = 0

    @property
    def servers(self) -> Sequence[IStorageClient]:
        """The servers in use now."""
        return self._servers()

    @property
    def ordered(self) -> bool:
        """Whether the grid is one ordered server (the embedded core alone): a change
        durable on it makes every change made before it durable
        (:class:`~gateway.grid.interfaces.IOrderedStorage`)."""
        servers = self.servers
        return len(servers) == 1 and IOrderedStorage.providedBy(servers[0])

    async def sync(self) -> None:
        """Make every change made on the ordered servers so far durable (raises the
        error of a flush that failed)."""
        made = self._ordered_made
        await sync_ordered(self.servers)
        self._ordered_synced = max(self._ordered_synced, made)

    async def barrier(self) -> None:
        """Before a journal that may name objects stored with ordered writes is flushed:
        make them durable first (at once when every such update is synced already)."""
        if self._ordered_synced < self._ordered_made:
            await self.sync()

    def mutable_client(self) -> MutableClient:
        """A client for mutable objects on the current servers."""
        return MutableClient(self.servers, self.secrets, self.params)

    def uploader(self) -> ImmutableUploader:
        """An uploader of single immutable objects onto the current servers."""
        return ImmutableUploader(
            self.servers,
            self.secrets,
            self.params,
            threads=self.threads,
            uploading=self._uploading,
        )

    async def upload(self, source: BinaryIO) -> LiteralCap | ImmutableReadCap:
        """Upload a seekable file as one immutable object."""
        return await self.uploader().upload(source)

    async def update_file(
        self,
        base: ImmutableCap | None,
        size: int,
        changed: Sequence[tuple[int, int]],
        read: Callable[[int, int], Awaitable[bytes]],
        progress: Callable[[int], None] | None = None,
        zeros: Sequence[tuple[int, int]] = (),
        ordered: bool = False,
        overlay: bool = False,
    ) -> ImmutableCap:
        """Store a new version of a file (see IObjectStore and
        :mod:`gateway.objects.chunk_update`): files up to a chunk as one object, larger
        ones as a chunk tree sharing what did not change with ``base``.

        With ``overlay`` (a client waits), a small change to a tree is carried in the new
        cap and stores nothing (:mod:`gateway.objects.overlay`); otherwise, and when it
        does not fit, a base's overlay is stored in the new tree.

        Small objects (patches, nodes, small extents) are encoded first and stored
        together at the end (one request of each kind per server at once, one flush on
        each, one wait): an fsync of a few changed bytes waits once for the grid, not once
        per level of the tree.

        ``ordered`` (on an :attr:`ordered` grid): answered once every object is written,
        not once durable; the caller makes them durable (a publish, :meth:`sync`), and
        :meth:`barrier` does before a journal naming them is flushed."""
        if isinstance(base, ChunkedCap):
            if overlay:
                laid = await laid_over(base, size, changed, zeros, read)
                if laid is not None:
                    if progress is not None:  # (the changed bytes are stored, in the cap)
                        progress(sum(b - a for a, b in changed))
                    return laid
            base, changed = folded(base, changed)
        uploader = self.uploader()
        uploader.ordered = ordered
        stores: list[Coroutine[Any, Any, None]] = []

        async def upload(data: bytes) -> LiteralCap | ImmutableReadCap:
            if len(data) > DEFERRED_STORE_BYTES:
                return await uploader.upload_bytes(data)
            if len(stores) >= MAX_DEFERRED:
                await _stored(stores)
            return await uploader.upload_bytes(data, stores)

        update = TreeUpdate(
            upload,
            self.servers,
            self.nodes,
            read,
            self.chunk_size,
            self.fanout,
            self.parallel_uploads,
            progress,
            self.recent_extents.put,
        )
        try:
            cap = await update.run(base, size, changed, zeros)
        except BaseException:
            try:
                await _stored(stores)  # run whatever happens (they hold their indexes)
            except Exception:
                pass
            raise
        await _stored(stores)  # raises the first failure, once all have settled
        if ordered:
            self._ordered_made += 1  # (before anything can name its objects)
        return cap

    def reader(self, cap: ImmutableCap, read_ahead: bool = True) -> IFileReader:
        """Random-access reads of an immutable file (of a chunked file too; without
        ``read_ahead``, the extents after a sequential read are not fetched before asked)."""
        servers = self.servers
        if isinstance(cap, ChunkedCap):
            extents, recent = self.extents, self.recent_extents

            def open_extent(extent: LiteralCap | ImmutableReadCap) -> IFileReader:
                if isinstance(extent, LiteralCap):
                    return FileReader(extent, servers)
                kept = recent.get(extent)
                if kept is not None:
                    return KeptExtent(kept)
                return FileReader(extent, servers, reader=extents.reader(extent, servers))

            # Without read-ahead (an upload's or an fsync's reads of what it stores again)
            # an extent is read once: two are kept, not eight of up to 1 MiB each.
            readers = 8 if read_ahead else 2
            tree = ChunkTreeReader(
                cap.tree, servers, self.nodes, open_extent, readers=readers, ahead=2 * read_ahead
            )
            return OverlaidReader(tree, cap.overlay) if cap.overlay else tree
        if isinstance(cap, ImmutableReadCap):  # read again soon (tar, then diff): opened once
            # A change to a file of one chunk (stored as one extent) merges with what it kept;
            # a client's read of such a file reads the grid, as it always has.
            kept = None if read_ahead else self.recent_extents.get(cap)
            if kept is not None:
                return KeptExtent(kept)
            return FileReader(cap, servers, reader=self.extents.reader(cap, servers))
        return FileReader(cap, servers)

    async def read_mutable(self, cap: MutableWriteCap | MutableReadCap) -> bytes:
        """The current contents of a mutable file."""
        data, _ = await self.mutable_client().read(cap)
        return data

    async def replace_mutable(self, cap: MutableWriteCap, data: bytes) -> None:
        """Make ``data`` the contents of a mutable file."""
        await self.mutable_client().modify(cap, lambda _old: data)

    async def create_empty_directory(self, cap: DirectoryWriteCap) -> None:
        """Create, empty, the directory a capability names (an account's first root)."""
        await self.mutable_client().create(pack_contents({}), cap.node)

    async def create_directory(self) -> DirectoryNode:
        """A new, empty directory."""
        return await DirectoryNode.create(
            self.mutable_client(),
            clock=self.clock,
            write_back=self.write_back,
            write_through=self.write_through,
            new_caps=self.new_directory_caps.take,
        )

    def directory(self, cap: DirectoryWriteCap | DirectoryReadCap | str) -> DirectoryNode:
        """An existing directory (no I/O)."""
        return DirectoryNode.open(
            self.mutable_client(),
            cap,
            clock=self.clock,
            write_back=self.write_back,
            write_through=self.write_through,
            new_caps=self.new_directory_caps.take,
        )


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
