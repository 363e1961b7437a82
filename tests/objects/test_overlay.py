"""Small changes carried in a chunk tree's cap (``GG:PTREE``, gateway.objects.overlay): an
update a client waits for stores nothing until the overlay is full, readers see the new
bytes, and an update nobody waits for (or one that does not fit) stores them in a tree."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from gateway.objects.capfields import MAX_OVERLAY_BYTES, encode_overlay
from gateway.objects.caps import Capability, ChunkedCap, ImmutableCap, parse
from gateway.objects.chunked import node_children
from gateway.objects.deepcheck import deep_check
from gateway.objects.dirformat import EntryMetadata
from gateway.objects.errors import BadCapability
from gateway.objects.overlay import OVERLAY_BYTES, OVERLAY_RANGES
from gateway.objects.repairer import repair
from gateway.objects.store import ObjectStore
from tests.objects.chunked_support import (
    CHUNK,
    make_store,
    pattern,
    read_all,
    renew_from,
    tree_objects,
)
from tests.objects.grid import GridClient, make_grid, run

SIZE = 20 * CHUNK


def stored(grid: list[GridClient]) -> int:
    """Immutable share writes the grid has seen."""
    return sum(c.count("write_immutable") for c in grid)


def put(
    store: ObjectStore,
    base: ImmutableCap | None,
    contents: bytes,
    changed: list[tuple[int, int]],
    overlay: bool,
) -> ImmutableCap:
    """``contents`` as a new version of ``base`` whose ``changed`` ranges differ."""

    async def read(offset: int, length: int) -> bytes:
        return contents[offset : offset + length]

    return run(store.update_file(base, len(contents), changed, read, overlay=overlay))


def tree_file() -> tuple[ObjectStore, list[GridClient], ChunkedCap, bytearray]:
    """A store and a file of 20 chunks stored as a tree."""
    store, grid = make_store()
    model = bytearray(pattern(SIZE))
    cap = put(store, None, bytes(model), [(0, SIZE)], overlay=False)
    assert isinstance(cap, ChunkedCap) and not cap.overlay
    return store, grid, cap, model


def test_an_awaited_small_change_stores_nothing_and_reads_back() -> None:
    """The change rides in the cap: no share is written, the tree is the base's, and a
    reader (this store's, and a fresh store's from the printed cap) sees the new bytes."""
    store, grid, base, model = tree_file()
    before = stored(grid)
    model[5000:5100] = b"x" * 100
    cap = put(store, base, bytes(model), [(5000, 5100)], overlay=True)
    assert isinstance(cap, ChunkedCap)
    assert stored(grid) == before
    assert cap.node == base.node and cap.tree == base
    assert cap.overlay == ((5000, b"x" * 100),)
    assert read_all(store, cap) == bytes(model)
    text = cap.to_string()
    assert text.startswith("GG:PTREE:") and parse(text) == cap
    fresh, _ = make_store(grid)
    assert read_all(fresh, parse(text)) == bytes(model)  # type: ignore[arg-type]
    assert run(store.reader(cap).read(5050, 100)) == bytes(model[5050:5150])


def test_changes_gather_in_the_overlay_until_it_is_full_then_a_tree_is_stored() -> None:
    """Successive changes join the overlay (the older bytes kept, the newer over them); the
    change that would pass OVERLAY_BYTES stores a tree holding all of them, overlay empty."""
    store, grid, cap, model = tree_file()
    writes = 0
    while True:
        offset = (writes * 3001) % (SIZE - 600)
        model[offset : offset + 512] = bytes([writes % 256]) * 512
        before = stored(grid)
        new = put(store, cap, bytes(model), [(offset, offset + 512)], overlay=True)
        assert isinstance(new, ChunkedCap)
        assert read_all(store, new) == bytes(model)
        writes += 1
        if not new.overlay:
            break
        assert stored(grid) == before and new.node == cap.node
        assert sum(len(d) for _, d in new.overlay) <= OVERLAY_BYTES
        assert len(new.overlay) <= OVERLAY_RANGES
        cap = new
    assert stored(grid) > before and new.node != cap.node
    assert writes > 1
    assert read_all(make_store(grid)[0], new) == bytes(model)


def test_an_update_nobody_waits_for_stores_the_overlay_in_a_tree() -> None:
    """CLOSE's upload (overlay not asked for) folds a base's overlay, even with no change."""
    store, _, base, model = tree_file()
    model[100:200] = b"y" * 100
    overlaid = put(store, base, bytes(model), [(100, 200)], overlay=True)
    assert isinstance(overlaid, ChunkedCap) and overlaid.overlay
    folded = put(store, overlaid, bytes(model), [], overlay=False)
    assert isinstance(folded, ChunkedCap) and not folded.overlay
    assert folded.node != base.node
    assert read_all(make_store(store.servers)[0], folded) == bytes(model)  # type: ignore[arg-type]


@pytest.mark.parametrize("change", ["append", "truncate", "zeros", "large"])
def test_a_change_the_overlay_cannot_carry_stores_a_tree(change: str) -> None:
    """A new size, ranges of zeros and a change past the limits store a tree, with the
    base's overlay in it."""
    store, _, base, model = tree_file()
    model[10:20] = b"z" * 10
    overlaid = put(store, base, bytes(model), [(10, 20)], overlay=True)
    assert isinstance(overlaid, ChunkedCap) and overlaid.overlay
    zeros: list[tuple[int, int]] = []
    if change == "append":
        model += b"a" * 100
        changed = [(SIZE, SIZE + 100)]
    elif change == "truncate":
        del model[SIZE - 100 :]
        changed = []
    elif change == "zeros":
        model[4096:8192] = bytes(4096)
        changed, zeros = [(4096, 8192)], [(4096, 8192)]
    else:
        model[0 : OVERLAY_BYTES + 1] = b"L" * (OVERLAY_BYTES + 1)
        changed = [(0, OVERLAY_BYTES + 1)]

    async def read(offset: int, length: int) -> bytes:
        return bytes(model[offset : offset + length])

    cap = run(store.update_file(overlaid, len(model), changed, read, zeros=zeros, overlay=True))
    assert isinstance(cap, ChunkedCap) and not cap.overlay
    assert read_all(store, cap) == bytes(model)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, SIZE - 1), st.integers(1, 3000), st.booleans()),
        min_size=1,
        max_size=25,
    )
)
def test_any_small_writes_read_back_as_the_model(writes: list[tuple[int, int, bool]]) -> None:
    """Any writes, each awaited or not, read back as the model file after every update."""
    store, _, cap, model = tree_file()
    current: ImmutableCap = cap
    for n, (offset, length, awaited) in enumerate(writes):
        end = min(SIZE, offset + length)
        model[offset:end] = bytes((n * 13 + i) % 256 for i in range(end - offset))
        current = put(store, current, bytes(model), [(offset, end)], overlay=awaited)
        assert read_all(store, current) == bytes(model)
        assert parse(current.to_string()) == current


def test_malformed_overlays_are_refused_without_repeating_the_cap() -> None:
    """A PTREE string whose overlay is not apart, in order, within the file, within the
    limits and canonical is refused, and the message never holds the string."""
    _, _, cap, _ = tree_file()
    head = cap.to_string().replace("GG:TREE:", "GG:PTREE:")
    bad = {
        "outside the file": encode_overlay(((SIZE - 1, b"ab"),)),
        "overlapping": encode_overlay(((10, b"abc"), (11, b"d"))),
        "touching": encode_overlay(((10, b"abc"), (13, b"d"))),
        "too large": encode_overlay(((0, bytes(MAX_OVERLAY_BYTES + 1)),)),
        "not canonical": encode_overlay(((10, b"abc"),)) + "AA",
        "not base64url": "ab+c",
    }
    for what, field in bad.items():
        text = f"{head}:{field}"
        with pytest.raises(BadCapability) as raised:
            parse(text)
        assert field not in str(raised.value), what
        assert head.split(":")[2] not in str(raised.value), what


def test_the_overlay_never_shows_in_repr_and_the_verify_cap_is_the_trees() -> None:
    """A cap with an overlay holds file bytes: repr leaves them out; the verify cap and
    the objects checks and leases walk are the tree's."""
    store, _, base, model = tree_file()
    model[0:6] = b"secret"
    cap = put(store, base, bytes(model), [(0, 6)], overlay=True)
    assert isinstance(cap, ChunkedCap)
    assert b"secret" not in repr(cap).encode() and "secret" not in repr(cap)
    assert cap.get_verify_cap() == base.get_verify_cap()
    fresh, _ = make_store(store.servers)  # type: ignore[arg-type]
    walked = run(node_children(cap, fresh.servers, fresh.nodes))
    assert walked == run(node_children(base, fresh.servers, fresh.nodes))


def test_a_directory_entry_carries_the_overlay_and_the_maintenance_walks_see_the_tree() -> None:
    """Linked in a directory, the overlaid cap comes back from a fresh listing as it went
    in; deep check, lease renewal and repair of it cover exactly its tree's objects."""
    clock = Clock()
    grid = make_grid(3, clock)
    store, _ = make_store(grid)
    model = bytearray(pattern(SIZE))
    base = put(store, None, bytes(model), [(0, SIZE)], overlay=False)
    model[700:800] = b"o" * 100
    cap = put(store, base, bytes(model), [(700, 800)], overlay=True)
    assert isinstance(cap, ChunkedCap) and cap.overlay
    objects = run(tree_objects(store, cap.tree))
    root = run(store.create_directory())
    run(root.add("f", cap, EntryMetadata(kind="file", mtime=0.0, ctime=0.0)))
    fresh, _ = make_store(grid)
    listed = run(fresh.directory(root.cap).list())["f"].cap
    assert listed == cap and read_all(fresh, listed) == bytes(model)  # type: ignore[arg-type]

    async def children(parent: Capability) -> AsyncIterator[Capability]:
        for entry in (await fresh.directory(parent).list()).values():  # type: ignore[arg-type]
            if entry.cap is not None:
                yield entry.cap

    result = run(deep_check(root.cap, children, grid, verify=True))
    assert result.unhealthy == 0 and not result.errors
    checked = {e.check.storage_index for e in result.entries if e.check.storage_index}
    assert checked == objects | {root.storage_index}
    report, renewals = renew_from(store, grid, clock, root.cap)
    assert {si for _, si in renewals} == objects | {root.storage_index}
    assert report.failures == ()
    si = cap.storage_index
    grid[0].backend.delete_share(si, next(iter(grid[0].backend.list_shares(si))))
    fixed = run(repair(cap, grid, store.secrets, store.params))
    assert fixed.attempted and fixed.ok
    assert read_all(make_store(grid)[0], cap) == bytes(model)
