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
from tests.grid.contract import OURS_IN_PROCESS, StorageClientContract, closing


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
