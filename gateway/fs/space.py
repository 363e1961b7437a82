"""What ``statvfs`` reports: the grid's usable space, in the terms ``df`` shows."""

from __future__ import annotations

from gateway.fs.interfaces import FilesystemStats
from gateway.grid.interfaces import IStorageClient
from gateway.objects.interfaces import IObjectStore

#: The block size reported (``f_bsize`` and ``f_frsize``).
BLOCK = 4096


def grid_space(store: IObjectStore) -> FilesystemStats:
    """Usable grid space: the servers' free space scaled by the encoding's expansion."""
    params = store.params
    free = sum(_available_space(server) for server in store.servers)
    blocks = free * params.k // params.n // BLOCK
    return FilesystemStats(BLOCK, blocks, blocks, blocks, 1 << 32, 1 << 31)


def _available_space(server: object) -> int:
    space = IStorageClient(server).health.available_space
    return 0 if space is None else space
