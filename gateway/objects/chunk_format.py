"""The nodes of a chunk tree: how a large file is stored as a tree of immutable chunks.

A file larger than one chunk is a tree. Its leaves are *extents*: consecutive
pieces of the file, each at most one chunk long, each stored as an immutable
object of its own (CHK, convergent, or literal when tiny). Nodes are immutable
(CHK, convergent) objects too, each holding the caps of its children in file
order; the file's :class:`~gateway.objects.caps.ChunkedCap` names the root node
and the file's size, and an inner node names each child node by the ChunkedCap
of its subtree. Nothing is ever changed in place: a new version of the file
stores its new extents and the nodes above them, and shares every other node
and extent with the version it came from (same caps, same storage indexes).

A node is the CBOR encoding of ::

    [version, height, fanout, count, [entry, ...]]     (a 6th item may pad)

Version 1, or 2 for a leaf node with a patch kept inline (longer than a literal)
or kept in a pack (older gateways refuse those by their version, not by a damaged
entry).

- ``height`` is 0 for a node whose entries are extents, h for one whose entries
  are nodes of height h - 1;
- ``fanout`` is the most entries a node of this tree holds (every node of one
  tree has the same);
- ``count`` is the number of extents under the node;
- an entry is ``[0, data]`` (a literal extent: its bytes), ``[1, key, ueb hash,
  k, n, size]`` (an extent stored as an immutable object: its CHK read cap's
  fields), ``[3, extent, [[offset, patch], ...]]`` (a *patched extent*: an
  extent entry of kind 0 or 1, and patches, each an entry of kind 0 or 1 laid
  over the extent's bytes at ``offset``, in order, the later over the earlier;
  a patch of kind 0 may hold up to :data:`INLINE_PATCH_BYTES` in a node of
  version 2, at most :data:`INLINE_NODE_BYTES` of them in one node; a node of
  version 2 may also name a patch ``[4, key, ueb hash, k, n, size, offset,
  length]``: ``length`` bytes at ``offset`` of a *pack*, an immutable object
  holding several patches) or, in inner
  nodes, ``[2, key, ueb hash, k, n, node size, size]`` (a child
  node: the fields of its ChunkedCap). A node of height 1 may also hold ``[5,
  leaf]`` (a leaf node kept inline: its encoding, at most
  :data:`INLINE_LEAVES_BYTES` of them in one node) and ``[6, key, ueb hash, k, n,
  node size, size, index]`` (a leaf kept inline in another node: entry ``index``
  of the node stored as that object), and then says version 3. An entry's length is the size its cap
  names (a patched extent's, its extent's); the entries' lengths add up to the
  node's size.
- Version 4 (:data:`PATCHES_VERSION`) raises two limits: a leaf's extent may
  carry up to :data:`MAX_PATCHES` patches (8 before), a node of height 1 may keep
  up to :data:`INLINE_LEAVES_BYTES` of leaves (64 KiB before). A node past either
  old limit says 4 (a leaf otherwise as version 2, a node of height 1 as 3), and so
  does a node of height 1 keeping such a leaf; the others say what they said.
- The optional 6th item is a byte string of zeros, present only to make a node
  longer than the literal threshold (a node is always stored on the grid).

Shape: on every level every node but the last is full (``fanout`` entries), so a
node at height h that is not the last holds ``fanout ** (h + 1)`` extents and
the position of extent number i is found by arithmetic. Readers do not rely on
this (they descend by the entries' lengths); the updater
(:mod:`gateway.objects.chunk_update`) keeps it and relies on it, and every node
read is checked against it (:func:`gateway.objects.chunk_decode.decode_node`).
"""

from __future__ import annotations

import functools
from itertools import accumulate
from typing import Any, cast

import cbor2
from attrs import field, frozen

from gateway.objects.caps import ChunkedCap, ImmutableReadCap, LiteralCap
from gateway.objects.immutable_format import LITERAL_THRESHOLD

FORMAT_VERSION = 1
"""The first item of a node (see :data:`INLINE_VERSION`)."""

INLINE_VERSION = 2
"""The first item of a node with a patch kept inline (longer than a literal) or in a pack."""

LEAVES_VERSION = 3
"""The first item of a node of height 1 keeping a leaf inline or naming one kept in another."""

PATCHES_VERSION = 4
"""The first item of a node past the limits of versions 1-3 (see the module docstring)."""

INLINE_LEAVES_BYTES = 104 * 1024
"""The most bytes of new leaf nodes one node of height 1 keeps inline (see
:class:`InlineLeaf`; a larger leaf, or one past this, is stored as an object of its own):
with the rest of the node, under the storage's logged share size (128 KiB)."""

OLD_INLINE_LEAVES_BYTES = 64 * 1024
"""The same, in nodes of versions 1-3."""

INLINE_PATCH_BYTES = 4096
"""A patch up to this long is kept in its leaf node, as a literal entry, rather than
stored as an object of its own: an fsync of a small change stores one object fewer."""

INLINE_NODE_BYTES = 16 * 1024
"""The most bytes of patches one leaf node keeps inline (rewriting the node costs them)."""

DEFAULT_CHUNK_SIZE = 1 << 20
"""The longest extent new versions store (see docs/performance.rst for the measurement)."""

DEFAULT_FANOUT = 128
"""Entries per node of new trees: a 4 GiB file of 1 MiB chunks is two levels of nodes."""

MAX_FANOUT = 4096
"""The largest fan-out a node may declare (bounds what one node read costs)."""

ENCODED_ENTRIES = 8192
"""Entries whose encoding is kept (about 100 bytes each, 1 KiB with patches, plus the entry
kept alive): the leaves of an 8 GiB file changed at random; more held 30+ MiB."""

MAX_PATCHES = 16
"""The most patches one extent may carry (more and it is stored again whole)."""

OLD_MAX_PATCHES = 8
"""The same, in nodes of versions 1-3."""

ExtentCap = LiteralCap | ImmutableReadCap
"""What an extent, or a patch of one, is stored as."""


@frozen(cache_hash=True)
class PackedPatch:
    """A patch stored with others in one object (a *pack*): ``size`` bytes at ``offset``."""

    pack: ImmutableReadCap
    offset: int
    size: int


Patch = ExtentCap | PackedPatch
"""What a patch is stored as: on its own (or literal), or in a pack."""


@frozen(cache_hash=True)
class PatchedExtent:
    """An extent with patches laid over it: a small change to a large extent stores the
    changed bytes only (see :mod:`gateway.objects.chunk_update`)."""

    extent: ExtentCap
    patches: tuple[tuple[int, Patch], ...]
    """(offset in the extent, the patch's bytes), the later over the earlier."""
    inline_bytes: int = field(init=False, eq=False, repr=False)
    """Bytes of patches kept in the node (literals longer than a literal cap's); counted
    once, as every update of the node asks for it of every entry."""
    in_version_2: bool = field(init=False, eq=False, repr=False)
    """Whether a node holding it says version 2 at least (a patch inline or packed)."""

    def __attrs_post_init__(self) -> None:
        inline = sum(patch.size for _, patch in self.patches if is_inline(patch))
        object.__setattr__(self, "inline_bytes", inline)
        packed = any(isinstance(patch, PackedPatch) for _, patch in self.patches)
        object.__setattr__(self, "in_version_2", packed or inline > 0)

    @property
    def size(self) -> int:
        """The extent's length (patches never lengthen it)."""
        return self.extent.size

    @property
    def patched_bytes(self) -> int:
        """Bytes the patches hold."""
        return sum(patch.size for _, patch in self.patches)

    def parts(self) -> tuple[ExtentCap, ...]:
        """The objects it is made of: the extent, then the patches (each pack once)."""
        objects = (p.pack if isinstance(p, PackedPatch) else p for _, p in self.patches)
        return (self.extent, *dict.fromkeys(objects))


def is_inline(patch: Patch) -> bool:
    """Whether a patch is kept in its node although longer than a literal cap's bytes."""
    return isinstance(patch, LiteralCap) and patch.size > LITERAL_THRESHOLD


def inline_bytes(entry: object) -> int:
    """Bytes of patches an entry keeps in its node (0 but for a patched extent's)."""
    return entry.inline_bytes if isinstance(entry, PatchedExtent) else 0


@frozen(eq=False)
class InlineLeaf:
    """A new leaf node its parent keeps inline (entry kind 5) rather than naming it by
    the cap of an object of its own, so that an update of one leaf of a tree of height 1
    stores one object, the parent with the leaf in it. Once the parent is stored, the
    leaf is named by a part cap (:func:`name_inline`) and later versions name it so
    (entry kind 6) while it is unchanged."""

    node: Node
    encoded: bytes

    @property
    def size(self) -> int:
        """Bytes under the leaf."""
        return self.node.size


LeafEntry = ExtentCap | PatchedExtent
"""What a leaf node names."""

ChildCap = LeafEntry | ChunkedCap | InlineLeaf
"""What a node entry names: an extent or, in an inner node, a child node (a new leaf to
keep inline, while an update builds its parent)."""


@frozen
class Node:
    """One decoded node: its place in the tree and its children's caps, in file order."""

    height: int
    fanout: int
    count: int
    entries: tuple[ChildCap, ...]
    inline: dict[int, Node] = field(factory=dict, repr=False, eq=False)
    """The leaf nodes this node (of height 1) keeps inline, by entry index: its entries
    name them by part caps (:attr:`~gateway.objects.caps.ChunkedCap.part`)."""
    ends: tuple[int, ...] = field(init=False, repr=False, eq=False)
    """Where each entry ends, from the node's start (cumulative lengths)."""
    parts: tuple[bytes, ...] | None = field(init=False, default=None, repr=False, eq=False)
    """A leaf's entries' encodings, once encoded (:func:`encode_node`): a leaf an update
    makes of it (the same entries but for the changed ones) takes them, not encoding
    again the hundred-odd entries that did not change."""

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "ends", tuple(accumulate([e.size for e in self.entries])))

    @property
    def size(self) -> int:
        """Bytes under the node."""
        return self.ends[-1] if self.ends else 0

    def child_count(self, index: int) -> int:
        """Extents under entry ``index`` (1 for an extent)."""
        if self.height == 0:
            return 1
        capacity = self.fanout**self.height
        return min(capacity, self.count - index * capacity)


def name_inline(node: Node, cap: ChunkedCap) -> Node:
    """``node`` as stored under ``cap``: each leaf it keeps inline named by its part cap."""
    if not any(isinstance(entry, InlineLeaf) for entry in node.entries):
        return node
    entries: list[ChildCap] = []
    inline: dict[int, Node] = {}
    for i, entry in enumerate(node.entries):
        if isinstance(entry, InlineLeaf):
            inline[i] = entry.node
            entry = ChunkedCap(cap.node, entry.size, i)
        entries.append(entry)
    return Node(node.height, node.fanout, node.count, tuple(entries), inline)


def capacity(fanout: int, height: int) -> int:
    """Extents a full node of ``height`` holds."""
    return fanout ** (height + 1)


def height_for(count: int, fanout: int) -> int:
    """The height of the root of a tree of ``count`` extents (at least 0)."""
    height = 0
    while capacity(fanout, height) < count:
        height += 1
    return height


def _entry(cap: ChildCap | PackedPatch) -> list[Any]:
    if isinstance(cap, InlineLeaf):
        return [5, cap.encoded]
    if isinstance(cap, PackedPatch):
        pack = cap.pack
        return [4, pack.key, pack.ueb_hash, pack.k, pack.n, pack.size, cap.offset, cap.size]
    if isinstance(cap, PatchedExtent):
        return [3, _entry(cap.extent), [[offset, _entry(patch)] for offset, patch in cap.patches]]
    if isinstance(cap, LiteralCap):
        return [0, cap.data]
    if isinstance(cap, ImmutableReadCap):
        return [1, cap.key, cap.ueb_hash, cap.k, cap.n, cap.size]
    node = cap.node
    if cap.part is not None:
        return [6, node.key, node.ueb_hash, node.k, node.n, node.size, cap.size, cap.part]
    return [2, node.key, node.ueb_hash, node.k, node.n, node.size, cap.size]


def _version(node: Node, patched_v2: bool, past_old_limits: bool, names_leaves: bool) -> int:
    """The version a node says: the oldest that can hold it (module docstring)."""
    if past_old_limits:
        return PATCHES_VERSION
    if node.height == 0 and patched_v2:
        return INLINE_VERSION
    if node.height == 1 and names_leaves:
        return LEAVES_VERSION
    return FORMAT_VERSION


@functools.lru_cache(maxsize=ENCODED_ENTRIES)
def _kept_entry(cap: ChildCap) -> bytes:
    return cast(bytes, cbor2.dumps(_entry(cap)))


def _array(length: int) -> bytes:
    """The head of a CBOR array of ``length`` items."""
    if length < 24:
        return bytes([0x80 | length])
    for head, size in ((0x98, 1), (0x99, 2), (0x9A, 4)):
        if length < 1 << (8 * size):
            return bytes([head]) + length.to_bytes(size, "big")
    raise ValueError("too many entries for a node")


def encode_node(node: Node, like: Node | None = None) -> bytes:
    """The bytes stored for a node (longer than a literal, so it always goes to the grid).

    The CBOR of ``[version, height, fanout, count, [entry, ...]]`` (and the padding),
    put together from each entry's encoding. ``like``: a leaf ``node`` was made from (its
    base, or the same leaf before its patches moved into a pack); each entry that is the
    same object at the same index in ``like`` takes the encoding ``like`` kept
    (:attr:`Node.parts`), and a leaf keeps its own for the next.
    """
    # One pass over the entries, each's encoding kept but for one holding inline bytes
    # (patches, a leaf), which would make the kept encodings large. An update stores again
    # the nodes on its paths, whose entries are nearly all the same as the last time: this
    # loop is what an fsync's node costs per entry, so it calls as little as it can.
    parts: list[bytes] = []
    patched_v2 = names_leaves = past_old_limits = False
    kept, leaves_bytes = _kept_entry, 0
    before: tuple[ChildCap, ...] = ()
    known: tuple[bytes, ...] = ()
    if like is not None and like.parts is not None:
        before, known = like.entries, like.parts
    reuse = min(len(before), len(node.entries))
    for i, entry in enumerate(node.entries):
        kind = type(entry)
        if kind is PatchedExtent:
            patched = cast(PatchedExtent, entry)
            patched_v2 = patched_v2 or patched.in_version_2
            past_old_limits = past_old_limits or len(patched.patches) > OLD_MAX_PATCHES
            if i < reuse and before[i] is entry:
                parts.append(known[i])
            else:
                parts.append(cbor2.dumps(_entry(entry)) if patched.inline_bytes else kept(entry))
        elif kind is InlineLeaf:
            names_leaves, encoded = True, cast(InlineLeaf, entry).encoded
            leaves_bytes += len(encoded)
            # (a leaf's version is its encoding's second byte: a CBOR integer below 24)
            past_old_limits = past_old_limits or encoded[1] == PATCHES_VERSION
            parts.append(cbor2.dumps(_entry(entry)))
        else:
            if kind is ChunkedCap:
                names_leaves = names_leaves or cast(ChunkedCap, entry).part is not None
            parts.append(known[i] if i < reuse and before[i] is entry else kept(entry))
    if node.height == 0:
        object.__setattr__(node, "parts", tuple(parts))
    past_old_limits = past_old_limits or leaves_bytes > OLD_INLINE_LEAVES_BYTES
    version = _version(node, patched_v2, past_old_limits, names_leaves)
    head = [version, node.height, node.fanout, node.count]
    entries = _array(len(node.entries)) + b"".join(parts)
    data = _array(5) + b"".join(cbor2.dumps(item) for item in head) + entries
    if len(data) <= LITERAL_THRESHOLD:
        data = cbor2.dumps([*head, cbor2.loads(entries), bytes(LITERAL_THRESHOLD + 1 - len(data))])
    return data
