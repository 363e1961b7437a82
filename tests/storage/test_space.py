"""Reserved space and available space, through StorageServer on every backend."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from storage.errors import NoSpace
from storage.interfaces import TestWriteVectors as Vectors
from storage.interfaces import WriteVector
from storage.memory import MemoryBackend
from storage.server import MAX_MUTABLE_SHARE_SIZE, StorageServer
from storage.space import UNKNOWN_SPACE, available_space
from tests.storage.conftest import ServerFactory
from tests.storage.values import CANCEL, RENEW, SI, SI2, UPLOAD, WE

HUGE = 2**62


def test_version_reports_limits(server: StorageServer) -> None:
    """get_version reports the space left and the maximum share sizes."""
    version = server.get_version()
    assert version.available_space > 0
    assert version.maximum_immutable_share_size == version.available_space
    assert version.maximum_mutable_share_size == MAX_MUTABLE_SHARE_SIZE
    assert version.application_version


def test_reserve_larger_than_disk(make_server: ServerFactory) -> None:
    """With more reserved than free, nothing is available (never negative) and nothing fits."""
    server = make_server(reserved_space=HUGE, capacity=10**6)
    assert server.get_version().available_space == 0
    with pytest.raises(NoSpace):
        server.allocate_buckets(SI, frozenset({0}), 1, UPLOAD, RENEW, CANCEL)
    with pytest.raises(NoSpace):
        server.read_test_write(SI, WE, RENEW, CANCEL, {0: Vectors(new_length=1)}, ())
    assert server.list_mutable(SI) == frozenset()


def test_allocation_larger_than_space(make_server: ServerFactory) -> None:
    """One share larger than the space available is refused."""
    server = make_server(capacity=10**6)
    with pytest.raises(NoSpace):
        server.allocate_buckets(SI, frozenset({0}), HUGE, UPLOAD, RENEW, CANCEL)


def test_reserve_boundary() -> None:
    """Size times share count must fit in free space minus the reserve."""
    server = StorageServer(MemoryBackend(capacity=1000), Clock(), reserved_space=400)
    assert server.get_version().available_space == 600
    with pytest.raises(NoSpace):
        server.allocate_buckets(SI, frozenset({0, 1, 2}), 201, UPLOAD, RENEW, CANCEL)
    assert server.list_immutable(SI) == frozenset()


def test_allocations_count_until_written() -> None:
    """Space promised to uploads in progress is not offered again; written bytes move to disk."""
    server = StorageServer(MemoryBackend(capacity=1000), Clock(), reserved_space=400)
    server.allocate_buckets(SI, frozenset({0, 1, 2}), 200, UPLOAD, RENEW, CANCEL)
    assert server.get_version().available_space == 0
    with pytest.raises(NoSpace):
        server.allocate_buckets(SI2, frozenset({0}), 1, UPLOAD, RENEW, CANCEL)
    server.write_immutable(SI, 0, UPLOAD, 0, b"x" * 100)
    assert server.get_version().available_space == 0
    server.abort_immutable(SI, 1, UPLOAD)
    assert server.get_version().available_space == 200


def test_mutable_growth_refused() -> None:
    """A mutable write that would grow past the available space is refused and not applied."""
    server = StorageServer(MemoryBackend(capacity=100), Clock(), reserved_space=50)
    write = {0: Vectors(write=(WriteVector(0, b"a" * 40),))}
    assert server.read_test_write(SI, WE, RENEW, CANCEL, write, ()).success
    grow = {0: Vectors(write=(WriteVector(40, b"b" * 11),))}
    with pytest.raises(NoSpace):
        server.read_test_write(SI, WE, RENEW, CANCEL, grow, ())
    assert server.read_mutable(SI, 0, 0, 100) == b"a" * 40
    # Rewriting in place needs no new space.
    same = {0: Vectors(write=(WriteVector(0, b"c" * 40),))}
    assert server.read_test_write(SI, WE, RENEW, CANCEL, same, ()).success


def test_available_space_helper() -> None:
    """available_space subtracts reserve and commitments, floors at 0, and handles unbounded."""
    assert available_space(1000, 100, 50) == 850
    assert available_space(100, 1000, 0) == 0
    assert available_space(None, 10, 10) == UNKNOWN_SPACE


def test_a_refused_allocation_renews_no_lease() -> None:
    """An allocation that cannot fit is refused before anything changes: the lease on the
    shares the index already holds is not renewed by it (a refusal changes nothing stored)."""
    clock = Clock()
    server = StorageServer(MemoryBackend(capacity=10_000), clock)
    server.allocate_buckets(SI, frozenset({0}), 100, UPLOAD, RENEW, CANCEL)
    server.write_immutable(SI, 0, UPLOAD, 0, b"x" * 100)
    clock.advance(1)
    before = server.backend.get_metadata(SI)
    clock.advance(1000)
    other_renew, other_cancel = b"R" * 32, b"C" * 32
    with pytest.raises(NoSpace):
        server.allocate_buckets(SI, frozenset({0, 1}), 50_000, UPLOAD, other_renew, other_cancel)
    assert server.backend.get_metadata(SI) == before
    assert server.backend.list_shares(SI) == frozenset({0})
