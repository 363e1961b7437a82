"""Leaf nodes kept inline in their parent: an fsync of a small change stores one object.

A change under one leaf of a tree of height 1 stored the leaf and the root, two
objects, each with its encoding, allocation, share files and commit. The root now
keeps the new leaf inside it (entry kind 5, format version 3), and later versions
name an unchanged leaf inside an older node (kind 6) rather than storing it again.
"""

from __future__ import annotations

import cbor2
import pytest
from twisted.internet.task import Clock

from gateway.objects import chunk_update
from gateway.objects.caps import ChunkedCap
from gateway.objects.chunk_decode import decode_node
from gateway.objects.chunk_format import LEAVES_VERSION, encode_node
from gateway.objects.chunked import NodeCache, node_children
from gateway.objects.dirformat import EntryMetadata
from gateway.objects.errors import CorruptObject
from gateway.objects.store import ObjectStore
from tests.objects.chunked_support import Counted, make_store, pattern, read_all, renew_from, update
from tests.objects.grid import make_grid, run

CHUNK = 1024
FANOUT = 4


def _versions() -> tuple[ObjectStore, list[ChunkedCap], list[bytes], list[Counted]]:
    """A tree of height 1 (two leaves), then a change under leaf 1, then under leaf 0."""
    store, _ = make_store(chunk=CHUNK, fanout=FANOUT)
    data = bytearray(pattern(2 * FANOUT * CHUNK))
    caps = [update(store, None, bytes(data), [(0, len(data))])]
    contents, counts = [bytes(data)], []
    for at in (5 * CHUNK + 300, CHUNK + 10):
        data[at : at + 200] = pattern(200, at)
        counted = Counted(store)
        caps.append(update(store, caps[-1], bytes(data), [(at, at + 200)], counted))
        contents.append(bytes(data))
        counts.append(counted)
    assert all(isinstance(cap, ChunkedCap) for cap in caps)
    return store, caps, contents, counts  # type: ignore[return-value]


def test_a_change_under_one_leaf_stores_one_object_with_the_leaf_inside() -> None:
    """Each change stores one object, the root (version 3) holding its new leaf; every
    version reads back byte for byte from a gateway that caches nothing."""
    store, caps, contents, counts = _versions()
    for counted in counts:
        assert len(counted.objects) == 1
        assert cbor2.loads(counted.objects[0])[0] == LEAVES_VERSION
    fresh, _ = make_store(store.servers, chunk=CHUNK, fanout=FANOUT)  # type: ignore[arg-type]
    for cap, expected in zip(caps, contents, strict=True):
        assert read_all(fresh, cap) == expected
    assert (
        run(fresh.reader(caps[2]).read(5 * CHUNK + 250, 300))
        == contents[2][5 * CHUNK + 250 : 5 * CHUNK + 550]
    )


def test_an_unchanged_leaf_is_named_inside_the_node_that_keeps_it() -> None:
    """The third version keeps its new leaf 0 and names leaf 1 inside the second
    version's root (a part cap); walking it names that object once, as an immutable
    object, and the extents of both leaves."""
    store, caps, _, _ = _versions()
    root = run(NodeCache(8).load(caps[2], store.servers))
    own, kept = root.entries
    assert isinstance(own, ChunkedCap) and isinstance(kept, ChunkedCap)
    assert (own.node, own.part) == (caps[2].node, 0)
    assert (kept.node, kept.part) == (caps[1].node, 1)
    assert set(root.inline) == {0}
    children = run(node_children(caps[2], store.servers))
    assert caps[1].node in children
    assert caps[2].node not in children and not any(isinstance(c, ChunkedCap) for c in children)
    with pytest.raises(ValueError, match="no capability string"):
        kept.to_string()
    with pytest.raises(ValueError, match="no capability string"):
        kept.get_verify_cap().to_string()


def test_leaves_past_the_room_are_stored_as_objects_of_their_own() -> None:
    """With no room for leaves inline, a change stores the leaf and the root again; with
    room for one, a change under both leaves keeps one inline and stores the other (the
    patches the leaves keep inline hold less than the excess: a pack would not make room)."""
    store, _ = make_store(chunk=CHUNK, fanout=FANOUT)
    data = bytearray(pattern(2 * FANOUT * CHUNK))
    base = update(store, None, bytes(data), [(0, len(data))])
    data[100:300] = pattern(200, 1)
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(chunk_update, "INLINE_LEAVES_BYTES", 0)
        counted = Counted(store)
        first = update(store, base, bytes(data), [(100, 300)], counted)
    assert len(counted.objects) == 2 and cbor2.loads(counted.objects[0])[1] == 0  # a leaf
    data[100:140] = pattern(40, 2)
    data[6 * CHUNK : 6 * CHUNK + 40] = pattern(40, 3)
    changed = [(100, 140), (6 * CHUNK, 6 * CHUNK + 40)]
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(chunk_update, "INLINE_LEAVES_BYTES", 600)
        counted = Counted(store)
        second = update(store, first, bytes(data), changed, counted)
    assert len(counted.objects) == 2  # one leaf stored, the other inline in the root
    root = run(store.nodes.load(second, store.servers))  # type: ignore[arg-type]
    assert [e.part for e in root.entries] == [0, None]  # type: ignore[union-attr]
    fresh, _ = make_store(store.servers, chunk=CHUNK, fanout=FANOUT)  # type: ignore[arg-type]
    assert read_all(fresh, second) == bytes(data)


def test_a_truncate_to_a_leaf_kept_inline_stores_it_as_the_file() -> None:
    """Cut back to its first leaf, unchanged and kept inside the root, a file is that leaf
    stored as an object of its own: a file's cap names an object, and prints."""
    store, caps, contents, _ = _versions()
    counted = Counted(store)
    cut = update(store, caps[0], contents[0][: FANOUT * CHUNK], [], counted)
    assert isinstance(cut, ChunkedCap) and cut.part is None
    assert len(counted.objects) == 1 and cbor2.loads(counted.objects[0])[1] == 0
    assert cut.to_string().startswith("GG:TREE:")
    fresh, _ = make_store(store.servers, chunk=CHUNK, fanout=FANOUT)  # type: ignore[arg-type]
    assert read_all(fresh, cut) == contents[0][: FANOUT * CHUNK]


def test_damaged_inline_leaves_are_refused_clearly() -> None:
    """Inline leaves where they cannot be, too many of their bytes, and a part cap naming
    an entry that keeps no leaf: each a clear CorruptObject."""
    store, caps, _, counts = _versions()
    root = run(NodeCache(8).load(caps[1], store.servers))
    stored = cbor2.loads(encode_node(root.inline[1]))
    items = cbor2.loads(counts[1].objects[0])  # the third version's root, as stored
    assert items[0] == LEAVES_VERSION and items[4][0][0] == 5 and items[4][1][0] == 6
    as_leaf = [LEAVES_VERSION, 0, FANOUT, 4, items[4][:1]]
    with pytest.raises(CorruptObject, match="not of height 1"):
        decode_node(cbor2.dumps(as_leaf), caps[2])
    nested = [LEAVES_VERSION, 1, FANOUT, 8, [[5, cbor2.dumps([LEAVES_VERSION, *stored[1:]])]]]
    with pytest.raises(CorruptObject, match="format version"):
        decode_node(cbor2.dumps(nested), caps[2])
    padded = cbor2.dumps([*stored[:5], bytes(40_000)])
    big = [LEAVES_VERSION, 1, FANOUT, 8, [[5, padded], [5, padded]]]
    with pytest.raises(CorruptObject, match="bytes of leaves"):
        decode_node(cbor2.dumps(big), caps[2])
    no_leaf = ChunkedCap(caps[1].node, caps[1].size, 0)  # entry 0 of v1's root is v0's
    with pytest.raises(CorruptObject, match="keeps no leaf inline"):
        run(NodeCache(8).load(no_leaf, store.servers))


def test_lease_renewal_keeps_the_older_node_a_leaf_lives_in_and_no_more() -> None:
    """A directory linking only the third version: renewal reaches the second version's
    root (it keeps the third's leaf 1) once per server, and not the first version's root,
    which only older versions name (its leases lapse and it is collected)."""
    clock = Clock()
    grid = make_grid(3, clock)
    store, _ = make_store(grid, chunk=CHUNK, fanout=FANOUT)
    data = bytearray(pattern(2 * FANOUT * CHUNK))
    caps = [update(store, None, bytes(data), [(0, len(data))])]
    for at in (5 * CHUNK + 300, CHUNK + 10):
        data[at : at + 200] = pattern(200, at)
        caps.append(update(store, caps[-1], bytes(data), [(at, at + 200)]))
    root = run(store.create_directory())
    run(root.add("f", caps[2], EntryMetadata(kind="file", mtime=0.0, ctime=0.0)))
    report, renewals = renew_from(store, grid, clock, root.cap)
    renewed = {si for _, si in renewals}
    assert set(renewals.values()) == {1} and report.failures == ()
    assert caps[2].storage_index in renewed and caps[1].storage_index in renewed
    assert caps[0].storage_index not in renewed
    fresh, _ = make_store(grid, chunk=CHUNK, fanout=FANOUT)
    assert read_all(fresh, caps[2]) == bytes(data)
