"""One pack for the leaves an update changes under one parent.

A fold of an overlay (an fsync's changes at random places of a large file) changes a
leaf per range. Each leaf kept its new patches inline, packed them on its own past its
budget, and the leaves the root had no room for were stored as objects of their own:
four or five objects per fold of a 4 GiB file. Now, when keeping the patches inline
would store an object besides the parent anyway, every patch the changed leaves keep
inline moves into one pack they share, and the leaves, lighter, stay inside the parent.
"""

from __future__ import annotations

import pytest

from gateway.objects import chunk_update
from gateway.objects.caps import ChunkedCap, ImmutableReadCap, LiteralCap
from gateway.objects.chunk_format import (
    INLINE_NODE_BYTES,
    INLINE_PATCH_BYTES,
    Node,
    PackedPatch,
    PatchedExtent,
    inline_bytes,
)
from gateway.objects.chunked import node_children
from gateway.objects.inline_patches import packed, shared_pack
from gateway.objects.store import ObjectStore
from tests.objects.chunked_support import Counted, make_store, pattern, read_all, update
from tests.objects.grid import run

CHUNK = 64 * 1024
FANOUT = 4
LEAF = FANOUT * CHUNK  # bytes under one leaf


def _file() -> tuple[ObjectStore, ChunkedCap, bytearray]:
    """A tree of height 1: four leaves of four extents each."""
    store, _ = make_store(chunk=CHUNK, fanout=FANOUT)
    data = bytearray(pattern(FANOUT * LEAF))
    cap = update(store, None, bytes(data), [(0, len(data))])
    assert isinstance(cap, ChunkedCap)
    return store, cap, data


def _change(data: bytearray, places: list[int], seed: int) -> list[tuple[int, int]]:
    """Write INLINE_PATCH_BYTES at each of ``places``; the changed ranges."""
    for n, at in enumerate(places):
        data[at : at + INLINE_PATCH_BYTES] = pattern(INLINE_PATCH_BYTES, seed + n)
    return [(at, at + INLINE_PATCH_BYTES) for at in places]


def _leaves(store: ObjectStore, cap: ChunkedCap) -> list[Node]:
    """The leaves of a tree of height 1, read by a store that caches nothing."""
    fresh, _ = make_store(store.servers, chunk=CHUNK, fanout=FANOUT)
    root = run(fresh.nodes.load(cap, fresh.servers))
    return [run(fresh.nodes.load(e, fresh.servers)) for e in root.entries]  # type: ignore[arg-type]


def _patches(leaf: Node) -> list[object]:
    return [p for e in leaf.entries if isinstance(e, PatchedExtent) for _, p in e.patches]


def test_leaves_past_the_parents_room_share_one_pack_and_stay_inline() -> None:
    """A change under every leaf, whose inline patches would leave no room in the root
    for two of the leaves: one pack holds all four patches, every leaf stays inline,
    and the update stores two objects (the pack and the root) rather than three. Every
    version reads back exact from a gateway that caches nothing, and check, repair and
    lease renewal see the pack."""
    store, cap, data = _file()
    changed = _change(data, [n * LEAF + 5 * 4096 for n in range(FANOUT)], 1)
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(chunk_update, "INLINE_LEAVES_BYTES", 2 * INLINE_PATCH_BYTES + 1000)
        counted = Counted(store)
        new = update(store, cap, bytes(data), changed, counted)
    assert isinstance(new, ChunkedCap)
    assert max(len(o) for o in counted.objects) == FANOUT * INLINE_PATCH_BYTES  # the pack
    assert len(counted.objects) == 2
    root = run(store.nodes.load(new, store.servers))
    assert [e.part for e in root.entries] == list(range(FANOUT))  # type: ignore[union-attr]
    leaves = _leaves(store, new)
    packs = {p.pack for leaf in leaves for p in _patches(leaf) if isinstance(p, PackedPatch)}
    assert len(packs) == 1 and not any(inline_bytes(e) for leaf in leaves for e in leaf.entries)
    (pack,) = packs
    assert pack in run(node_children(new, store.servers))
    fresh, _ = make_store(store.servers, chunk=CHUNK, fanout=FANOUT)
    assert read_all(fresh, new) == bytes(data)
    assert run(fresh.reader(new).read(2 * LEAF + 5 * 4096 - 7, 20)) == bytes(
        data[2 * LEAF + 5 * 4096 - 7 : 2 * LEAF + 5 * 4096 + 13]
    )
    assert read_all(fresh, cap) != bytes(data)


def test_a_leaf_past_its_budget_packs_the_other_leaves_patches_too() -> None:
    """Five patches under leaf 0 (past INLINE_NODE_BYTES) and one under leaf 2: one pack
    of the six, where each leaf past its budget used to pack its own."""
    store, cap, data = _file()
    places = [100, CHUNK // 2, CHUNK + 100, 2 * CHUNK + 100, 3 * CHUNK + 100, 2 * LEAF + 100]
    assert 5 * INLINE_PATCH_BYTES > INLINE_NODE_BYTES
    changed = _change(data, places, 10)
    counted = Counted(store)
    new = update(store, cap, bytes(data), changed, counted)
    assert isinstance(new, ChunkedCap)
    assert len(counted.objects) == 2  # the pack, the root
    leaves = _leaves(store, new)
    packs = {p.pack for leaf in leaves for p in _patches(leaf) if isinstance(p, PackedPatch)}
    assert len(packs) == 1 and sum(len(_patches(leaf)) for leaf in leaves) == 6
    assert not any(inline_bytes(e) for leaf in leaves for e in leaf.entries)  # leaf 2's too
    fresh, _ = make_store(store.servers, chunk=CHUNK, fanout=FANOUT)
    assert read_all(fresh, new) == bytes(data)


def test_patches_that_fit_stay_in_their_leaves() -> None:
    """A change under two leaves that fits in the root, each leaf within its budget: the
    patches stay inline and the update stores the root alone."""
    store, cap, data = _file()
    changed = _change(data, [100, 3 * LEAF + 100], 20)
    counted = Counted(store)
    new = update(store, cap, bytes(data), changed, counted)
    assert isinstance(new, ChunkedCap)
    assert len(counted.objects) == 1
    leaves = _leaves(store, new)
    assert sum(isinstance(p, LiteralCap) for leaf in leaves for p in _patches(leaf)) == 2
    assert read_all(store, new) == bytes(data)


def test_when_to_share_a_pack() -> None:
    """Shared when a leaf is past its budget, or when the leaves pass the parent's room by
    no more than their inline patches hold; not when they fit, nor when packing could not
    make room (patches that hold less than the excess)."""
    extent = ImmutableReadCap(b"k" * 16, b"u" * 32, 1, 1, CHUNK)

    def leaf(*sizes: int) -> tuple[PatchedExtent, ...]:
        return tuple(PatchedExtent(extent, ((0, LiteralCap(bytes(size))),)) for size in sizes)

    assert shared_pack([leaf(*[4096] * 5), leaf()], [], 100_000)
    assert not shared_pack([leaf(4096), leaf(4096)], [5000, 5000], 10_000)
    assert shared_pack([leaf(4096), leaf(4096)], [5000, 5000], 9_000)
    assert not shared_pack([leaf(100), leaf(100)], [5000, 5000], 9_000)
    assert not shared_pack([leaf(20), leaf(20)], [5000, 5000], 9_000)  # (literals: not inline)


def test_packed_leaves_keeping_nothing_inline_as_they_were() -> None:
    """A leaf keeping no patch inline is returned as it was, and with none keeping any
    nothing is stored."""
    extent = ImmutableReadCap(b"k" * 16, b"u" * 32, 1, 1, CHUNK)
    small = (PatchedExtent(extent, ((0, LiteralCap(b"x" * 20)),)), extent)
    stored: list[bytes] = []

    async def store(data: bytes) -> ImmutableReadCap:
        stored.append(data)
        return ImmutableReadCap(b"p" * 16, b"h" * 32, 1, 1, len(data))

    assert run(packed([small, small], store)) == [small, small] and not stored
    big = (PatchedExtent(extent, ((10, LiteralCap(b"y" * 100)),)),)
    out = run(packed([small, big], store))
    assert out[0] is small and stored == [b"y" * 100]
    assert out[1][0] == PatchedExtent(  # type: ignore[index]
        extent, ((10, PackedPatch(ImmutableReadCap(b"p" * 16, b"h" * 32, 1, 1, 100), 0, 100)),)
    )
