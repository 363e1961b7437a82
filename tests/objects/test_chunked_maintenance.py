"""Deep check, verify, repair and lease renewal of chunked files: every node and extent of
every version reachable, each once."""

from __future__ import annotations

from collections.abc import AsyncIterator

from twisted.internet.task import Clock

from gateway.objects.caps import Capability, ChunkedCap, DirectoryWriteCap, ImmutableCap
from gateway.objects.chunked import node_children
from gateway.objects.deepcheck import deep_check
from gateway.objects.dirformat import EntryMetadata
from gateway.objects.repairer import repair
from gateway.objects.store import ObjectStore
from tests.objects.chunked_support import (
    CHUNK,
    make_store,
    pattern,
    read_all,
    renew_from,
    tree_objects,
    update,
)
from tests.objects.grid import make_grid, run


def _versions(store: ObjectStore) -> tuple[list[ImmutableCap], list[bytes]]:
    """Three versions of a file (a change in the middle, then an append)."""
    data = bytearray(pattern(20 * CHUNK + 10))
    v1 = update(store, None, bytes(data), [(0, len(data))])
    data[9 * CHUNK : 9 * CHUNK + 200] = pattern(200, 3)  # a patch, stored as an object
    v2 = update(store, v1, bytes(data), [(9 * CHUNK, 9 * CHUNK + 200)])
    data += pattern(3 * CHUNK, 7)
    v3 = update(store, v2, bytes(data), [])
    return [v1, v2, v3], [bytes(data)]


def test_deep_check_covers_every_node_and_extent_of_every_version_once() -> None:
    """A directory linking three versions: each distinct node and extent checked once; a
    deleted share of an extent shared by all versions is repaired."""
    store, grid = make_store(make_grid(3))
    versions, _ = _versions(store)
    distinct: set[bytes] = set()
    for version in versions:
        distinct |= run(tree_objects(store, version))
    root = run(store.create_directory())
    for i, version in enumerate(versions):
        run(root.add(f"v{i}", version, EntryMetadata(kind="file", mtime=0.0, ctime=0.0)))

    async def children(cap: Capability) -> AsyncIterator[Capability]:
        assert isinstance(cap, DirectoryWriteCap)
        for entry in (await store.directory(cap).list()).values():
            if entry.cap is not None:
                yield entry.cap

    result = run(deep_check(root.cap, children, grid, verify=True))
    checked = [e.check.storage_index for e in result.entries if e.check.storage_index]
    assert len(checked) == len(set(checked))
    assert set(checked) == distinct | {root.storage_index}
    assert result.unhealthy == 0 and not result.errors
    assert "chunk tree node" in {e.check.kind for e in result.entries}

    # The first extent is shared by all three versions: lose one of its shares.
    first = run(node_children(versions[0], grid, store.nodes))[0]
    while isinstance(first, ChunkedCap):
        first = run(node_children(first, grid, store.nodes))[0]
    si = first.storage_index
    assert si is not None
    grid[0].backend.delete_share(si, next(iter(grid[0].backend.list_shares(si))))
    fixed = run(
        deep_check(
            root.cap,
            children,
            grid,
            verify=True,
            repair=lambda cap, before: repair(
                cap, grid, store.secrets, store.params, before=before
            ),
        )
    )
    assert (fixed.repairs_attempted, fixed.repairs_succeeded) == (1, 1)
    assert fixed.unhealthy == 0
    fresh, _ = make_store(grid)
    assert read_all(fresh, versions[0])[:CHUNK] == read_all(store, versions[2])[:CHUNK]


def test_a_chunked_root_node_is_repaired() -> None:
    """A chunked file's root node missing a share is re-created by repair of its cap."""
    store, grid = make_store(make_grid(3))
    versions, contents = _versions(store)
    cap = versions[-1]
    assert isinstance(cap, ChunkedCap)
    si = cap.storage_index
    grid[1].backend.delete_share(si, next(iter(grid[1].backend.list_shares(si))))
    result = run(repair(cap, grid, store.secrets, store.params))
    assert result.attempted and result.ok
    fresh, _ = make_store(grid)
    assert read_all(fresh, cap) == contents[0]


def test_lease_renewal_reaches_every_node_and_extent_once() -> None:
    """Lease renewal from a root linking three versions renews each distinct node and
    extent exactly once per server."""
    clock = Clock()
    grid = make_grid(3, clock)
    store, _ = make_store(grid)
    versions, _ = _versions(store)
    distinct: set[bytes] = set()
    for version in versions:
        distinct |= run(tree_objects(store, version))
    root = run(store.create_directory())
    for i, version in enumerate(versions):
        run(root.add(f"v{i}", version, EntryMetadata(kind="file", mtime=0.0, ctime=0.0)))
    report, renewals = renew_from(store, grid, clock, root.cap)
    assert {si for _, si in renewals} == distinct | {root.storage_index}
    assert set(renewals.values()) == {1}
    assert report.objects == len(distinct) + 1 and report.failures == ()
