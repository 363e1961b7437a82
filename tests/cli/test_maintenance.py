"""Lease renewal (gateway.maintenance) on the in-memory test grid, with time on a task.Clock."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

from twisted.internet.task import Clock

from gateway.maintenance import LeaseRenewer, PeriodicRenewal
from gateway.objects.caps import Capability
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.immutable_format import EncodingParams
from gateway.objects.store import ObjectStore
from storage.leases import RENEWAL_PERIOD
from tests.objects.grid import GridClient, make_grid, run

DAY = 86400.0
INTERVAL = 7 * DAY


def _store(grid: list[GridClient], clock: Clock) -> ObjectStore:
    return ObjectStore(lambda: grid, GatewaySecrets.generate(), EncodingParams(2, 3, 4), clock)


async def _tree(store: ObjectStore) -> tuple[Capability, list[bytes]]:
    """A root holding a file, a tiny (literal) file and a subdirectory with a file; the
    subdirectory's file is also linked from the root a second time.

    Returns the root's cap and the storage index of every object stored on the grid.
    """
    root = await store.create_directory()
    big = await store.upload(io.BytesIO(b"x" * 100_000))
    shared = await store.upload(io.BytesIO(b"y" * 50_000))
    tiny = await store.upload(io.BytesIO(b"tiny"))
    sub = await root.mkdir("sub")
    await sub.add("shared", shared)
    await root.add_many({"big": (big, None), "tiny": (tiny, None), "again": (shared, None)})
    indexes = [root.storage_index, sub.storage_index, big.storage_index, shared.storage_index]
    return root.cap, [si for si in indexes if si is not None]


def _expirations(grid: list[GridClient], si: bytes) -> list[int]:
    out = []
    for client in grid:
        metadata = client.backend.get_metadata(si)
        if metadata is not None and client.backend.list_shares(si):
            out.extend(lease.expiration for lease in metadata.leases)
    return out


def test_renewal_visits_every_object_once_and_renews_its_leases() -> None:
    """Every stored object under the root gets exactly one renewal request per server;
    afterwards each of its leases runs a full period from the renewal time."""
    clock = Clock()
    grid = make_grid(4, clock)
    store = _store(grid, clock)
    root, indexes = run(_tree(store))
    for client in grid:
        client.requests.clear()
    clock.advance(20 * DAY)

    report = run(LeaseRenewer(store, clock).renew([root]))

    assert report.objects == len(indexes)
    assert report.not_found == 0 and report.failures == ()
    renewals = Counter(
        (client.server_id, r[1])
        for client in grid
        for r in client.requests
        if r[0] == "add_or_renew_lease"
    )
    for si in indexes:
        for client in grid:
            assert renewals[(client.server_id, si)] == 1
        expirations = _expirations(grid, si)
        assert expirations and all(e == int(20 * DAY) + RENEWAL_PERIOD for e in expirations)
    assert report.leases_renewed == sum(
        1 for si in indexes for c in grid if c.backend.list_shares(si)
    )


def test_periodic_job_runs_on_the_clock_and_remembers_its_last_run(tmp_path: Path) -> None:
    """The job first runs after its start delay, then every interval; a restarted job
    waits for the rest of the interval since the remembered last run."""
    clock = Clock()
    grid = make_grid(3, clock)
    store = _store(grid, clock)
    root, indexes = run(_tree(store))
    state = tmp_path / "lease-renewal.json"
    job = PeriodicRenewal(clock, INTERVAL, lambda: store, lambda: [root.to_string()], state)

    job.start()
    clock.advance(59)
    assert job.last is None
    clock.advance(1)
    assert job.last is not None and job.last.finished == 60
    assert job.next_run() == 60 + INTERVAL

    clock.advance(INTERVAL)
    assert job.last.finished == 60 + INTERVAL
    for si in indexes:
        assert all(e == int(60 + INTERVAL) + RENEWAL_PERIOD for e in _expirations(grid, si))
    run(job.stop())
    assert job.next_run() is None

    clock.advance(DAY)
    again = PeriodicRenewal(clock, INTERVAL, lambda: store, lambda: [root.to_string()], state)
    again.start()
    assert again.next_run() == 60 + 2 * INTERVAL
    run(again.stop())


def test_missing_roots_and_unreachable_servers_are_reported() -> None:
    """A root that was never created counts as not found; a down server is a failure,
    and the walk still renews what the others hold."""
    clock = Clock()
    grid = make_grid(4, clock)
    store = _store(grid, clock)
    root, indexes = run(_tree(store))
    never_created = run(_tree(_store(make_grid(4, clock), clock)))[0]

    report = run(LeaseRenewer(store, clock).renew([root, never_created, root]))
    assert report.objects == len(indexes) + 1
    assert report.not_found == 1 and report.failures == ()

    grid[0].available = False
    report = run(LeaseRenewer(store, clock).renew([root]))
    assert report.objects == len(indexes) and report.not_found == 0
    assert report.failures and all(f.startswith("server 0:") for f in report.failures)
    assert report.leases_renewed == sum(
        1 for si in indexes for c in grid[1:] if c.backend.list_shares(si)
    )
