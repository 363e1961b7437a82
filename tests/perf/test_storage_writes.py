"""Fewer durable metadata writes: renewals within the granularity change nothing stored."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from storage.interfaces import TestWriteVectors as Vectors
from storage.interfaces import WriteVector
from storage.leases import RENEWAL_GRANULARITY, add_or_renew
from storage.memory import MemoryBackend
from storage.server import StorageServer
from tests.storage.values import CANCEL, RENEW, SI, WE


class CountingBackend(MemoryBackend):
    """Counts metadata writes (each one is a temp file + fsync + rename on disk)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metadata_writes = 0

    def put_metadata(self, storage_index: bytes, metadata: Any, durable: bool = True) -> None:
        self.metadata_writes += 1
        super().put_metadata(storage_index, metadata, durable)


def test_renewal_within_the_granularity_keeps_the_lease() -> None:
    """A renewal that would extend by less than the granularity leaves the lease as it is."""
    [lease] = add_or_renew((), RENEW, CANCEL, 1000.0)
    again = add_or_renew(
        (lease,), RENEW, CANCEL, 1000.0 + RENEWAL_GRANULARITY - 1, RENEWAL_GRANULARITY
    )
    assert again == (lease,)
    later = add_or_renew((lease,), RENEW, CANCEL, 1000.0 + RENEWAL_GRANULARITY, RENEWAL_GRANULARITY)
    assert later[0].expiration == lease.expiration + RENEWAL_GRANULARITY


def test_repeated_mutable_writes_store_metadata_once() -> None:
    """Back-to-back read-test-writes by one writer write the slot's metadata only the first time."""
    clock = Clock()
    clock.advance(10_000)
    backend = CountingBackend()
    server = StorageServer(backend, clock)
    vectors = {0: Vectors(write=(WriteVector(0, b"x"),))}
    for _ in range(5):
        assert server.read_test_write(SI, WE, RENEW, CANCEL, vectors, ()).success
        clock.advance(1)
    assert backend.metadata_writes == 1
    clock.advance(RENEWAL_GRANULARITY)
    server.read_test_write(SI, WE, RENEW, CANCEL, vectors, ())
    assert backend.metadata_writes == 2
