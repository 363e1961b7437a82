"""Helpers for the chunk tree tests: a store with tiny chunks on the in-memory grid."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from twisted.internet.task import Clock

from gateway.maintenance import LeaseRenewer, RenewalReport
from gateway.objects import immutable_format as fmt
from gateway.objects.caps import ChunkedCap, ImmutableCap, ImmutableReadCap, LiteralCap
from gateway.objects.chunk_update import TreeUpdate
from gateway.objects.chunked import node_children
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.store import ObjectStore
from tests.objects.grid import GridClient, make_grid, run

CHUNK = 1024
FANOUT = 4
PARAMS = fmt.EncodingParams(k=2, happy=3, n=3, segment_size=256)
SECRETS = GatewaySecrets(convergence=b"c" * 32, lease=b"l" * 32)


def make_store(
    grid: list[GridClient] | None = None, chunk: int = CHUNK, fanout: int = FANOUT
) -> tuple[ObjectStore, list[GridClient]]:
    """A store with ``chunk``-byte chunks and ``fanout`` entries per node over a 3-server grid."""
    servers = grid if grid is not None else make_grid(3)
    store = ObjectStore(lambda: servers, SECRETS, PARAMS, Clock(), chunk_size=chunk, fanout=fanout)
    return store, servers


class Counted:
    """An upload function that records the bytes of every object it stores."""

    def __init__(self, store: ObjectStore):
        self._store = store
        self.objects: list[bytes] = []

    async def __call__(self, data: bytes) -> LiteralCap | ImmutableReadCap:
        self.objects.append(data)
        return await self._store.uploader().upload_bytes(data)


def update(
    store: ObjectStore,
    base: ImmutableCap | None,
    contents: bytes,
    changed: Sequence[tuple[int, int]],
    counted: Counted | None = None,
) -> ImmutableCap:
    """Store ``contents`` as a new version of ``base`` whose ``changed`` ranges differ."""

    async def read(offset: int, length: int) -> bytes:
        return contents[offset : offset + length]

    if counted is None:
        return run(store.update_file(base, len(contents), changed, read))
    tree = TreeUpdate(counted, store.servers, store.nodes, read, store.chunk_size, store.fanout)
    return run(tree.run(base, len(contents), changed))


async def tree_objects(store: ObjectStore, cap: ImmutableCap) -> set[bytes]:
    """Storage indexes of every node and stored extent of a file."""
    if not isinstance(cap, ChunkedCap):
        return set() if cap.storage_index is None else {cap.storage_index}
    found = {cap.storage_index}
    for child in await node_children(cap, store.servers, store.nodes):
        found |= await tree_objects(store, child)
    return found


def read_all(store: ObjectStore, cap: ImmutableCap) -> bytes:
    """Every byte of a file, read through the store's reader."""
    return run(store.reader(cap).read(0, cap.size))


def pattern(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that differ from chunk to chunk (no two chunks equal by accident)."""
    import random

    return random.Random(seed).randbytes(size)


def requested_indexes(grid: list[GridClient]) -> set[bytes]:
    """Storage indexes the grid's clients were asked to read or list since cleared."""
    return {r[1] for c in grid for r in c.requests if r[0] in ("read_immutable", "list_immutable")}


def clear(grid: list[GridClient]) -> None:
    """Forget the recorded requests."""
    for c in grid:
        c.requests.clear()


def update_stored(
    store: ObjectStore,
    base: ImmutableCap | None,
    contents: bytes,
    changed: Sequence[tuple[int, int]],
) -> tuple[ImmutableCap, int, int]:
    """Like :func:`update`, also returning the bytes of extents and the nodes it stored."""

    async def read(offset: int, length: int) -> bytes:
        return contents[offset : offset + length]

    tree = TreeUpdate(
        store.uploader().upload_bytes,
        store.servers,
        store.nodes,
        read,
        store.chunk_size,
        store.fanout,
    )
    cap = run(tree.run(base, len(contents), changed))
    return cap, tree.stored_bytes, tree.stored_nodes


def renew_from(
    store: ObjectStore, grid: list[GridClient], clock: Clock, root: Any
) -> tuple[RenewalReport, Counter[tuple[Any, bytes]]]:
    """Renew the leases on everything reachable from ``root``: the report, and how many
    times each (server, storage index) was renewed."""
    for client in grid:
        client.requests.clear()
    report = run(LeaseRenewer(store, clock).renew([root]))
    renewals = Counter(
        (client.server_id, r[1])
        for client in grid
        for r in client.requests
        if r[0] == "add_or_renew_lease"
    )
    return report, renewals
