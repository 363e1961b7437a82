"""Fixtures for the storage core: one server factory parametrized over both backends."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from storage.backend import IShareBackend
from storage.disk import DiskBackend
from storage.memory import MemoryBackend
from storage.server import StorageServer

ServerFactory = Callable[..., StorageServer]

#: An arbitrary but fixed start time for every test clock.
START = 1_700_000_000.0


@pytest.fixture
def clock() -> Clock:
    """A controllable clock starting at a fixed time."""
    result = Clock()
    result.advance(START)
    return result


@pytest.fixture(params=["memory", "disk", "disk-background"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    """Which backend the contract tests run against (``disk-background``: the disk backend
    as nodes run it, applying logged changes to its files in a thread)."""
    return str(request.param)


@pytest.fixture
def make_backend(
    backend_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[..., IShareBackend]:
    """Build a backend of the current kind; ``capacity`` only applies to memory."""

    def make(capacity: int | None = None) -> IShareBackend:
        if backend_kind == "memory":
            return MemoryBackend(capacity=capacity)
        backend = DiskBackend(tmp_path / "storage", background=backend_kind != "disk")
        request.addfinalizer(backend.stop_applying)
        return backend

    return make


@pytest.fixture
def make_server(make_backend: Callable[..., IShareBackend], clock: Clock) -> ServerFactory:
    """Build a StorageServer over a fresh backend of the current kind."""

    def make(reserved_space: int = 0, capacity: int | None = None) -> StorageServer:
        return StorageServer(make_backend(capacity), clock, reserved_space=reserved_space)

    return make


@pytest.fixture
def server(make_server: ServerFactory) -> StorageServer:
    """A StorageServer with no reserved space over the current backend."""
    return make_server()


def fresh_backend(kind: str) -> Iterator[IShareBackend]:
    """A new backend for each Hypothesis example (disk ones in a new temporary directory)."""
    if kind == "memory":
        yield MemoryBackend()
        return
    with tempfile.TemporaryDirectory() as directory:
        yield DiskBackend(Path(directory))
