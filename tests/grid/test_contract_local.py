"""The IStorageClient contract over the embedded grid: LocalStorageClient on each share backend.

A single-machine gateway keeps its shares in process (``[grid] embedded``). The
object layer relies on that server behaving as a remote one does, whether its
shares live on disk (what the gateway runs) or in memory (what tests and
benchmarks run).
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from gateway.grid.interfaces import IStorageClient
from gateway.grid.local import LocalStorageClient
from storage.backend import IShareBackend
from storage.disk import DiskBackend
from storage.memory import MemoryBackend
from storage.server import StorageServer
from tests.grid.contract import OURS_IN_PROCESS, StorageClientContract, Upload, closing
from tests.storage.test_http_server import deferred_test


def local_client(testcase: TestCase, backend: IShareBackend) -> IStorageClient:
    """The in-process client over a storage core on ``backend``, closed with the test."""
    clock = Clock()
    testcase.addCleanup(backend.close)
    return closing(testcase, LocalStorageClient(StorageServer(backend, clock), clock=clock))


class LocalMemoryContractTests(StorageClientContract, TestCase):
    """The contract for the in-process client over the memory backend."""

    expect = OURS_IN_PROCESS

    async def make_client(self) -> IStorageClient:
        return local_client(self, MemoryBackend())


class LocalDiskContractTests(StorageClientContract, TestCase):
    """The contract for the in-process client over the disk backend (redo log, fsyncs)."""

    expect = OURS_IN_PROCESS

    async def make_client(self) -> IStorageClient:
        return local_client(self, DiskBackend(Path(self.mktemp())))


class LocalDiskDurabilityTests(TestCase):
    """What only the disk backend adds: shares the in-process client stored outlive it."""

    @deferred_test
    async def test_a_completed_share_is_there_after_reopening(self) -> None:
        """A share written through the client is read back by a new backend on the same
        directory (the gateway restarted), byte for byte."""
        path = Path(self.mktemp())
        first = DiskBackend(path)
        client = local_client(self, first)
        upload = Upload.new()
        await upload.allocate(client, {0}, 1000)
        await upload.write(client, 0, 0, b"d" * 1000)
        first.close()
        again = DiskBackend(path)
        self.addCleanup(again.close)
        assert again.list_shares(upload.si) == frozenset({0})
        assert again.read_share(upload.si, 0, 0, 1000) == b"d" * 1000
