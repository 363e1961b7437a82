"""The object store: one place that knows the grid's servers, secrets and encoding.

Frontends and the CLI get files and directories from here instead of building
uploaders, readers and mutable clients themselves. The server list is asked
for on every operation, so servers that join or leave are used at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, BinaryIO, TypeVar

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
from gateway.objects.file_reader import FileReader
from gateway.objects.immutable_format import EncodingParams
from gateway.objects.interfaces import IFileReader, IObjectStore
from gateway.objects.listings import KeptListings
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
        #: The entries every directory node keeps made, counted together (and bounded).
        self.listings = KeptListings()
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
            listings=self.listings,
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
            listings=self.listings,
            new_caps=self.new_directory_caps.take,
        )
