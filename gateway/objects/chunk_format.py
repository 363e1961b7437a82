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
- The optional 6th item is a byte string of zeros, present only to make a node
  longer than the literal threshold (a node is always stored on the grid).

Shape: on every level every node but the last is full (``fanout`` entries), so a
node at height h that is not the last holds ``fanout ** (h + 1)`` extents and
the position of extent number i is found by arithmetic. Readers do not rely on
this (they descend by the entries' lengths); the updater
(:mod:`gateway.objects.chunk_update`) keeps it and relies on it, and every node
read is checked against it (:func:`decode_node`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from itertools import accumulate
from typing import Any, cast

import cbor2
from attrs import field, frozen

from gateway.objects.caps import ChunkedCap, ImmutableReadCap, LiteralCap, b32encode
from gateway.objects.crypto import HASH_SIZE, KEY_SIZE
from gateway.objects.errors import CorruptObject
from gateway.objects.immutable_format import LITERAL_THRESHOLD

FORMAT_VERSION = 1
"""The first item of a node (see :data:`INLINE_VERSION`)."""

INLINE_VERSION = 2
"""The first item of a node with a patch kept inline (longer than a literal) or in a pack."""

LEAVES_VERSION = 3
"""The first item of a node of height 1 keeping a leaf inline or naming one kept in another."""

INLINE_LEAVES_BYTES = 64 * 1024
"""The most bytes of new leaf nodes one node of height 1 keeps inline (see
:class:`InlineLeaf`; a larger leaf, or one past this, is stored as an object of its own)."""

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

MAX_PATCHES = 8
"""The most patches one extent may carry (more and it is stored again whole)."""

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

    def __attrs_post_init__(self) -> None:
        inline = sum(patch.size for _, patch in self.patches if is_inline(patch))
        object.__setattr__(self, "inline_bytes", inline)

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


def _needs_version_2(entry: PatchedExtent) -> bool:
    return any(is_inline(p) or isinstance(p, PackedPatch) for _, p in entry.patches)


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


def encode_node(node: Node) -> bytes:
    """The bytes stored for a node (longer than a literal, so it always goes to the grid).

    The CBOR of ``[version, height, fanout, count, [entry, ...]]`` (and the padding),
    put together from each entry's encoding.
    """
    # One pass over the entries, each's encoding kept but for one holding inline bytes
    # (patches, a leaf), which would make the kept encodings large. An update stores again
    # the nodes on its paths, whose entries are nearly all the same as the last time: this
    # loop is what an fsync's node costs per entry, so it calls as little as it can.
    parts: list[bytes] = []
    patched_v2 = names_leaves = False
    kept = _kept_entry
    for entry in node.entries:
        kind = type(entry)
        if kind is PatchedExtent:
            patched = cast(PatchedExtent, entry)
            patched_v2 = patched_v2 or _needs_version_2(patched)
            parts.append(cbor2.dumps(_entry(entry)) if patched.inline_bytes else kept(entry))
        elif kind is InlineLeaf:
            names_leaves = True
            parts.append(cbor2.dumps(_entry(entry)))
        else:
            if kind is ChunkedCap:
                names_leaves = names_leaves or cast(ChunkedCap, entry).part is not None
            parts.append(kept(entry))
    version = FORMAT_VERSION
    if node.height == 0 and patched_v2:
        version = INLINE_VERSION
    elif node.height == 1 and names_leaves:
        version = LEAVES_VERSION
    head = [version, node.height, node.fanout, node.count]
    entries = _array(len(node.entries)) + b"".join(parts)
    data = _array(5) + b"".join(cbor2.dumps(item) for item in head) + entries
    if len(data) <= LITERAL_THRESHOLD:
        data = cbor2.dumps([*head, cbor2.loads(entries), bytes(LITERAL_THRESHOLD + 1 - len(data))])
    return data


def _is_int(value: object, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _chk(fields: Sequence[Any]) -> ImmutableReadCap:
    key, ueb, k, n, size = fields
    if not (isinstance(key, bytes) and len(key) == KEY_SIZE):
        raise ValueError("a key is malformed")
    if not (isinstance(ueb, bytes) and len(ueb) == HASH_SIZE):
        raise ValueError("a URI extension block hash is malformed")
    if not (_is_int(k, 1) and _is_int(n, 1) and k <= n <= 256 and _is_int(size, 1)):
        raise ValueError("a child's encoding or size is malformed")
    return ImmutableReadCap(key, ueb, k, n, size)


def _decode_entry(item: object, leaf: bool, version_2: bool, leaves: bool = False) -> ChildCap:
    """One entry of a node (``version_2``: patches may be inline or packed; ``leaves``: a
    node of height 1 may name a leaf kept inside another node)."""
    if not isinstance(item, list) or not item or not _is_int(item[0]):
        raise ValueError("an entry is not a list starting with its kind")
    kind, fields = item[0], item[1:]
    if leaf and kind in (0, 1):
        return _extent(kind, fields, LITERAL_THRESHOLD)
    if leaf and kind == 3 and len(fields) == 2:
        return _patched(fields[0], fields[1], version_2)
    if not leaf and kind == 2 and len(fields) == 6:
        node = _chk(fields[:5])
        if not _is_int(fields[5], 1):
            raise ValueError("a child node's size is malformed")
        return ChunkedCap(node, fields[5])
    if leaves and kind == 6 and len(fields) == 7:
        node = _chk(fields[:5])
        if not (_is_int(fields[5], 1) and _is_int(fields[6]) and fields[6] < MAX_FANOUT):
            raise ValueError("a leaf kept in another node is named malformed")
        return ChunkedCap(node, fields[5], fields[6])
    raise ValueError(f"an entry of kind {kind} cannot stand in a node of this height")


def _extent(kind: int, fields: list[Any], literal: int) -> ExtentCap:
    """An extent or a patch: literal (at most ``literal`` bytes) or stored."""
    if kind == 0 and len(fields) == 1 and isinstance(fields[0], bytes) and fields[0]:
        if len(fields[0]) > literal:
            raise ValueError("a literal extent is longer than the literal threshold")
        return LiteralCap(fields[0])
    if kind == 1 and len(fields) == 5:
        return _chk(fields)
    raise ValueError(f"an extent of kind {kind} is malformed")


def _packed(fields: list[Any]) -> PackedPatch:
    """A patch stored in a pack: the pack's cap fields, then its offset and length."""
    if len(fields) != 7 or not (_is_int(fields[5]) and _is_int(fields[6], 1)):
        raise ValueError("a packed patch is malformed")
    pack = _chk(fields[:5])
    if fields[5] + fields[6] > pack.size:
        raise ValueError("a packed patch reaches past its pack")
    return PackedPatch(pack, fields[5], fields[6])


def _patched(extent_item: object, patch_items: object, version_2: bool) -> PatchedExtent:
    extent = _decode_entry(extent_item, True, version_2)
    if not isinstance(extent, LiteralCap | ImmutableReadCap):
        raise ValueError("a patched extent's extent is patched itself")
    if not isinstance(patch_items, list) or not 0 < len(patch_items) <= MAX_PATCHES:
        raise ValueError("a patched extent's patch list is malformed")
    literal = INLINE_PATCH_BYTES if version_2 else LITERAL_THRESHOLD
    kinds = (0, 1, 4) if version_2 else (0, 1)
    patches: list[tuple[int, Patch]] = []
    for item in patch_items:
        if not (isinstance(item, list) and len(item) == 2 and _is_int(item[0])):
            raise ValueError("a patch is not an offset and an entry")
        raw = item[1]
        if not isinstance(raw, list) or not raw or raw[0] not in kinds:
            raise ValueError("a patch is patched itself")
        patch = _packed(raw[1:]) if raw[0] == 4 else _extent(raw[0], raw[1:], literal)
        if item[0] + patch.size > extent.size:
            raise ValueError("a patch reaches past its extent")
        patches.append((item[0], patch))
    return PatchedExtent(extent, tuple(patches))


def decode_node(
    data: bytes, cap: ChunkedCap, height: int | None = None, count: int | None = None
) -> Node:
    """Parse and check a node read through ``cap``, raising CorruptObject when it is damaged.

    ``height`` and ``count``, when given, are what the parent node says the child
    must be. The node's entries must add up to the size ``cap`` names and have the
    tree's shape (every child but the last full).
    """
    node = decode_holder(data, cap.node)
    check_node(node, cap, height, count)
    return node


def decode_holder(data: bytes, stored: ImmutableReadCap) -> Node:
    """Parse the node stored as the object ``stored`` (CorruptObject when it is damaged),
    not yet checked against what names it: a part cap names a leaf inside it."""
    where = f"the chunk tree node with storage index {b32encode(stored.storage_index)}"
    try:
        return _parse(data, stored, True)
    except (ValueError, TypeError, cbor2.CBORDecodeError) as e:
        raise CorruptObject(f"{where} is damaged: {e}") from None


def _parse(data: bytes, stored: ImmutableReadCap, outer: bool) -> Node:
    """A node's items (``outer``: a stored node, which may keep leaves inline)."""
    items = cbor2.loads(data)
    if not isinstance(items, list) or len(items) not in (5, 6):
        raise ValueError("it is not a list of 5 or 6 items")
    version, node_height, fanout, node_count, raw = items[:5]
    versions = (FORMAT_VERSION, INLINE_VERSION, LEAVES_VERSION)[: 3 if outer else 2]
    if version not in versions:
        raise ValueError(
            f"its format version is {version!r}, this gateway reads {', '.join(map(str, versions))}"
        )
    if len(items) == 6 and not isinstance(items[5], bytes):
        raise ValueError("its padding is not a byte string")
    if not (_is_int(node_height) and _is_int(fanout, 2) and fanout <= MAX_FANOUT):
        raise ValueError("its height or fan-out is malformed")
    if not (_is_int(node_count, 1) and isinstance(raw, list) and 0 < len(raw) <= fanout):
        raise ValueError("its extent count or entry list is malformed")
    version_2, leaves = version == INLINE_VERSION, version == LEAVES_VERSION
    if leaves and node_height != 1:
        raise ValueError("a node that is not of height 1 names leaves kept in nodes")
    entries: list[ChildCap] = []
    inline: dict[int, Node] = {}
    kept = 0
    for i, item in enumerate(raw):
        if leaves and isinstance(item, list) and len(item) == 2 and item[0] == 5:
            if not isinstance(item[1], bytes):
                raise ValueError("a leaf kept inline is not a node's bytes")
            kept += len(item[1])
            if kept > INLINE_LEAVES_BYTES:
                raise ValueError(f"it keeps more than {INLINE_LEAVES_BYTES} bytes of leaves")
            leaf = inline[i] = _parse(item[1], stored, False)
            if leaf.height != 0 or leaf.fanout != fanout:
                raise ValueError("a node kept inline is not a leaf of this tree")
            entries.append(ChunkedCap(stored, leaf.size, i))
        else:
            entries.append(_decode_entry(item, node_height == 0, version_2, leaves))
    if sum(map(inline_bytes, entries)) > INLINE_NODE_BYTES:
        raise ValueError(f"it keeps more than {INLINE_NODE_BYTES} bytes of patches")
    return Node(node_height, fanout, node_count, tuple(entries), inline)


def check_node(
    node: Node, cap: ChunkedCap, height: int | None = None, count: int | None = None
) -> None:
    """CorruptObject unless ``node`` is what ``cap`` (and the parent's ``height`` and
    ``count``, when given) say it is, in the tree's shape."""
    where = f"the chunk tree node with storage index {b32encode(cap.storage_index)}"
    problems = []
    if node.size != cap.size:
        problems.append(f"its entries hold {node.size} bytes where its cap says {cap.size}")
    if height is not None and node.height != height:
        problems.append(f"its height is {node.height} where its parent says {height}")
    if count is not None and node.count != count:
        problems.append(f"it holds {node.count} extents where its parent says {count}")
    if node.height == 0:
        expected = node.count
    else:
        child = node.fanout**node.height
        expected = -(-node.count // child)
        if node.count > capacity(node.fanout, node.height):
            problems.append(f"its {node.count} extents are more than its height allows")
    if len(node.entries) != expected:
        problems.append(f"it has {len(node.entries)} entries for {node.count} extents")
    if problems:
        raise CorruptObject(f"{where} is damaged: {'; '.join(problems)}")
