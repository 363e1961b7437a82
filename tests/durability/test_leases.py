"""Leases over time: live files are renewed and never collected; deleted files' shares expire.

On the in-memory grid with every clock a ``task.Clock``: the gateway's renewal walks every
account root (gateway.maintenance), and each storage server runs its expiry crawler
(storage.expiry). Months pass in a few steps.
"""

from __future__ import annotations

import io

from twisted.internet.task import Clock

from gateway.maintenance import LeaseRenewer
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.immutable_format import EncodingParams
from gateway.objects.store import ObjectStore
from storage.expiry import LeaseExpirer
from tests.objects.grid import make_grid, run

DAY = 86400.0


def test_deleted_files_are_collected_and_live_files_never_are() -> None:
    """Over 120 days with weekly renewal and daily expiry crawls: every live file stays
    readable; the shares of a file unlinked on day 1 are deleted once its lease runs out."""
    clock = Clock()
    grid = make_grid(4, clock)
    store = ObjectStore(lambda: grid, GatewaySecrets.generate(), EncodingParams(2, 3, 4), clock)

    async def setup() -> tuple[object, bytes, dict[str, bytes]]:
        root = await store.create_directory()
        live = {f"live{i}": bytes([i]) * 70_000 for i in range(3)}
        for name, data in live.items():
            await root.add(name, await store.upload(io.BytesIO(data)))
        doomed = await store.upload(io.BytesIO(b"z" * 90_000))
        await root.add("doomed", doomed)
        assert doomed.storage_index is not None
        return root, doomed.storage_index, live

    root, doomed_si, live = run(setup())
    clock.advance(DAY)
    run(root.remove("doomed"))  # type: ignore[attr-defined]
    expirers = [LeaseExpirer(client.backend, clock) for client in grid]
    renewer = LeaseRenewer(store, clock)
    collected_on = None
    for day in range(2, 121):
        clock.advance(DAY)
        if day % 7 == 0:
            report = run(renewer.renew([root.cap]))  # type: ignore[attr-defined]
            assert report.failures == ()
        for expirer in expirers:
            expirer.run_to_completion()
        held = sum(len(c.backend.list_shares(doomed_si)) for c in grid)
        if held == 0 and collected_on is None:
            collected_on = day
    assert collected_on is not None and 31 <= collected_on <= 33, collected_on

    async def read_back() -> dict[str, bytes]:
        entries = await root.list()  # type: ignore[attr-defined]
        return {name: await store.reader(e.cap).read(0, 1 << 20) for name, e in entries.items()}

    assert run(read_back()) == live
    print(
        f"doomed file collected on day {collected_on}; {len(live)}/{len(live)} live files intact "
        "after 120 days"
    )
