"""The object store: one place that knows the grid's servers, secrets and encoding.

Frontends and the CLI get files and directories from here instead of building
uploaders, readers and mutable clients themselves. The server list is asked
for on every operation, so servers that join or leave are used at once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

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
from gateway.objects.immutable_format import DEFAULT_SEGMENT_SIZE, EncodingParams
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
    """Byte ranges of one immutable file; literal files need no grid.

    SFTP clients read in 32–64 KiB requests, many in flight; each would make
    the reader fetch and decrypt a whole segment. So reads go through a small
    cache of segment-aligned chunks, and concurrent requests for one chunk
    share a single fetch.
    """

    def __init__(
        self,
        cap: ImmutableCap,
        servers: Sequence[IStorageClient],
        chunk_size: int = DEFAULT_SEGMENT_SIZE,
        cached_chunks: int = 16,
    ):
        self.cap = cap
        self._reader = ImmutableReader(cap, servers) if isinstance(cap, ImmutableReadCap) else None
        self._chunk_size = chunk_size
        self._capacity = cached_chunks
        self._chunks: OrderedDict[int, Deferred[bytes]] = OrderedDict()

    @property
    def size(self) -> int:
        """The file's length."""
        return self.cap.size

    async def read(self, offset: int, length: int) -> bytes:
        """Bytes at ``offset`` (clamped at the end)."""
        if isinstance(self.cap, LiteralCap):
            return self.cap.data[offset : offset + length]
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        first, last = offset // self._chunk_size, (end - 1) // self._chunk_size
        pieces = [await self._chunk(i) for i in range(first, last + 1)]
        data = b"".join(pieces)
        start = offset - first * self._chunk_size
        return data[start : start + (end - offset)]

    async def _chunk(self, index: int) -> bytes:
        cached = self._chunks.get(index)
        if cached is None:
            assert self._reader is not None
            cached = Deferred.fromCoroutine(
                self._reader.read(index * self._chunk_size, self._chunk_size)
            )
            self._chunks[index] = cached
            while len(self._chunks) > self._capacity:
                self._chunks.popitem(last=False)
        else:
            self._chunks.move_to_end(index)
        try:
            return await _shared(cached)
        except BaseException:
            if self._chunks.get(index) is cached:
                del self._chunks[index]  # a failed fetch is not remembered
            raise


async def _shared(result: Deferred[bytes]) -> bytes:
    """Await a Deferred that other readers may also await (its result is not consumed)."""
    waiter: Deferred[bytes] = Deferred()

    def deliver(value: object) -> object:
        if isinstance(value, Failure):
            waiter.errback(value)
        else:
            waiter.callback(value)  # type: ignore[arg-type]
        return value

    result.addBoth(deliver)
    return await waiter
