"""An update's small objects (patches, nodes) are encoded first and go to the servers
together: a small change to a large file costs one round of requests and one wait for the
grid, not one per level of its tree; a failure still fails the whole update."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from gateway.objects.caps import ChunkedCap
from gateway.objects.errors import UploadUnhappy
from gateway.objects.store import ObjectStore
from tests.objects.chunked_support import CHUNK, FANOUT, make_store, pattern, read_all
from tests.objects.grid import GridClient, make_grid, run

LATENCY = 1.0
"""Seconds each request takes on the test grid's clock."""


class _Timed(list[tuple[Any, ...]]):
    """A client's request log that also notes when each allocation and write arrived."""

    def __init__(self, clock: Clock, seen: list[tuple[float, str]]) -> None:
        super().__init__()
        self._clock, self._seen = clock, seen

    def append(self, what: tuple[Any, ...]) -> None:
        if what[0] in ("allocate_buckets", "write_immutable"):
            self._seen.append((self._clock.seconds(), what[0]))
        super().append(what)


def timed(grid: list[GridClient], clock: Clock) -> list[tuple[float, str]]:
    """Record (clock time, request kind) of every allocation and write the grid receives."""
    seen: list[tuple[float, str]] = []
    for client in grid:
        client.requests = _Timed(clock, seen)
    return seen


def changed(store: ObjectStore, base: ChunkedCap, contents: bytes, at: int, clock: Clock) -> Any:
    """Store ``contents`` (which differ from ``base`` by 100 bytes at ``at``); the new cap."""

    async def read(offset: int, length: int) -> bytes:
        return contents[offset : offset + length]

    return run(store.update_file(base, len(contents), [(at, at + 100)], read), clock)


def test_a_small_change_sends_every_object_of_the_update_at_once() -> None:
    """A 100-byte change to a three-level tree stores a node per level above the leaves
    (the patch kept in its leaf, the leaf in its parent). Their allocations all leave at
    one moment and their writes at the next: two request times in all, whatever the
    depth, and the new version reads back byte for byte."""
    clock = Clock()
    grid = make_grid(3, clock=clock, latency=LATENCY)
    store, _ = make_store(grid)
    old = pattern(FANOUT**2 * CHUNK + 5 * CHUNK)
    base = run(store.update_file(None, len(old), [(0, len(old))], _reader(old)), clock)
    assert isinstance(base, ChunkedCap)
    seen = timed(grid, clock)
    new = bytearray(old)
    new[7 * CHUNK + 10 : 7 * CHUNK + 110] = b"x" * 100
    cap = changed(store, base, bytes(new), 7 * CHUNK + 10, clock)
    allocations = sorted({t for t, kind in seen if kind == "allocate_buckets"})
    writes = sorted({t for t, kind in seen if kind == "write_immutable"})
    kinds = [kind for _, kind in seen]
    assert kinds.count("allocate_buckets") == 2 * 3  # inner node, root: 3 servers each
    assert len(allocations) == 1 and len(writes) == 1
    assert writes[0] == pytest.approx(allocations[0] + LATENCY, abs=0.05)
    assert read_all(store, cap) == bytes(new)


def test_a_store_that_fails_fails_the_update() -> None:
    """When the servers go away while an update's objects are being stored, the update
    raises (nothing names a half-stored version), and a later update of the same bytes
    succeeds once they are back (nothing of the failed one stays held)."""
    clock = Clock()
    grid = make_grid(3, clock=clock, latency=LATENCY)
    store, _ = make_store(grid)
    old = pattern(FANOUT * CHUNK * 2)
    base = run(store.update_file(None, len(old), [(0, len(old))], _reader(old)), clock)
    assert isinstance(base, ChunkedCap)
    new = bytearray(old)
    new[CHUNK + 10 : CHUNK + 110] = b"y" * 100
    for client in grid:
        client.available = False
    with pytest.raises(UploadUnhappy):
        changed(store, base, bytes(new), CHUNK + 10, clock)
    for client in grid:
        client.available = True
    cap = changed(store, base, bytes(new), CHUNK + 10, clock)
    assert read_all(store, cap) == bytes(new)


def _reader(contents: bytes) -> Any:
    async def read(offset: int, length: int) -> bytes:
        return contents[offset : offset + length]

    return read
