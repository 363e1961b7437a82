"""Large files as chunk trees: round trips, reads, sharing between versions, caps, damage."""

from __future__ import annotations

import cbor2
import pytest

from gateway.objects import chunk_update
from gateway.objects.caps import (
    ChunkedCap,
    ChunkedVerifyCap,
    ImmutableCap,
    ImmutableReadCap,
    LiteralCap,
    parse,
)
from gateway.objects.chunk_decode import decode_node
from gateway.objects.chunk_format import (
    MAX_PATCHES,
    OLD_MAX_PATCHES,
    Node,
    PatchedExtent,
    encode_node,
)
from gateway.objects.chunk_update import TreeUpdate
from gateway.objects.chunked import NodeCache
from gateway.objects.errors import BadCapability, CorruptObject
from gateway.objects.extent_cache import ExtentCache
from tests.objects.chunked_support import (
    CHUNK,
    FANOUT,
    Counted,
    clear,
    make_store,
    pattern,
    read_all,
    requested_indexes,
    update,
    update_stored,
)
from tests.objects.grid import run


async def _extents(store: object, cap: ChunkedCap) -> list[ImmutableCap]:
    """Every extent of a tree, in order (test helper walking the nodes)."""
    out: list[ImmutableCap] = []
    node = await store.nodes.load(cap, store.servers)  # type: ignore[attr-defined]
    for child in node.entries:
        if isinstance(child, ChunkedCap):
            out.extend(await _extents(store, child))
        elif isinstance(child, PatchedExtent):
            out.extend(child.parts())
        else:
            out.append(child)
    return out


def extents(store: object, cap: ImmutableCap) -> list[ImmutableCap]:
    """The extents of a chunked file (the file itself when it is one object)."""
    if not isinstance(cap, ChunkedCap):
        return [cap]
    return run(_extents(store, cap))


SIZES = [
    0,
    1,
    55,
    56,
    CHUNK - 1,
    CHUNK,
    CHUNK + 1,
    2 * CHUNK,
    FANOUT * CHUNK,
    FANOUT * CHUNK + 1,
    FANOUT**2 * CHUNK,
    FANOUT**2 * CHUNK + 7,
    FANOUT**3 * CHUNK + CHUNK // 2,
]


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_around_chunk_and_fanout_boundaries(size: int) -> None:
    """A new file of any size reads back byte for byte; larger than a chunk it is a tree."""
    store, _ = make_store()
    data = pattern(size, size)
    cap = update(store, None, data, [(0, size)])
    assert cap.size == size
    assert read_all(store, cap) == data
    if size <= 55:
        assert isinstance(cap, LiteralCap)
    elif size <= CHUNK:
        assert isinstance(cap, ImmutableReadCap)
    else:
        assert isinstance(cap, ChunkedCap)
        assert all(e.size <= CHUNK for e in extents(store, cap))
    # A fresh store (no node cached) reads it too, from a parsed cap string.
    fresh, _ = make_store(store.servers)
    assert read_all(fresh, parse(cap.to_string())) == data  # type: ignore[arg-type]


def test_random_reads_equal_the_bytes() -> None:
    """Reads at any offset and length, across extents and nodes, give the file's bytes."""
    import random

    store, _ = make_store()
    data = pattern(FANOUT**2 * CHUNK + 333)
    cap = update(store, None, data, [(0, len(data))])
    reader = store.reader(cap)
    rng = random.Random(5)
    for _ in range(60):
        offset = rng.randrange(len(data) + 10)
        length = rng.randrange(4 * CHUNK)
        assert run(reader.read(offset, length)) == data[offset : offset + length]


def test_unchanged_region_read_fetches_only_its_chunk_and_path() -> None:
    """After an update, a read of an unchanged region asks the servers for the nodes on its
    path and its own extent only."""
    store, grid = make_store()
    data = bytearray(pattern(FANOUT**2 * CHUNK))
    base = update(store, None, bytes(data), [(0, len(data))])
    data[5 * CHUNK + 10 : 5 * CHUNK + 20] = b"x" * 10
    new = update(store, base, bytes(data), [(5 * CHUNK + 10, 5 * CHUNK + 20)])
    assert isinstance(new, ChunkedCap)
    fresh, _ = make_store(grid)
    clear(grid)
    offset = 11 * CHUNK + 100
    assert run(fresh.reader(new).read(offset, 50)) == bytes(data[offset : offset + 50])
    root = run(fresh.nodes.load(new, grid))
    inner = root.entries[offset // (FANOUT * CHUNK)]
    assert isinstance(inner, ChunkedCap)
    leaf = run(fresh.nodes.load(inner, grid))
    extent = leaf.entries[(offset // CHUNK) % FANOUT]
    assert isinstance(extent, ImmutableReadCap)
    assert requested_indexes(grid) == {
        new.storage_index,
        inner.storage_index,
        extent.storage_index,
    }


def test_unchanged_extents_are_shared_between_versions() -> None:
    """A change of more than a quarter of an extent stores that extent again and one node
    per level above the leaves (the new leaf is kept inline in its parent); every other cap
    is the base's own."""
    store, _ = make_store()
    data = bytearray(pattern(FANOUT**2 * CHUNK + 100))
    base = update(store, None, bytes(data), [(0, len(data))])
    data[3 * CHUNK + 1 : 3 * CHUNK + 401] = pattern(400, 9)
    counted = Counted(store)
    new = update(store, base, bytes(data), [(3 * CHUNK + 1, 3 * CHUNK + 401)], counted)
    assert read_all(store, new) == bytes(data)
    old_extents, new_extents = extents(store, base), extents(store, new)
    different = [i for i, (a, b) in enumerate(zip(old_extents, new_extents, strict=True)) if a != b]
    assert different == [3]
    root = run(store.nodes.load(new, store.servers))  # type: ignore[arg-type]
    assert len(counted.objects) == 1 + root.height  # the extent, then the nodes above leaves
    assert sum(len(o) for o in counted.objects[:1]) == CHUNK


def test_a_small_change_stores_only_the_changed_bytes_as_a_patch() -> None:
    """A change of a few bytes stores those bytes (as a patch laid over the extent, which
    stays the base's) and one node per level above the leaves; reads merge them. (A patch of at most
    INLINE_PATCH_BYTES is kept in its node instead: tests/objects/test_inline_patches.py.)"""
    store, _ = make_store()
    data = bytearray(pattern(FANOUT**2 * CHUNK + 100))
    base = update(store, None, bytes(data), [(0, len(data))])
    data[3 * CHUNK + 1 : 3 * CHUNK + 101] = pattern(100, 9)
    counted = Counted(store)
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(chunk_update, "INLINE_PATCH_BYTES", 0)
        new = update(store, base, bytes(data), [(3 * CHUNK + 1, 3 * CHUNK + 101)], counted)
    assert read_all(store, new) == bytes(data)
    assert run(store.reader(new).read(3 * CHUNK - 10, 200)) == bytes(
        data[3 * CHUNK - 10 : 3 * CHUNK + 190]
    )
    root = run(store.nodes.load(new, store.servers))  # type: ignore[arg-type]
    assert [len(o) for o in counted.objects[:1]] == [100]  # the patch, then the nodes
    assert len(counted.objects) == 1 + root.height
    old_extents, new_extents = extents(store, base), extents(store, new)
    assert new_extents[:4] == old_extents[:4] and new_extents[5:] == old_extents[4:]


def test_patches_pile_up_then_the_extent_is_stored_again_whole() -> None:
    """Changes to one extent add patches (the later over the earlier, overlapping ones
    too) until MAX_PATCHES or a quarter of the extent; then the extent is stored again,
    patches folded in. Every version reads back exact."""
    chunk = 4 * CHUNK  # (MAX_PATCHES of 20 bytes: under a quarter of it)
    store, _ = make_store(chunk=chunk)
    data = bytearray(pattern(FANOUT * chunk * 2))
    cap = update(store, None, bytes(data), [(0, len(data))])
    versions = [(cap, bytes(data))]
    rewritten_at = None
    for n in range(MAX_PATCHES + 2):
        at = chunk + 10 + 3 * n  # each overlaps the one before
        data[at : at + 20] = bytes([n]) * 20
        counted = Counted(store)
        cap = update(store, cap, bytes(data), [(at, at + 20)], counted)
        versions.append((cap, bytes(data)))
        if any(len(o) == chunk for o in counted.objects) and rewritten_at is None:
            rewritten_at = n
        assert run(store.reader(cap).read(chunk, chunk)) == bytes(data[chunk : 2 * chunk])
    assert rewritten_at == MAX_PATCHES
    for version, expected in versions:
        assert read_all(store, version) == expected


def test_nothing_changed_is_the_same_cap() -> None:
    """An update without changes stores nothing and returns the base cap."""
    store, _ = make_store()
    data = pattern(10 * CHUNK)
    base = update(store, None, data, [(0, len(data))])
    counted = Counted(store)
    assert update(store, base, data, [], counted) == base
    assert counted.objects == []


def test_identical_chunks_are_stored_once() -> None:
    """A file of repeated chunks has one extent cap for them all, written to the grid once."""
    store, grid = make_store()
    data = bytes(CHUNK) * 40 + b"end"
    counted = Counted(store)
    cap = update(store, None, data, [(0, len(data))], counted)
    caps = extents(store, cap)
    assert len(set(caps[:40])) == 1
    assert read_all(store, cap) == data
    si = caps[0].storage_index
    writes = [r for c in grid for r in c.requests if r[0] == "write_immutable" and r[1] == si]
    assert len({(r[2], r[3]) for r in writes}) == len(writes)  # no block written twice
    assert len([o for o in counted.objects if o == bytes(CHUNK)]) == 1  # encoded once


def test_ranges_said_to_be_zeros_are_stored_once_and_never_read() -> None:
    """Extents in the ``zeros`` ranges (a sparse file's holes) are not read: the zero extent
    of each length is encoded and stored once, whichever the order the extents are stored
    in, and the file reads back with its zeros."""
    store, _ = make_store()
    size = 50 * CHUNK + 123
    data = bytearray(size)
    data[3 * CHUNK : 3 * CHUNK + 5] = b"hello"
    zeros = [(0, 3 * CHUNK), (3 * CHUNK + 5, size)]
    asked: list[tuple[int, int]] = []

    async def read(offset: int, length: int) -> bytes:
        asked.append((offset, length))
        return bytes(data[offset : offset + length])

    counted = Counted(store)
    tree = TreeUpdate(counted, store.servers, store.nodes, read, store.chunk_size, store.fanout)
    cap = run(tree.run(None, size, [(0, size)], zeros))
    assert asked == [(3 * CHUNK, CHUNK)], "only the extent holding data is read"
    full, last = bytes(CHUNK), bytes(123)
    assert counted.objects.count(full) == 1 and counted.objects.count(last) == 1
    assert tree.stored_bytes == 2 * CHUNK + 123
    assert read_all(store, cap) == bytes(data)


def test_appends_cost_about_the_appended_bytes() -> None:
    """Many small appends keep few extents and store each byte a few times at most."""
    store, _ = make_store(chunk=4096)
    data = pattern(3 * 4096 + 100)
    cap = update(store, None, data, [(0, len(data))])
    stored = 0
    appended = 0
    for i in range(200):
        piece = pattern(64, 1000 + i)
        data += piece
        appended += len(piece)
        cap, cost, _ = update_stored(store, cap, data, [])
        stored += cost
        extent_sizes = [e.size for e in extents(store, cap)]
        small = [s for s in extent_sizes if s < 4096]
        assert len(small) <= 8  # log2(4096 / 64) + 2
        assert all(s == 4096 for s in extent_sizes[: len(extent_sizes) - len(small)])
    assert read_all(store, cap) == data
    # Each appended byte stored at most 1 + log2(chunk / append) = 7 times (nodes aside).
    assert stored <= 7 * appended


def test_truncate_and_extend() -> None:
    """Truncation drops extents and rewrites the one cut; extension appends zeros."""
    store, _ = make_store()
    data = pattern(20 * CHUNK + 5)
    cap = update(store, None, data, [(0, len(data))])
    cut = data[: 7 * CHUNK + 300]
    counted = Counted(store)
    cap2 = update(store, cap, cut, [], counted)
    assert read_all(store, cap2) == cut
    assert extents(store, cap2)[:7] == extents(store, cap)[:7]
    longer = cut + bytes(9 * CHUNK)
    cap3 = update(store, cap2, longer, [])
    assert read_all(store, cap3) == longer
    back = update(store, cap3, longer[:100], [])
    assert isinstance(back, ImmutableReadCap)
    assert read_all(store, back) == longer[:100]


def test_single_object_bases() -> None:
    """A literal or one-object base is an extent; a one-object base larger than a chunk is
    stored again as chunks on its first change."""
    store, _ = make_store()
    small = pattern(CHUNK)
    base = run(store.uploader().upload_bytes(small))
    grown = small + pattern(5 * CHUNK, 2)
    cap = update(store, base, grown, [])
    assert extents(store, cap)[0] == base  # a whole chunk: kept as the first extent
    assert read_all(store, cap) == grown
    big = pattern(6 * CHUNK, 3)
    whole = run(store.uploader().upload_bytes(big))
    changed = big[:10] + b"!" + big[11:]
    cap2 = update(store, whole, changed, [(10, 11)])
    assert isinstance(cap2, ChunkedCap)
    assert read_all(store, cap2) == changed
    lit = LiteralCap(b"tiny")
    cap3 = update(store, lit, b"tiny" + pattern(3 * CHUNK, 4), [])
    assert read_all(store, cap3)[:4] == b"tiny"


def test_progress_counts_the_changed_bytes() -> None:
    """progress(n) adds up to the bytes that changed, appended bytes included."""
    store, _ = make_store()
    data = bytearray(pattern(10 * CHUNK))
    base = update(store, None, bytes(data), [(0, len(data))])
    data[100:200] = bytes(100)
    data += b"z" * 500
    seen: list[int] = []

    async def read(offset: int, length: int) -> bytes:
        return bytes(data[offset : offset + length])

    run(store.update_file(base, len(data), [(100, 200)], read, seen.append))
    assert sum(seen) == 600


def test_caps_round_trip_and_reduce() -> None:
    """TREE caps parse back to themselves and reduce to TREE-V verify caps; damage is named."""
    store, _ = make_store()
    cap = update(store, None, pattern(5 * CHUNK), [(0, 5 * CHUNK)])
    assert isinstance(cap, ChunkedCap)
    text = cap.to_string()
    assert text.startswith("GG:TREE:")
    assert parse(text) == cap
    verifier = cap.get_verify_cap()
    assert isinstance(verifier, ChunkedVerifyCap)
    assert verifier.storage_index == cap.storage_index == cap.node.storage_index
    assert verifier.size == cap.size == 5 * CHUNK
    assert parse(verifier.to_string()) == verifier
    assert verifier.to_string().startswith("GG:TREE-V:")
    assert cap.get_read_cap() is cap
    assert "key" not in repr(cap) or cap.node.key.hex() not in repr(cap)
    with pytest.raises(BadCapability, match="6 field"):
        parse(text.rsplit(":", 1)[0])
    with pytest.raises(BadCapability, match="size"):
        parse(text.rsplit(":", 1)[0] + ":x")


def test_damaged_node_gives_a_clear_error() -> None:
    """A node whose verified bytes are not a valid node, or disagree with its cap, is
    reported as a damaged chunk tree node naming its storage index (never a key)."""
    store, _ = make_store()
    base = update(store, None, pattern(5 * CHUNK), [(0, 5 * CHUNK)])
    assert isinstance(base, ChunkedCap)
    good = run(store.nodes.load(base, store.servers))
    bad_bytes = cbor2.dumps([1, 0, FANOUT, 2, [["not", "an entry"]]]) + bytes(60)
    stored = run(store.uploader().upload_bytes(bad_bytes))
    assert isinstance(stored, ImmutableReadCap)
    forged = ChunkedCap(stored, base.size)
    fresh, _ = make_store(store.servers)
    with pytest.raises(CorruptObject, match="chunk tree node with storage index") as info:
        run(fresh.reader(forged).read(0, 10))
    assert stored.key.hex() not in str(info.value)
    # A node whose entries do not add up to the size its cap names.
    with pytest.raises(CorruptObject, match="entries hold"):
        decode_node(encode_node(good), ChunkedCap(base.node, base.size + 1))
    with pytest.raises(CorruptObject, match="format version"):
        decode_node(cbor2.dumps([5, 0, 4, 1, []]), base)
    assert decode_node(encode_node(good), base) == good


def test_patched_extents_are_read_back_from_a_fresh_gateway_and_checked() -> None:
    """A node holding patched extents round-trips through its stored form (another store,
    nothing cached, reads the same bytes); patch lists that cannot be right are refused."""
    store, _ = make_store()
    data = bytearray(pattern(FANOUT * CHUNK * 2))
    cap = update(store, None, bytes(data), [(0, len(data))])
    for at, size in ((100, 10), (CHUNK + 5, 200), (CHUNK + 50, 30)):
        data[at : at + size] = pattern(size, at)
        cap = update(store, cap, bytes(data), [(at, at + size)])
    assert isinstance(cap, ChunkedCap)
    fresh, _ = make_store(store.servers)
    assert read_all(fresh, cap) == bytes(data)
    node = run(fresh.nodes.load(cap, fresh.servers))
    leaf = node if node.height == 0 else run(fresh.nodes.load(node.entries[0], fresh.servers))
    patched = [e for e in leaf.entries if isinstance(e, PatchedExtent)]
    assert [len(p.patches) for p in patched] == [1, 2]
    extent = patched[0].extent
    for bad in (
        [3, [0, b"x"], [[CHUNK, [0, b"y"]]]],  # reaches past its extent
        [3, [0, b"x" * 10], []],  # no patch
        [3, [0, b"x" * 10], [[0, [3, [0, b"x"], [[0, [0, b"y"]]]]]]],  # nested
        [3, [0, b"x" * 10], [[0, [0, b"y"]]] * (OLD_MAX_PATCHES + 1)],  # too many for 1
    ):
        raw = cbor2.dumps([1, 0, FANOUT, 1, [bad]]) + bytes(60)
        with pytest.raises(CorruptObject, match="damaged"):
            decode_node(raw, ChunkedCap(extent, 10))  # type: ignore[arg-type]


def test_small_nodes_are_padded_past_the_literal_threshold() -> None:
    """A node with one tiny extent is still longer than a literal (always stored)."""
    node = Node(0, 4, 1, (LiteralCap(b"abc"),))
    assert len(encode_node(node)) > 55


def test_node_cache_is_bounded() -> None:
    """The node cache keeps at most its capacity."""
    store, _ = make_store()
    cache = NodeCache(capacity=3)
    cap = update(store, None, pattern(FANOUT**2 * CHUNK), [(0, FANOUT**2 * CHUNK)])
    assert isinstance(cap, ChunkedCap)
    root = run(cache.load(cap, store.servers))
    for child in root.entries:
        assert isinstance(child, ChunkedCap)
        run(cache.load(child, store.servers))
    assert len(cache._nodes) == 3


def _requests(grid: list[object], kind: str) -> int:
    return sum(c.count(kind) for c in grid)  # type: ignore[attr-defined]


def test_random_reads_over_many_extents_open_each_extent_once() -> None:
    """Random reads over more extents than a reader keeps open list and open each extent's
    shares once: the store remembers where an opened extent's shares lie."""
    import random

    store, grid = make_store()
    store.recent_extents = ExtentCache(0)  # every read from the grid
    data = pattern(FANOUT**2 * CHUNK)  # 16 extents, more than the 8 readers a tree keeps
    cap = update(store, None, data, [(0, len(data))])
    rng = random.Random(3)
    offsets = [rng.randrange(len(data) - 8) for _ in range(200)]
    reader = store.reader(cap)
    clear(grid)
    for offset in offsets:
        assert run(reader.read(offset, 8)) == data[offset : offset + 8]
    lists = _requests(grid, "list_immutable")
    assert lists <= FANOUT**2 * len(grid)  # once per extent and server, not once per read
    # A second reader of the same file (another handle) opens nothing again.
    clear(grid)
    again = store.reader(cap)
    for offset in offsets[:50]:
        assert run(again.read(offset, 8)) == data[offset : offset + 8]
    assert _requests(grid, "list_immutable") == 0


def test_an_extent_whose_shares_failed_is_opened_afresh() -> None:
    """When an opened extent's servers fail, the next read does not reuse the failed reader:
    once the servers are back it reads again (a server that came back is asked again)."""
    store, grid = make_store()
    store.recent_extents = ExtentCache(0)  # every read from the grid
    data = pattern(FANOUT * CHUNK * 2)
    cap = update(store, None, data, [(0, len(data))])
    assert run(store.reader(cap).read(10, 5)) == data[10:15]
    for client in grid:
        client.fail_after = len(client.requests)  # every further request fails
    with pytest.raises(Exception):  # noqa: B017 - which error is immutable.py's business
        run(store.reader(cap).read(CHUNK * 5 + 3, 5))
    for client in grid:
        client.fail_after = None
        client.available = True
    assert run(store.reader(cap).read(CHUNK * 5 + 3, 5)) == data[CHUNK * 5 + 3 : CHUNK * 5 + 8]
    assert run(store.reader(cap).read(10, 5)) == data[10:15]
