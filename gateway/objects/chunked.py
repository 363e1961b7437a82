"""Reading chunk trees: nodes fetched once and cached, byte ranges read extent by extent.

A chunked file (:mod:`gateway.objects.chunk_format`) is read by descending from
its root node by the entries' lengths to the extents a range touches; only the
nodes on those paths are fetched (and kept in a bounded :class:`NodeCache`
shared by every reader and update of one store), and each extent is read
through a reader of its own (the store's segment-caching
:class:`~gateway.objects.file_reader.FileReader`), so a random read of 4 KiB fetches
the nodes on its path and one segment. While reads are sequential the next
extents are fetched ahead, so a whole-file read keeps streaming across extents.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred
from zope.interface import implementer

from gateway.grid.interfaces import IStorageClient
from gateway.objects.caps import ChunkedCap, ImmutableReadCap, b32encode
from gateway.objects.chunk_decode import check_node, decode_holder, decode_node
from gateway.objects.chunk_format import (
    ChildCap,
    ExtentCap,
    InlineLeaf,
    LeafEntry,
    Node,
    PackedPatch,
    PatchedExtent,
)
from gateway.objects.concurrency import owned, shared, start
from gateway.objects.errors import CorruptObject
from gateway.objects.immutable import ImmutableReader
from gateway.objects.interfaces import IFileReader

OpenExtent = Callable[[ExtentCap], IFileReader]
"""Makes a reader for one extent (the store's FileReader)."""


class NodeCache:
    """Decoded chunk tree nodes by cap, least recently used dropped beyond ``capacity``.

    Two readers wanting one node at once share one fetch. A node is immutable, so
    a cached node never goes stale; nodes an update has just stored are put here
    too, so the next update of the same file reads none.
    """

    def __init__(self, capacity: int = 512):
        self.capacity = capacity
        self._nodes: OrderedDict[ChunkedCap, Node] = OrderedDict()
        self._loading: dict[ChunkedCap, Deferred[Node]] = {}
        self.fetched = 0
        """Nodes read from the grid (for tests and the benchmark)."""

    def put(self, cap: ChunkedCap, node: Node) -> None:
        """Remember a node (one just stored, or just read), and the leaves it keeps inline."""
        for index, leaf in node.inline.items():
            self._remember(ChunkedCap(cap.node, leaf.size, index), leaf)
        self._remember(cap, node)

    def _remember(self, cap: ChunkedCap, node: Node) -> None:
        self._nodes[cap] = node
        self._nodes.move_to_end(cap)
        while len(self._nodes) > self.capacity:
            self._nodes.popitem(last=False)

    async def load(
        self,
        cap: ChunkedCap,
        servers: Sequence[IStorageClient],
        height: int | None = None,
        count: int | None = None,
    ) -> Node:
        """The node ``cap`` names, checked (see :func:`decode_node`); from the grid if need be."""
        cap = cap.tree  # (a version with an overlay has its tree's root)
        node = self._nodes.get(cap)
        if node is None:
            loading = self._loading.get(cap)
            if loading is None:
                loading = self._loading[cap] = start(self._fetch(cap, servers))
                loading.addBoth(self._loaded, cap)
                node = await owned(loading)
            else:
                node = await shared(loading)
        else:
            self._nodes.move_to_end(cap)
        check_node(node, cap, height, count)
        return node

    def _loaded(self, result: object, cap: ChunkedCap) -> object:
        del self._loading[cap]
        return result

    async def _fetch(self, cap: ChunkedCap, servers: Sequence[IStorageClient]) -> Node:
        data = await ImmutableReader(cap.node, servers).read(0, cap.node.size)
        self.fetched += 1
        if cap.part is None:
            node = decode_node(data, cap)
            self.put(cap, node)
            return node
        holder = decode_holder(data, cap.node)  # a leaf kept inline: checked by load()
        self.put(ChunkedCap(cap.node, holder.size), holder)
        leaf = holder.inline.get(cap.part)
        if leaf is None:
            raise CorruptObject(
                f"the chunk tree node with storage index {b32encode(cap.storage_index)} is"
                f" damaged: its entry {cap.part} keeps no leaf inline"
            )
        return leaf


class OpenedExtents:
    """Readers of immutable objects (extents of chunked files, and whole small files) that
    have opened their shares, by cap, least recently used dropped beyond ``capacity``.

    Opening an object lists its shares on the servers and reads and checks each
    share's header, hash chain and URI extension block: several round trips, more
    than reading a 4 KiB piece of it. Random reads over a large file touch more
    extents than a tree reader keeps readers for, and a small file is read again
    soon (``tar`` after ``cp``, then ``diff``), so the opened readers (a few
    hundred bytes each, no data) are kept here, shared by every reader of one
    store. A reader is reused only on the same servers and while
    :meth:`~gateway.objects.immutable.ImmutableReader.reusable`.
    """

    def __init__(self, capacity: int = 2048):
        self.capacity = capacity
        self._readers: OrderedDict[ImmutableReadCap, ImmutableReader] = OrderedDict()

    def reader(
        self, extent: ImmutableReadCap, servers: Sequence[IStorageClient], batch: int = 8
    ) -> ImmutableReader:
        """A reader of ``extent`` on ``servers``: the one kept, or a new one (then kept)."""
        reader = self._readers.get(extent)
        if reader is not None and reader.reusable() and list(reader.servers) == list(servers):
            self._readers.move_to_end(extent)
            return reader
        reader = self._readers[extent] = ImmutableReader(extent, servers, batch_segments=batch)
        self._readers.move_to_end(extent)
        while len(self._readers) > self.capacity:
            self._readers.popitem(last=False)
        return reader


async def node_children(
    cap: ChunkedCap, servers: Sequence[IStorageClient], nodes: NodeCache | None = None
) -> tuple[ExtentCap | ChunkedCap, ...]:
    """The objects a node names: its child nodes (ChunkedCaps) or its extents (a patched
    extent's extent and patches, each an object to check, repair and keep leased).

    A leaf kept inline has no object of its own: its objects are named in its stead,
    and, for one kept in another node, that node's object (an immutable object here: the
    rest of that node belongs to another version, and is not walked)."""
    nodes = nodes or NodeCache(1)
    node = await nodes.load(cap, servers)
    children: list[ExtentCap | ChunkedCap] = []

    def add(entries: Sequence[ChildCap]) -> None:
        for entry in entries:
            if isinstance(entry, PatchedExtent):
                children.extend(entry.parts())
            else:
                assert not isinstance(entry, InlineLeaf)  # (a stored node names them by caps)
                children.append(entry)

    for index, entry in enumerate(node.entries):
        if not isinstance(entry, ChunkedCap) or entry.part is None:
            add((entry,))
        elif entry.node == cap.node and entry.part in node.inline:
            add(node.inline[entry.part].entries)
        else:
            children.append(entry.node)
            add((await nodes.load(entry, servers, 0, node.child_count(index))).entries)
    return tuple(children)


def range_end(offset: int, length: int, size: int) -> int:
    """Where a read of ``length`` bytes at ``offset`` of ``size`` bytes ends (ValueError for
    a negative offset or length)."""
    if offset < 0 or length < 0:
        raise ValueError("offset and length must not be negative")
    return min(offset + length, size)


@implementer(IFileReader)
class PatchedReader:
    """Reads of a patched extent: its extent's bytes with the patches laid over them, in
    order (a range a patch covers whole is not read from the extent, nor from the patches
    before that one)."""

    def __init__(self, extent: PatchedExtent, open_extent: OpenExtent):
        self.size = extent.size
        self._extent = extent
        self._parts: dict[ExtentCap, IFileReader] = {}
        self._open_extent = open_extent

    def _open(self, part: ExtentCap) -> IFileReader:
        """The reader of the extent or of one patch (opened once, kept with this reader)."""
        reader = self._parts.get(part)
        if reader is None:
            reader = self._parts[part] = self._open_extent(part)
        return reader

    async def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (b'' at the end)."""
        end = range_end(offset, length, self.size)
        if offset >= end:
            return b""
        patches = self._extent.patches
        covering = [i for i, (at, p) in enumerate(patches) if at <= offset and end <= at + p.size]
        if covering:  # the last patch covering the range whole: nothing before it shows
            first, data = covering[-1], bytearray(end - offset)
        else:
            base = self._open(self._extent.extent)
            first, data = 0, bytearray(await _exactly(base, offset, end - offset))
        for at, patch in patches[first:]:
            a, b = max(offset, at), min(end, at + patch.size)
            if a < b:
                if isinstance(patch, PackedPatch):  # its bytes are a range of its pack
                    reader, start_at = self._open(patch.pack), patch.offset + a - at
                else:
                    reader, start_at = self._open(patch), a - at
                data[a - offset : b - offset] = await _exactly(reader, start_at, b - a)
        return bytes(data)


async def _exactly(reader: IFileReader, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` of an object that holds them."""
    pieces, got = [], 0
    while got < length:
        piece = await reader.read(offset + got, length - got)
        if not piece:
            raise AssertionError(f"an extent ended {length - got} bytes early")
        pieces.append(piece)
        got += len(piece)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


@implementer(IFileReader)
class ChunkTreeReader:
    """Byte ranges of one chunked file (see the module docstring)."""

    def __init__(
        self,
        cap: ChunkedCap,
        servers: Sequence[IStorageClient],
        nodes: NodeCache,
        open_extent: OpenExtent,
        readers: int = 8,
        ahead: int = 2,
    ):
        self.cap = cap
        self._servers = servers
        self._nodes = nodes
        self._open_extent = open_extent
        self._capacity = max(1, readers)
        self._ahead = max(0, min(ahead, self._capacity - 2))
        self._readers: OrderedDict[LeafEntry, IFileReader] = OrderedDict()
        self._leaf: tuple[int, Node] | None = None  # the last leaf node used, and its offset
        self._last_end = -1
        self._prefetched = 0  # read-ahead has started the extents before this offset

    @property
    def size(self) -> int:
        """The file's length."""
        return self.cap.size

    async def read(self, offset: int, length: int) -> bytes:
        """Bytes at ``offset`` (clamped at the end)."""
        end = range_end(offset, length, self.size)
        if offset >= end:
            return b""
        sequential = offset == self._last_end
        self._last_end = end
        pieces: list[bytes] = []
        position = offset
        while position < end:
            begin, extent = await self._extent_at(position)
            stop = min(end, begin + extent.size)
            if sequential and self._ahead:
                self._read_ahead(begin + extent.size)
            piece = await self._reader(extent).read(position - begin, stop - position)
            if len(piece) != stop - position:
                raise AssertionError(f"an extent gave {len(piece)} bytes for {stop - position}")
            pieces.append(piece)
            position = stop
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _reader(self, extent: LeafEntry) -> IFileReader:
        reader = self._readers.get(extent)
        if reader is None:
            if isinstance(extent, PatchedExtent):
                reader = PatchedReader(extent, self._open_extent)
            else:
                reader = self._open_extent(extent)
            self._readers[extent] = reader
            while len(self._readers) > self._capacity:
                self._readers.popitem(last=False)
        else:
            self._readers.move_to_end(extent)
        return reader

    async def _extent_at(self, position: int) -> tuple[int, LeafEntry]:
        """The extent holding byte ``position``, and where it starts."""
        if self._leaf is not None:
            begin, leaf = self._leaf
            if begin <= position < begin + leaf.size:
                return self._in_leaf(begin, leaf, position)
        begin = 0
        node = await self._nodes.load(self.cap, self._servers)
        while node.height > 0:
            index = bisect.bisect_right(node.ends, position - begin)
            child = node.entries[index]
            assert isinstance(child, ChunkedCap)
            begin += node.ends[index - 1] if index else 0
            node = await self._nodes.load(
                child, self._servers, node.height - 1, node.child_count(index)
            )
        self._leaf = (begin, node)
        return self._in_leaf(begin, node, position)

    def _in_leaf(self, begin: int, leaf: Node, position: int) -> tuple[int, LeafEntry]:
        index = bisect.bisect_right(leaf.ends, position - begin)
        extent = leaf.entries[index]
        assert not isinstance(extent, ChunkedCap | InlineLeaf)
        return begin + (leaf.ends[index - 1] if index else 0), extent

    def _read_ahead(self, after: int) -> None:
        """Fetch the ``ahead`` extents from ``after`` in the background (errors are dropped:
        the read that needs them fetches them again and sees the error)."""
        if after < self._prefetched or after >= self.size:
            return
        position = after
        self._prefetched = after + 1
        start(self._fetch_ahead(position)).addErrback(lambda _: None)

    async def _fetch_ahead(self, position: int) -> None:
        for _ in range(self._ahead):
            if position >= self.size:
                return
            begin, extent = await self._extent_at(position)
            self._prefetched = begin + extent.size
            await self._reader(extent).read(0, extent.size)
            position = begin + extent.size
