"""Leases (31-day renewal, new secrets add leases) and the optional expiry crawler."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from storage.errors import NoSuchShare
from storage.expiry import LeaseExpirer, expiry_service, idle_upload_service
from storage.interfaces import TestWriteVectors as Vectors
from storage.interfaces import WriteVector
from storage.leases import RENEWAL_PERIOD, add_or_renew, all_expired, new_lease, renew_digest
from storage.server import StorageServer
from tests.storage.conftest import START
from tests.storage.values import CANCEL, RENEW, RENEW2, SI, SI2, UPLOAD, WE

DAY = 24 * 60 * 60


def upload(server: StorageServer, storage_index: bytes = SI, renew: bytes = RENEW) -> None:
    """Store one complete immutable share."""
    server.allocate_buckets(storage_index, frozenset({0}), 3, UPLOAD, renew, CANCEL)
    server.write_immutable(storage_index, 0, UPLOAD, 0, b"abc")


def expirations(server: StorageServer, storage_index: bytes = SI) -> list[float]:
    """Expiry times of the leases on an index."""
    metadata = server.backend.get_metadata(storage_index)
    assert metadata is not None
    return [lease.expiration for lease in metadata.leases]


def test_lease_helpers() -> None:
    """add_or_renew renews a matching lease (never shortening it) or adds one."""
    leases = add_or_renew((), RENEW, CANCEL, 100)
    assert [x.expiration for x in leases] == [100 + RENEWAL_PERIOD]
    assert [x.expiration for x in add_or_renew(leases, RENEW, CANCEL, 50)] == [100 + RENEWAL_PERIOD]
    both = add_or_renew(leases, RENEW2, CANCEL, 200)
    assert [x.expiration for x in both] == [100 + RENEWAL_PERIOD, 200 + RENEWAL_PERIOD]
    assert not all_expired(both, 100 + RENEWAL_PERIOD)
    assert all_expired(both, 200 + RENEWAL_PERIOD)
    assert not all_expired((), 10**12)
    assert RENEW not in repr(new_lease(RENEW, CANCEL, 0)).encode()


def test_upload_adds_lease(server: StorageServer) -> None:
    """Completing an upload leaves a 31-day lease under the uploader's renew secret."""
    upload(server)
    metadata = server.backend.get_metadata(SI)
    assert metadata is not None
    [lease] = metadata.leases
    assert lease.renew_digest == renew_digest(RENEW)
    assert lease.expiration == START + 31 * DAY


def test_renew_extends(server: StorageServer, clock: Clock) -> None:
    """Renewing with the same secret moves the expiry to now + 31 days."""
    upload(server)
    clock.advance(10 * DAY)
    server.add_or_renew_lease(SI, RENEW, CANCEL)
    assert expirations(server) == [START + 41 * DAY]


def test_new_secret_adds_lease(server: StorageServer, clock: Clock) -> None:
    """A renew secret not seen before adds a second lease."""
    upload(server)
    clock.advance(DAY)
    server.add_or_renew_lease(SI, RENEW2, CANCEL)
    assert expirations(server) == [START + 31 * DAY, START + 32 * DAY]


def test_renew_nothing_stored(server: StorageServer) -> None:
    """Renewing a lease where nothing is stored is NoSuchShare, even with an upload pending."""
    with pytest.raises(NoSuchShare):
        server.add_or_renew_lease(SI, RENEW, CANCEL)
    server.allocate_buckets(SI, frozenset({0}), 3, UPLOAD, RENEW, CANCEL)
    with pytest.raises(NoSuchShare):
        server.add_or_renew_lease(SI, RENEW, CANCEL)


def test_allocation_renews(server: StorageServer, clock: Clock) -> None:
    """Allocating where complete shares exist renews (or adds) the lease on them."""
    upload(server)
    clock.advance(DAY)
    server.allocate_buckets(SI, frozenset({0}), 3, b"other", RENEW, CANCEL)
    assert expirations(server) == [START + 32 * DAY]


def test_read_test_write_renews(server: StorageServer, clock: Clock) -> None:
    """A successful read-test-write adds or renews the writer's lease."""
    vectors = {0: Vectors(write=(WriteVector(0, b"x"),))}
    server.read_test_write(SI, WE, RENEW, CANCEL, vectors, ())
    clock.advance(DAY)
    server.read_test_write(SI, WE, RENEW, CANCEL, vectors, ())
    server.read_test_write(SI, WE, RENEW2, CANCEL, vectors, ())
    assert expirations(server) == [START + 32 * DAY, START + 32 * DAY]


def test_mutable_lease_renewal(server: StorageServer, clock: Clock) -> None:
    """add_or_renew_lease works on mutable slots too."""
    server.read_test_write(SI, WE, RENEW, CANCEL, {0: Vectors(write=(WriteVector(0, b"x"),))}, ())
    clock.advance(2 * DAY)
    server.add_or_renew_lease(SI, RENEW, CANCEL)
    assert expirations(server) == [START + 33 * DAY]


def test_expiry_deletes_only_expired(server: StorageServer, clock: Clock) -> None:
    """The crawler deletes indexes whose every lease expired and keeps the rest."""
    upload(server, SI)
    upload(server, SI2)
    clock.advance(20 * DAY)
    server.add_or_renew_lease(SI2, RENEW2, CANCEL)
    clock.advance(12 * DAY)
    expirer = LeaseExpirer(server.backend, clock, batch_size=1)
    assert expirer.run_to_completion() == 1
    assert server.list_immutable(SI) == frozenset()
    assert server.list_immutable(SI2) == {0}
    assert list(server.backend.storage_indexes()) == [SI2]


def test_expiry_keeps_pending_uploads(server: StorageServer, clock: Clock) -> None:
    """Expiry never touches an upload in progress."""
    server.allocate_buckets(SI, frozenset({0}), 3, UPLOAD, RENEW, CANCEL)
    clock.advance(40 * DAY)
    LeaseExpirer(server.backend, clock).run_to_completion()
    assert server.write_immutable(SI, 0, UPLOAD, 0, b"abc").finished


def test_expiry_service_runs_on_clock(server: StorageServer, clock: Clock) -> None:
    """The expiry service crawls on its clock's schedule, and stops cleanly."""
    upload(server)
    service = expiry_service(LeaseExpirer(server.backend, clock), interval=DAY)
    service.startService()
    try:
        clock.advance(30 * DAY)
        assert server.list_immutable(SI) == {0}
        clock.advance(2 * DAY)
        assert server.list_immutable(SI) == frozenset()
    finally:
        service.stopService()
    assert not clock.getDelayedCalls()


def test_idle_upload_service(server: StorageServer, clock: Clock) -> None:
    """The idle-upload service discards uploads idle for longer than the limit."""
    server.allocate_buckets(SI, frozenset({0}), 3, UPLOAD, RENEW, CANCEL)
    service = idle_upload_service(server, interval=60, max_idle=600)
    service.startService()
    try:
        clock.advance(660)
    finally:
        service.stopService()
    assert server.allocate_buckets(SI, frozenset({0}), 3, b"x", RENEW, CANCEL).allocated == {0}
