"""Reading chunk tree nodes back: parsing what a node's bytes say and checking it against
what names it (the format is :mod:`gateway.objects.chunk_format`'s docstring).

Everything read from the grid is suspect: a node that does not parse, breaks a limit of
the version it says, or does not have the tree's shape raises CorruptObject (a check
or a repair tells which object), never a wrong answer. A version this gateway does not
read is refused by its number, so an older gateway's message says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cbor2

from gateway.objects.caps import ChunkedCap, ImmutableReadCap, LiteralCap, b32encode
from gateway.objects.chunk_format import (
    FORMAT_VERSION,
    INLINE_LEAVES_BYTES,
    INLINE_NODE_BYTES,
    INLINE_PATCH_BYTES,
    INLINE_VERSION,
    LEAVES_VERSION,
    MAX_FANOUT,
    MAX_PATCHES,
    OLD_INLINE_LEAVES_BYTES,
    OLD_MAX_PATCHES,
    PATCHES_VERSION,
    ChildCap,
    ExtentCap,
    Node,
    PackedPatch,
    Patch,
    PatchedExtent,
    capacity,
    inline_bytes,
)
from gateway.objects.crypto import HASH_SIZE, KEY_SIZE
from gateway.objects.errors import CorruptObject
from gateway.objects.immutable_format import LITERAL_THRESHOLD


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


def _decode_entry(
    item: object, leaf: bool, version_2: bool, leaves: bool = False, patches: int = OLD_MAX_PATCHES
) -> ChildCap:
    """One entry of a node (``version_2``: patches may be inline or packed; ``leaves``: a
    node of height 1 may name a leaf kept inside another node; ``patches``: the most an
    extent may carry)."""
    if not isinstance(item, list) or not item or not _is_int(item[0]):
        raise ValueError("an entry is not a list starting with its kind")
    kind, fields = item[0], item[1:]
    if leaf and kind in (0, 1):
        return _extent(kind, fields, LITERAL_THRESHOLD)
    if leaf and kind == 3 and len(fields) == 2:
        return _patched(fields[0], fields[1], version_2, patches)
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


def _patched(extent_item: object, patch_items: object, version_2: bool, most: int) -> PatchedExtent:
    extent = _decode_entry(extent_item, True, version_2)
    if not isinstance(extent, LiteralCap | ImmutableReadCap):
        raise ValueError("a patched extent's extent is patched itself")
    if not isinstance(patch_items, list) or not 0 < len(patch_items) <= most:
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


def _parse(data: bytes, stored: ImmutableReadCap, outer: bool, in_latest: bool = False) -> Node:
    """A node's items (``outer``: a stored node, which may keep leaves inline; else a leaf
    kept inline in a node, of version 4 only in one that says 4 itself)."""
    items = cbor2.loads(data)
    if not isinstance(items, list) or len(items) not in (5, 6):
        raise ValueError("it is not a list of 5 or 6 items")
    version, node_height, fanout, node_count, raw = items[:5]
    versions: tuple[int, ...] = (FORMAT_VERSION, INLINE_VERSION, LEAVES_VERSION, PATCHES_VERSION)
    if not outer:
        versions = (FORMAT_VERSION, INLINE_VERSION, PATCHES_VERSION)
        if version == PATCHES_VERSION and not in_latest:
            raise ValueError(f"it keeps a leaf of version {PATCHES_VERSION} inline")
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
    latest = version == PATCHES_VERSION
    version_2 = version == INLINE_VERSION or (latest and node_height == 0)
    leaves = version == LEAVES_VERSION or (latest and node_height == 1)
    most_patches = MAX_PATCHES if latest else OLD_MAX_PATCHES
    most_leaves = INLINE_LEAVES_BYTES if latest else OLD_INLINE_LEAVES_BYTES
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
            if kept > most_leaves:
                raise ValueError(f"it keeps more than {most_leaves} bytes of leaves")
            leaf = inline[i] = _parse(item[1], stored, False, latest)
            if leaf.height != 0 or leaf.fanout != fanout:
                raise ValueError("a node kept inline is not a leaf of this tree")
            entries.append(ChunkedCap(stored, leaf.size, i))
        else:
            entries.append(_decode_entry(item, node_height == 0, version_2, leaves, most_patches))
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
