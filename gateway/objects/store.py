"""The object store: one place that knows the grid's servers, secrets and encoding.

Frontends and the CLI get files and directories from here instead of building
uploaders, readers and mutable clients themselves. The server list is asked
for on every operation, so servers that join or leave are used at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

from gateway.grid.interfaces import IStorageClient
from gateway.objects.caps import (
    DirectoryReadCap,
    DirectoryWriteCap,
    ImmutableCap,
    ImmutableReadCap,
    LiteralCap,
    MutableReadCap,
    MutableWriteCap,
)
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.dirnode import DirectoryNode
from gateway.objects.immutable import ImmutableReader, ImmutableUploader
from gateway.objects.immutable_format import EncodingParams
from gateway.objects.mutable import MutableClient


class ObjectStore:
    """Immutable files, mutable files and directories on the grid."""

    def __init__(
        self,
        servers: Callable[[], Sequence[IStorageClient]],
        secrets: GatewaySecrets,
        params: EncodingParams,
        clock: Any,
    ):
        self._servers = servers
        self.secrets = secrets
        self.params = params
        self.clock = clock

    @property
    def servers(self) -> Sequence[IStorageClient]:
        """The servers in use now."""
        return self._servers()

    def mutable_client(self) -> MutableClient:
        """A client for mutable objects on the current servers."""
        return MutableClient(self.servers, self.secrets, self.params)

    async def upload(self, source: BinaryIO) -> ImmutableCap:
        """Upload a seekable file as an immutable object."""
        return await ImmutableUploader(self.servers, self.secrets, self.params).upload(source)

    def reader(self, cap: ImmutableCap) -> FileReader:
        """Random-access reads of an immutable file."""
        return FileReader(cap, self.servers)

    async def read_mutable(self, cap: MutableWriteCap | MutableReadCap) -> bytes:
        """The current contents of a mutable file."""
        data, _ = await self.mutable_client().read(cap)
        return data

    async def create_directory(self) -> DirectoryNode:
        """A new, empty directory."""
        return await DirectoryNode.create(self.mutable_client(), clock=self.clock)

    def directory(self, cap: DirectoryWriteCap | DirectoryReadCap | str) -> DirectoryNode:
        """An existing directory (no I/O)."""
        return DirectoryNode.open(self.mutable_client(), cap, clock=self.clock)


class FileReader:
    """Byte ranges of one immutable file; literal files need no grid."""

    def __init__(self, cap: ImmutableCap, servers: Sequence[IStorageClient]):
        self.cap = cap
        self._reader = ImmutableReader(cap, servers) if isinstance(cap, ImmutableReadCap) else None

    @property
    def size(self) -> int:
        """The file's length."""
        return self.cap.size

    async def read(self, offset: int, length: int) -> bytes:
        """Bytes at ``offset`` (clamped at the end)."""
        if isinstance(self.cap, LiteralCap):
            return self.cap.data[offset : offset + length]
        assert self._reader is not None
        return await self._reader.read(offset, length)
