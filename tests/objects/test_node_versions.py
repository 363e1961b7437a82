"""Format version 4 of chunk tree nodes: an extent may carry up to MAX_PATCHES patches (8
before) and a node of height 1 may keep up to INLINE_LEAVES_BYTES of leaves (64 KiB before).

A long stream of small changes at random places of a large file stored an extent again
whole (1 MiB read back, encrypted and written) each time one reached its eighth patch:
one fsync in six or seven. Twice the patches halve that. Nodes within the old limits
keep saying what they said, so older gateways read them; a node past them says 4, which
an older gateway refuses by its number rather than as damaged.
"""

from __future__ import annotations

import cbor2
import pytest

from gateway.objects.caps import ChunkedCap, ImmutableReadCap
from gateway.objects.chunk_decode import decode_node
from gateway.objects.chunk_format import (
    INLINE_LEAVES_BYTES,
    INLINE_VERSION,
    LEAVES_VERSION,
    MAX_PATCHES,
    OLD_INLINE_LEAVES_BYTES,
    OLD_MAX_PATCHES,
    PATCHES_VERSION,
    InlineLeaf,
    Node,
    PackedPatch,
    PatchedExtent,
    encode_node,
)
from gateway.objects.errors import CorruptObject
from tests.objects.chunked_support import Counted, make_store, pattern, read_all, update
from tests.objects.grid import run

EXTENT = ImmutableReadCap(b"k" * 32, b"u" * 32, 1, 1, 1 << 20)
PACK = ImmutableReadCap(b"a" * 32, b"b" * 32, 1, 1, 1 << 20)


def _leaf(patches: int, extents: int = 1, fanout: int = 128) -> Node:
    """A leaf of ``extents`` patched extents, each carrying ``patches`` patches kept in a
    pack (version 2 and up; ~90 bytes each in the node)."""
    packed = tuple((i * 8192, PackedPatch(PACK, i * 100, 100)) for i in range(patches))
    return Node(0, fanout, extents, (PatchedExtent(EXTENT, packed),) * extents)


@pytest.mark.parametrize("patches", [1, OLD_MAX_PATCHES])
def test_a_leaf_within_the_old_limits_says_version_2(patches: int) -> None:
    """Up to the old limit a leaf is written as before, for older gateways to read."""
    leaf = _leaf(patches)
    encoded = encode_node(leaf)
    assert cbor2.loads(encoded)[0] == INLINE_VERSION
    assert decode_node(encoded, ChunkedCap(EXTENT, leaf.size)) == leaf


@pytest.mark.parametrize("patches", [OLD_MAX_PATCHES + 1, MAX_PATCHES])
def test_a_leaf_past_the_old_patch_limit_says_version_4_and_reads_back(patches: int) -> None:
    """An extent with more than the old limit of patches makes its leaf version 4, which
    decodes to the same entries."""
    leaf = _leaf(patches, extents=3)
    encoded = encode_node(leaf)
    assert cbor2.loads(encoded)[0] == PATCHES_VERSION
    assert decode_node(encoded, ChunkedCap(EXTENT, leaf.size)) == leaf


def test_patch_lists_past_the_limit_of_their_version_are_damaged() -> None:
    """Nine patches under version 2, or more than MAX_PATCHES under version 4: refused."""
    cap = ChunkedCap(EXTENT, EXTENT.size)
    for version, count in (
        (INLINE_VERSION, OLD_MAX_PATCHES + 1),
        (PATCHES_VERSION, MAX_PATCHES + 1),
    ):
        items = cbor2.loads(encode_node(_leaf(count)))
        items[0] = version
        with pytest.raises(CorruptObject, match="patch list is malformed"):
            decode_node(cbor2.dumps(items), cap)


def test_inline_leaves_past_the_old_budget_need_version_4() -> None:
    """A node of height 1 keeping more than 64 KiB of leaves says version 4 and reads back;
    the same bytes saying version 3 are refused, and so is a version-3 node keeping a
    version-4 leaf inline; past INLINE_LEAVES_BYTES even version 4 refuses."""
    leaf = _leaf(OLD_MAX_PATCHES, extents=48, fanout=48)  # ~38 KiB, version 2
    encoded_leaf = encode_node(leaf)
    assert cbor2.loads(encoded_leaf)[0] == INLINE_VERSION
    assert OLD_INLINE_LEAVES_BYTES < 2 * len(encoded_leaf) <= INLINE_LEAVES_BYTES
    parent = Node(1, 48, 96, (InlineLeaf(leaf, encoded_leaf), InlineLeaf(leaf, encoded_leaf)))
    encoded = encode_node(parent)
    items = cbor2.loads(encoded)
    assert items[0] == PATCHES_VERSION
    root = ChunkedCap(EXTENT, parent.size)
    decoded = decode_node(encoded, root)
    assert [decoded.inline[i] for i in (0, 1)] == [leaf, leaf]
    items[0] = LEAVES_VERSION
    with pytest.raises(CorruptObject, match="bytes of leaves"):
        decode_node(cbor2.dumps(items), root)
    one = Node(1, 128, 1, (InlineLeaf(_leaf(MAX_PATCHES), encode_node(_leaf(MAX_PATCHES))),))
    items = cbor2.loads(encode_node(one))
    assert items[0] == PATCHES_VERSION  # (its leaf says 4: so does it)
    items[0] = LEAVES_VERSION
    with pytest.raises(CorruptObject, match="keeps a leaf of version 4"):
        decode_node(cbor2.dumps(items), ChunkedCap(EXTENT, one.size))
    third = Node(1, 48, 144, (InlineLeaf(leaf, encoded_leaf),) * 3)
    with pytest.raises(CorruptObject, match="bytes of leaves"):
        decode_node(encode_node(third), ChunkedCap(EXTENT, third.size))


def test_an_extent_takes_more_than_the_old_limit_of_patches_before_it_is_stored_again() -> None:
    """Twelve small changes at different places of one extent: each stores its patch (no
    version stores the extent again), the leaf says version 4 from the ninth on, and every
    version reads back exact from a gateway that caches nothing."""
    chunk = 64 * 1024
    store, _ = make_store(chunk=chunk)
    data = bytearray(pattern(4 * chunk))
    cap = update(store, None, bytes(data), [(0, len(data))])
    versions = [(cap, bytes(data))]
    for n in range(OLD_MAX_PATCHES + 4):
        at = chunk + 1000 + n * 4096
        data[at : at + 50] = bytes([n + 1]) * 50
        counted = Counted(store)
        cap = update(store, cap, bytes(data), [(at, at + 50)], counted)
        versions.append((cap, bytes(data)))
        assert all(len(o) < chunk for o in counted.objects), "the extent was stored again"
        newest = cbor2.loads(counted.objects[-1])
        assert newest[0] == (PATCHES_VERSION if n >= OLD_MAX_PATCHES else INLINE_VERSION) or (
            n < OLD_MAX_PATCHES and newest[0] == 1
        )
    fresh, _ = make_store(store.servers, chunk=chunk)  # type: ignore[arg-type]
    for version, expected in versions:
        assert read_all(fresh, version) == expected
    assert run(fresh.reader(cap).read(chunk + 1000, 50 + 4096 * 11)) == bytes(
        data[chunk + 1000 : chunk + 1050 + 4096 * 11]
    )
