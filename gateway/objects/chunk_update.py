"""Storing a new version of a file as a chunk tree, at the cost of what changed.

The new version's extents (see :mod:`gateway.objects.chunk_format`) are the
base version's, in order, with three kinds of change:

- an extent wholly outside the changed ranges and below the new end is reused
  (same cap, same position);
- an extent that changed ranges touch is *patched* when they are small: the
  changed ranges inside it (those closer than PATCH_GAP joined, :mod:`.patch_plan`) are ``read``
  and stored as patches laid over it (:class:`~.chunk_format.PatchedExtent`;
  a patch of at most 4 KiB is kept in the leaf node, :mod:`.inline_patches`),
  while its patches, old and new, hold at most 1/PATCHED_SHARE of it and number
  at most MAX_PATCHES; otherwise it is stored again whole, with the same
  boundaries (its new bytes ``read`` of its range, its patches folded in);
- the *tail*, from the first extent that truncation cuts or drops (or from the
  base's end) to the new end, is stored as new extents of one chunk each, the
  last one shorter.

Appends would leave a small extent per append; the tail therefore starts earlier
when the small extents (shorter than a chunk) before it break this rule: *every
small extent at the end of the file is longer than all the bytes after it*. The
earliest small extent that is not is stored again together with everything after
it. So the small extents at the end at most halve in length one after the other
(there are at most log2(chunk / smallest append) + 1 of them), and a byte stored
again that way lands in an extent at least twice as long as the one it was in:
appending in pieces of ``a`` bytes stores each byte at most 1 + log2(chunk / a)
times (with 1 MiB chunks and 4 KiB appends, at most 9 times; in practice about
half that), the cost of an append stays close to the appended bytes, and the
number of extents, hence of nodes, stays what the file's size needs.

Because the extent list changes only at the tail, the tree keeps its shape
(every node but the last on a level full) by position alone: a node whose
extents are all reused, in the same positions, is reused whole (same cap)
without even being read. An update therefore reads the nodes on the paths to
the changed extents and the tail, and stores the changed extents plus one node
per level per changed path.

A base that is a literal or single immutable object of at most a chunk is one
extent. A single immutable object larger than a chunk (stored before chunk
trees existed) cannot be an extent: its first update stores the whole file
again as chunks, once.

Extents are stored several at once (``parallel``, each holding at most one
chunk in memory), in file order; an extent identical to one being stored at the
same moment, or to one of the last few stored, takes that one's cap instead of
being encoded again (identical extents have the same cap, and are stored once;
two uploads of one storage index at once would also collide on the servers).
Memory stays at about ``3 * parallel`` chunks.

An extent that lies in the ranges the caller says are zeros (a sparse file's
holes) is not read: the first of each length is stored, and the others take its
cap. A 10 GiB image file made with ``truncate`` costs one chunk's encoding, not
10 GiB of reads and comparisons.
"""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredSemaphore

from gateway.grid.interfaces import IStorageClient
from gateway.objects.byte_ranges import Ranges, normalize, overlap
from gateway.objects.caps import ChunkedCap, ImmutableCap, ImmutableReadCap, LiteralCap
from gateway.objects.chunk_format import (
    DEFAULT_FANOUT,
    INLINE_LEAVES_BYTES,
    INLINE_NODE_BYTES,
    INLINE_PATCH_BYTES,
    ChildCap,
    ExtentCap,
    InlineLeaf,
    LeafEntry,
    Node,
    PatchedExtent,
    capacity,
    encode_node,
    height_for,
    name_inline,
)
from gateway.objects.chunked import NodeCache
from gateway.objects.concurrency import owned, shared, start
from gateway.objects.errors import CorruptObject
from gateway.objects.inline_patches import kept_inline, packed, shared_pack, within_budget
from gateway.objects.patch_plan import plan_patches

Read = Callable[[int, int], Awaitable[bytes]]
Upload = Callable[[bytes], Coroutine[Any, Any, LiteralCap | ImmutableReadCap]]

MAX_TAIL_WALK = 64
"""Most small extents looked at before the tail (the rule keeps far fewer)."""


class TreeUpdate:
    """One new version of one file (see the module docstring)."""

    def __init__(
        self,
        upload: Upload,
        servers: Sequence[IStorageClient],
        nodes: NodeCache,
        read: Read,
        chunk_size: int,
        fanout: int = DEFAULT_FANOUT,
        parallel: int = 4,
        progress: Callable[[int], None] | None = None,
        stored: Callable[[ImmutableReadCap, bytes], None] | None = None,
    ):
        self._upload = upload
        #: Told of each extent stored and its plaintext (see :mod:`.extent_cache`).
        self._stored = stored
        self._servers = servers
        self._nodes = nodes
        self._read = read
        self.chunk_size = chunk_size
        self.fanout = fanout
        self._parallel = max(1, parallel)
        self._slots = DeferredSemaphore(self._parallel)
        self._progress = progress
        self._in_flight: list[tuple[bytes, Deferred[ExtentCap]]] = []
        self._changed: Ranges = []
        self._zeros: Ranges = []
        #: The zero extent of each length, stored (or being stored) by this update.
        self._zero_extents: dict[int, Deferred[ExtentCap]] = {}
        # The base as a tree: its root (a stored node, or one extent as a node of its own).
        self._root: ChunkedCap | Node | None = None
        self._base_height = self._base_count = self._base_size = 0
        self._replaced: dict[int, tuple[int, int]] = {}
        self._replaced_order: list[int] = []  # its keys, in order
        self._tail: list[tuple[int, int]] = []
        self._keep = 0  # extents before the tail
        self._made_of: dict[int, tuple[Node, Node | None]] = {}  # new leaves by id: its base
        self.stored_bytes = 0
        """Bytes of extents this update stored (nodes not counted)."""
        self.stored_nodes = 0
        """Nodes this update stored."""

    async def run(
        self,
        base: ImmutableCap | None,
        size: int,
        changed: Sequence[tuple[int, int]],
        zeros: Sequence[tuple[int, int]] = (),
    ) -> ImmutableCap:
        """Store the new version; its cap (the base's own when nothing changed). ``zeros``:
        ranges of the new contents known to be zeros (not read)."""
        base_size = self._base_size = await self._open_base(base)
        self._changed = normalize([*changed, (base_size, size)], size)
        self._zeros = normalize(zeros, size)
        if size <= self.chunk_size:
            return await self._store_extent(0, size)
        cut = min(size, base_size)
        self._keep, tail_start = await self._tail_start(cut, size)
        await self._find_replaced(tail_start)
        self._tail = [
            (at, min(self.chunk_size, size - at)) for at in range(tail_start, size, self.chunk_size)
        ]
        count = self._keep + len(self._tail)
        height = height_for(count, self.fanout)
        ref = await self._base_ref(height)
        root = await self._build(height, 0, count, ref)
        assert isinstance(root, ChunkedCap)
        if root.part is not None:  # a leaf kept in a node of the base: a file names an object
            root = await self._store_node(await self._node(root, 0, count))
        return root

    # -- the base ---------------------------------------------------------------------

    async def _open_base(self, base: ImmutableCap | None) -> int:
        """Learn the base's shape; the size of what may be reused (0 when nothing can be)."""
        if isinstance(base, ChunkedCap):
            root = await self._nodes.load(base, self._servers)
            self._root, self.fanout = base, root.fanout
            self._base_height, self._base_count = root.height, root.count
            return base.size
        if base is not None and 0 < base.size <= self.chunk_size:
            self._root = Node(0, self.fanout, 1, (base,))
            self._base_height, self._base_count = 0, 1
            return base.size
        return 0

    async def _node(self, ref: ChunkedCap | Node, height: int, count: int) -> Node:
        if isinstance(ref, Node):
            return ref
        return await self._nodes.load(ref, self._servers, height, count)

    async def _leaf(
        self, offset: int | None = None, index: int | None = None
    ) -> tuple[int, int, Node]:
        """The base leaf node holding byte ``offset`` (or extent ``index``): its start offset,
        its first extent's index, and the node."""
        assert self._root is not None
        node = await self._node(self._root, self._base_height, self._base_count)
        begin = first = 0
        while node.height > 0:
            span = self.fanout**node.height
            if index is not None:
                i = (index - first) // span
            else:
                assert offset is not None
                i = bisect.bisect_right(node.ends, offset - begin)
            child = node.entries[i]
            if not isinstance(child, ChunkedCap):
                raise CorruptObject("a chunk tree's inner node names an extent")
            begin += node.ends[i - 1] if i else 0
            first += i * span
            node = await self._nodes.load(
                child, self._servers, node.height - 1, node.child_count(i)
            )
        return begin, first, node

    async def _extent(
        self, offset: int | None = None, index: int | None = None
    ) -> tuple[int, int, int]:
        """The base extent holding ``offset`` (or numbered ``index``): (index, start, length)."""
        begin, first, leaf = await self._leaf(offset, index)
        if index is not None:
            i = index - first
        else:
            assert offset is not None
            i = bisect.bisect_right(leaf.ends, offset - begin)
        start_at = begin + (leaf.ends[i - 1] if i else 0)
        return first + i, start_at, leaf.entries[i].size

    async def _tail_start(self, cut: int, size: int) -> tuple[int, int]:
        """How many base extents stay before the tail, and where the tail starts."""
        if self._root is None or cut == 0:
            return 0, 0
        keep, start_at = self._base_count, cut
        if cut < self._base_size:
            keep, start_at, _ = await self._extent(offset=cut)
        if size <= start_at:
            return keep, start_at
        # The small extents before the tail: the earliest not longer than all after it joins.
        running, j, walked = size - start_at, keep, 0
        chosen = (keep, start_at)
        while j > 0 and walked < MAX_TAIL_WALK:
            _, at, length = await self._extent(index=j - 1)
            if length >= self.chunk_size:
                break
            if length <= running:
                chosen = (j - 1, at)
            running += length
            j -= 1
            walked += 1
        return chosen

    async def _find_replaced(self, tail_start: int) -> None:
        """The base extents before the tail that a changed range touches."""
        for a, b in self._changed:
            position = a
            while position < min(b, tail_start):
                index, at, length = await self._extent(offset=position)
                self._replaced[index] = (at, length)
                position = at + length
        self._replaced_order = sorted(self._replaced)

    async def _base_ref(self, height: int) -> ChunkedCap | Node | None:
        """The base's node at (``height``, 0), when the base has one."""
        ref = self._root
        if ref is None or height > self._base_height:
            return None
        level, count = self._base_height, self._base_count
        while level > height:
            node = await self._node(ref, level, count)
            first = node.entries[0]
            assert isinstance(first, ChunkedCap)
            ref, count = first, node.child_count(0)
            level -= 1
        return ref

    # -- the new tree -----------------------------------------------------------------

    def _replaced_in(self, lo: int, hi: int) -> list[int]:
        """The indexes of the replaced base extents in ``[lo, hi)``, in order."""
        order = self._replaced_order
        return order[bisect.bisect_left(order, lo) : bisect.bisect_left(order, hi)]

    def _reused(self, ref: ChunkedCap | Node | None, height: int, j: int, count: int) -> bool:
        """Whether the base's node ``ref`` at (``height``, ``j``) is the new one: it is
        stored, and nothing under it changed or moved (reused without being read)."""
        span = capacity(self.fanout, height)
        lo, hi = j * span, min((j + 1) * span, count)
        return (
            isinstance(ref, ChunkedCap)
            and hi == min((j + 1) * span, self._base_count)
            and hi <= self._keep
            and not self._replaced_in(lo, hi)
        )

    async def _build(
        self, height: int, j: int, count: int, ref: ChunkedCap | Node | None, leaf: bool = False
    ) -> ChildCap | Node:
        """The new node at (``height``, ``j``) of a tree of ``count`` extents (with ``leaf``,
        a new leaf node is returned unstored: its parent keeps it inline or stores it).
        Its cost is in the entries that changed, but for copying the node's list."""
        if self._reused(ref, height, j, count):
            assert isinstance(ref, ChunkedCap)
            return ref
        span = capacity(self.fanout, height)
        lo, hi = j * span, min((j + 1) * span, count)
        base_hi = min((j + 1) * span, self._base_count)
        base = await self._node(ref, height, base_hi - lo) if ref is not None else None
        entries: list[Any] = []  # ChildCap, or at ``pending`` a Deferred of one
        pending: list[int] = []
        if height == 0:
            kept = max(0, min(hi, self._keep) - lo)  # base extents in their places
            if kept:
                assert base is not None
                entries = list(base.entries[:kept])
            for i in self._replaced_in(lo, lo + kept):
                old = entries[i - lo]
                assert not isinstance(old, ChunkedCap | InlineLeaf)
                entries[i - lo] = start(self._change_extent(*self._replaced[i], old))
                pending.append(i - lo)
            for i in range(lo + kept, hi):
                pending.append(len(entries))
                entries.append(start(self._store_extent(*self._tail[i - self._keep])))
        else:
            child_span = capacity(self.fanout, height - 1)
            leaves: list[int] = []  # entries that are new leaves, placed together at the end
            for c in range(-(-(hi - lo) // child_span)):
                child: ChunkedCap | Node | None = None
                if base is not None and c < len(base.entries):
                    found = base.entries[c]
                    assert isinstance(found, ChunkedCap)
                    child = found
                elif height - 1 == self._base_height and j * self.fanout + c == 0:
                    child = self._root
                if self._reused(child, height - 1, j * self.fanout + c, count):
                    entries.append(child)  # (no coroutine for each unchanged child)
                    continue
                built = await self._build(height - 1, j * self.fanout + c, count, child, True)
                if isinstance(built, Node):
                    leaves.append(len(entries))
                entries.append(built)
            if leaves:
                placed = await self._place_leaves([entries[n] for n in leaves])
                for n, new_leaf in zip(leaves, placed, strict=True):
                    entries[n] = new_leaf
        try:
            for n in pending:
                entries[n] = await entries[n]
        except BaseException:
            for n in pending:
                if isinstance(entries[n], Deferred):
                    entries[n].addErrback(lambda _: None)  # nobody awaits the others now
            raise
        caps: Sequence[ChildCap] = entries
        if height == 0 and not leaf:  # (a new leaf is put within budget by its parent)
            caps = await within_budget(caps, self._upload)
        node = Node(height, self.fanout, hi - lo, tuple(caps))
        if height == 0 and leaf:
            self._made_of[id(node)] = (node, base)
            return node
        return await self._store_node(node, like=base if height == 0 else None)

    async def _place_leaves(self, leaves: list[Node]) -> list[ChildCap]:
        """The new leaves of one node of height 1, each kept inline while there is room
        (INLINE_LEAVES_BYTES in all, in order) or stored as an object of its own; their
        inline patches within budget together (:func:`.inline_patches.shared_pack`)."""
        like = [self._made_of.pop(id(leaf))[1] for leaf in leaves]
        encoded: list[bytes | None] = [None] * len(leaves)
        if all(kept_inline(leaf.entries) <= INLINE_NODE_BYTES for leaf in leaves):  # sizes
            encoded = [encode_node(leaf, base) for leaf, base in zip(leaves, like, strict=True)]
        room = INLINE_LEAVES_BYTES
        if shared_pack([leaf.entries for leaf in leaves], [len(e or b"") for e in encoded], room):
            moved = await packed([leaf.entries for leaf in leaves], self._upload)
            for n, entries in enumerate(moved):
                if entries is not leaves[n].entries:
                    if leaves[n].parts is not None:  # (encoded above: all but the moved)
                        like[n] = leaves[n]
                    leaves[n] = Node(0, self.fanout, leaves[n].count, tuple(entries))
                    encoded[n] = None
        placed: list[ChildCap] = []
        for n, leaf in enumerate(leaves):
            data = encoded[n] or encode_node(leaf, like[n])
            if len(data) <= room:
                room -= len(data)
                placed.append(InlineLeaf(leaf, data))
            else:
                placed.append(await self._store_node(leaf, data))
        return placed

    async def _store_node(
        self, node: Node, encoded: bytes | None = None, like: Node | None = None
    ) -> ChunkedCap:
        stored = await self._upload(encode_node(node, like) if encoded is None else encoded)
        assert isinstance(stored, ImmutableReadCap)  # a node is longer than a literal
        cap = ChunkedCap(stored, node.size)
        self._nodes.put(cap, name_inline(node, cap))
        self.stored_nodes += 1
        return cap

    async def _store_extent(self, offset: int, length: int) -> ExtentCap:
        """Read ``[offset, offset + length)`` of the new contents and store it as an extent."""
        if length and overlap(self._zeros, offset, offset + length) == length:
            cap = await self._zero_extent(length)
        else:
            cap = await self._read_and_store(offset, length)
        if self._progress is not None:
            done = overlap(self._changed, offset, offset + length)
            if done:
                self._progress(done)
        return cap

    async def _change_extent(self, offset: int, length: int, old: LeafEntry) -> LeafEntry:
        """A base extent that changed ranges touch: the changed bytes laid over it as patches
        when they are few and small, else the extent stored again whole (which also folds
        the patches it had into it)."""
        planned = plan_patches(self._changed, offset, length, old)
        if planned is None:
            return await self._store_extent(offset, length)
        ranges, visible = planned
        pending = [start(self._store_patch(a, b)) for a, b in ranges]
        patches: list[tuple[int, ExtentCap]] = []
        try:
            for (a, _), patch in zip(ranges, pending, strict=True):
                patches.append((a - offset, await patch))
        except BaseException:
            for patch in pending:
                patch.addErrback(lambda _: None)  # nobody awaits the others now
            raise
        if self._progress is not None:
            self._progress(overlap(self._changed, offset, offset + length))
        if isinstance(old, PatchedExtent):
            return PatchedExtent(old.extent, (*visible, *patches))
        return PatchedExtent(old, tuple(patches))

    async def _store_patch(self, a: int, b: int) -> ExtentCap:
        await self._slots.acquire()
        try:
            data = await self._read_new(a, b - a)
            # A small patch stays in its leaf node (within the node's budget: _build).
            cap = LiteralCap(data) if len(data) <= INLINE_PATCH_BYTES else await self._upload(data)
            self._stored_now(cap, data)
        finally:
            self._slots.release()
        return cap

    async def _read_new(self, offset: int, length: int) -> bytes:
        """``length`` bytes of the new contents at ``offset`` (ValueError if they end short)."""
        data = bytes(await self._read(offset, length))
        if len(data) != length:
            raise ValueError(f"the new contents end at {offset + len(data)}, not {offset + length}")
        return data

    def _stored_now(self, cap: ExtentCap, data: bytes) -> None:
        """Count a stored extent or patch, and tell who keeps its plaintext."""
        self.stored_bytes += len(data)
        if self._stored is not None and isinstance(cap, ImmutableReadCap):
            self._stored(cap, data)

    async def _zero_extent(self, length: int) -> ExtentCap:
        """The extent of ``length`` zeros: stored by the first to ask, shared by the others."""
        pending = self._zero_extents.get(length)
        if pending is not None:
            return await shared(pending)
        pending = self._zero_extents[length] = start(self._store_zeros(length))
        try:
            return await owned(pending)
        except BaseException:
            if self._zero_extents.get(length) is pending:
                del self._zero_extents[length]  # the next to ask tries again
            raise

    async def _store_zeros(self, length: int) -> ExtentCap:
        await self._slots.acquire()
        try:
            cap = await self._upload(bytes(length))
        finally:
            self._slots.release()
        self.stored_bytes += length
        return cap

    async def _read_and_store(self, offset: int, length: int) -> ExtentCap:
        await self._slots.acquire()
        try:
            data = await self._read_new(offset, length)
            for other, pending in self._in_flight:
                if other == data:  # being stored, or just stored: the same cap
                    cap = await shared(pending)
                    break
            else:
                pending = start(self._upload(data))
                entry = (data, pending)
                self._in_flight.append(entry)
                try:
                    cap = await owned(pending)
                except BaseException:
                    self._in_flight.remove(entry)
                    raise
                self._stored_now(cap, data)
                # The last few stored stay comparable too (runs of zeros are common in images).
                del self._in_flight[: max(0, len(self._in_flight) - 2 * self._parallel)]
        finally:
            self._slots.release()
        return cap
