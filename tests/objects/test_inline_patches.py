"""Small patches kept in their leaf node: an fsync of a small change stores one object
fewer, a node past its budget moves its patches into one pack, and the format says which
nodes do."""

from __future__ import annotations

import cbor2
import pytest

from gateway.objects.caps import ChunkedCap, ImmutableReadCap, LiteralCap
from gateway.objects.chunk_decode import decode_node
from gateway.objects.chunk_format import (
    INLINE_NODE_BYTES,
    INLINE_PATCH_BYTES,
    Node,
    PackedPatch,
    PatchedExtent,
    encode_node,
    inline_bytes,
)
from gateway.objects.errors import CorruptObject
from gateway.objects.store import ObjectStore
from tests.objects.chunked_support import Counted, make_store, pattern, read_all, update
from tests.objects.grid import run

CHUNK = 64 * 1024
FANOUT = 4


def _leaves(store: ObjectStore, cap: ChunkedCap) -> list[Node]:
    """The file's leaf nodes, read from the grid by a store that caches nothing."""
    fresh, _ = make_store(store.servers, chunk=CHUNK, fanout=FANOUT)
    level = [run(fresh.nodes.load(cap, fresh.servers))]
    while level[0].height > 0:
        level = [
            run(fresh.nodes.load(child, fresh.servers))
            for node in level
            for child in node.entries
            if isinstance(child, ChunkedCap)
        ]
    return level


def test_a_small_change_is_kept_in_its_leaf_node() -> None:
    """A 4 KiB change stores the nodes on its path and nothing else: the patch travels in
    the leaf node (format version 2), the leaf in its parent (version 3), and a gateway
    with nothing cached reads it back."""
    store, _ = make_store(chunk=CHUNK, fanout=FANOUT)
    data = bytearray(pattern(FANOUT * 2 * CHUNK))
    base = update(store, None, bytes(data), [(0, len(data))])
    at = 3 * CHUNK + 512
    data[at : at + INLINE_PATCH_BYTES] = pattern(INLINE_PATCH_BYTES, 7)
    counted = Counted(store)
    new = update(store, base, bytes(data), [(at, at + INLINE_PATCH_BYTES)], counted)
    assert isinstance(new, ChunkedCap)
    root = run(store.nodes.load(new, store.servers))
    assert len(counted.objects) == root.height, "a node per level above the leaves, no patch"
    assert cbor2.loads(counted.objects[-1])[0] == 3
    (leaf,) = [n for n in _leaves(store, new) if any(map(inline_bytes, n.entries))]
    (patched,) = [e for e in leaf.entries if isinstance(e, PatchedExtent)]
    assert patched.patches == ((512, LiteralCap(bytes(data[at : at + INLINE_PATCH_BYTES]))),)
    fresh, _ = make_store(store.servers, chunk=CHUNK, fanout=FANOUT)
    assert read_all(fresh, new) == bytes(data)
    assert run(fresh.reader(new).read(at - 10, 100)) == bytes(data[at - 10 : at + 90])


def test_a_change_longer_than_the_inline_size_is_an_object_of_its_own() -> None:
    """A patch past INLINE_PATCH_BYTES is stored as before: the patch, then the nodes."""
    store, _ = make_store(chunk=CHUNK, fanout=FANOUT)
    data = bytearray(pattern(FANOUT * 2 * CHUNK))
    base = update(store, None, bytes(data), [(0, len(data))])
    size = INLINE_PATCH_BYTES + 1
    data[100 : 100 + size] = pattern(size, 3)
    counted = Counted(store)
    new = update(store, base, bytes(data), [(100, 100 + size)], counted)
    assert [len(obj) for obj in counted.objects[:1]] == [size]
    assert read_all(store, new) == bytes(data)


def test_a_leaf_node_past_its_budget_moves_its_patches_into_one_pack() -> None:
    """Changes to many extents of one leaf: once the inline patches would pass
    INLINE_NODE_BYTES, all of them move into one pack object, each named by its range;
    readers (a gateway with nothing cached too) get every version back exact."""
    store, _ = make_store(chunk=CHUNK, fanout=FANOUT)
    data = bytearray(pattern(FANOUT * CHUNK))  # one leaf of four extents
    cap = update(store, None, bytes(data), [(0, len(data))])
    versions = []
    sizes = [4096, 1000, 4096, 3000, 4096, 4096, 2000]
    packs_stored = []
    for n, size in enumerate(sizes):
        at = (n % FANOUT) * CHUNK + (n // FANOUT) * 8192
        data[at : at + size] = pattern(size, 100 + n)
        counted = Counted(store)
        cap = update(store, cap, bytes(data), [(at, at + size)], counted)
        assert isinstance(cap, ChunkedCap)
        versions.append((cap, bytes(data)))
        (leaf,) = _leaves(store, cap)
        assert sum(map(inline_bytes, leaf.entries)) <= INLINE_NODE_BYTES
        packs_stored.append(len(counted.objects) - 1)  # (the node: one level)
    packed = [
        patch
        for entry in leaf.entries
        if isinstance(entry, PatchedExtent)
        for _, patch in entry.patches
        if isinstance(patch, PackedPatch)
    ]
    assert sum(sizes) > INLINE_NODE_BYTES and packed, "the patches moved into a pack"
    assert len({p.pack for p in packed}) == 1 and len(packed) >= 4, "one pack for several"
    assert sorted(packs_stored) == [0] * (len(sizes) - 1) + [1], "one object, once"
    assert {p.pack for p in packed} <= {
        part for entry in leaf.entries if isinstance(entry, PatchedExtent) for part in entry.parts()
    }, "check, repair and leases see the pack"
    fresh, _ = make_store(store.servers, chunk=CHUNK, fanout=FANOUT)
    for version, expected in versions:
        assert read_all(store, version) == expected
        assert read_all(fresh, version) == expected


def test_the_format_says_which_nodes_keep_patches_inline() -> None:
    """Version 1 nodes refuse literal patches longer than a literal cap and packed patches;
    version 2 nodes take literal patches up to INLINE_PATCH_BYTES (INLINE_NODE_BYTES in
    all) and patches in packs, within their pack; version 3 is unknown. An encoded node
    says version 2 only when it holds such a patch."""
    extent = ImmutableReadCap(b"k" * 32, b"u" * 32, 1, 1, CHUNK)
    inline = Node(0, 4, 1, (PatchedExtent(extent, ((0, LiteralCap(b"p" * 100)),)),))
    small = Node(0, 4, 1, (PatchedExtent(extent, ((0, LiteralCap(b"p" * 20)),)),))
    cap = ChunkedCap(extent, CHUNK)
    assert cbor2.loads(encode_node(inline))[0] == 2
    assert cbor2.loads(encode_node(small))[0] == 1
    assert decode_node(encode_node(inline), cap) == inline
    v1 = cbor2.loads(encode_node(inline))
    v1[0] = 1
    with pytest.raises(CorruptObject, match="literal threshold"):
        decode_node(cbor2.dumps(v1), cap)
    too_long = Node(0, 4, 1, (PatchedExtent(extent, ((0, LiteralCap(b"p" * 4097)),)),))
    with pytest.raises(CorruptObject, match="literal threshold"):
        decode_node(encode_node(too_long), cap)
    patches = tuple((i * 4096, LiteralCap(b"q" * 4096)) for i in range(5))
    over = Node(0, 4, 1, (PatchedExtent(extent, patches),))
    with pytest.raises(CorruptObject, match="bytes of patches"):
        decode_node(encode_node(over), cap)
    pack = ImmutableReadCap(b"a" * 32, b"b" * 32, 1, 1, 100)
    in_pack = Node(0, 4, 1, (PatchedExtent(extent, ((0, PackedPatch(pack, 60, 40)),)),))
    assert cbor2.loads(encode_node(in_pack))[0] == 2
    assert decode_node(encode_node(in_pack), cap) == in_pack
    assert in_pack.entries[0].parts() == (extent, pack)  # type: ignore[union-attr]
    past = Node(0, 4, 1, (PatchedExtent(extent, ((0, PackedPatch(pack, 70, 40)),)),))
    with pytest.raises(CorruptObject, match="past its pack"):
        decode_node(encode_node(past), cap)
    v1_pack = cbor2.loads(encode_node(in_pack))
    v1_pack[0] = 1
    with pytest.raises(CorruptObject, match="patched itself"):
        decode_node(cbor2.dumps(v1_pack), cap)
    unknown = cbor2.loads(encode_node(small))
    unknown[0] = 5
    with pytest.raises(CorruptObject, match="format version"):
        decode_node(cbor2.dumps(unknown), cap)


def test_a_page_rewritten_again_and_again_keeps_one_patch() -> None:
    """A patch that a newer one covers whole shows nowhere and goes: a database page
    written by every transaction costs its extent one patch, kept in the node, and the
    extent is never stored again whole for it. Every version reads back exact."""
    store, _ = make_store(chunk=CHUNK, fanout=FANOUT)
    data = bytearray(pattern(FANOUT * 2 * CHUNK))
    cap = update(store, None, bytes(data), [(0, len(data))])
    at = CHUNK + 4096
    versions = []
    for n in range(20):
        data[at : at + 4096] = pattern(4096, 200 + n)
        counted = Counted(store)
        cap = update(store, cap, bytes(data), [(at, at + 4096)], counted)
        assert isinstance(cap, ChunkedCap)
        assert all(len(obj) < CHUNK for obj in counted.objects), "no extent stored again"
        versions.append((cap, bytes(data)))
    leaves = _leaves(store, cap)
    patched = [e for leaf in leaves for e in leaf.entries if isinstance(e, PatchedExtent)]
    assert [len(e.patches) for e in patched] == [1]
    for version, expected in versions:
        assert read_all(store, version) == expected
