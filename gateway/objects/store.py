"""The object store: one place that knows the grid's servers, secrets and encoding.

Frontends and the CLI get files and directories from here instead of building
uploaders, readers and mutable clients themselves. The server list is asked
for on every operation, so servers that join or leave are used at once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, TypeVar

from attrs import define
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
from gateway.objects.concurrency import shared
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.dirnode import DirectoryNode
from gateway.objects.immutable import ImmutableReader, ImmutableUploader
from gateway.objects.immutable_format import DEFAULT_SEGMENT_SIZE, EncodingParams
from gateway.objects.mutable import MutableClient

T = TypeVar("T")


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

    SFTP clients read in 32–255 KiB requests, many in flight; each would make
    the reader fetch and decrypt a whole segment. So reads go through a small
    cache of segment-aligned chunks, and concurrent requests for one chunk
    share a single fetch. The chunks a read lacks are fetched as one run (one
    request per share for their blocks), and while reads are sequential the
    next ``readahead`` chunks are kept requested ahead of them.
    """

    def __init__(
        self,
        cap: ImmutableCap,
        servers: Sequence[IStorageClient],
        chunk_size: int = DEFAULT_SEGMENT_SIZE,
        cached_chunks: int = 32,
        readahead: int = 4,
    ):
        self.cap = cap
        self._reader = ImmutableReader(cap, servers) if isinstance(cap, ImmutableReadCap) else None
        self._chunk_size = chunk_size
        self._capacity = max(cached_chunks, 2 * readahead)
        self._readahead = readahead
        self._chunks: OrderedDict[int, Deferred[bytes | _Failed]] = OrderedDict()
        self._last_end = -1  # where the previous read ended
        self._ahead = 0  # chunks before this index have been requested by read-ahead

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
        size = self._chunk_size
        first, last = offset // size, (end - 1) // size
        sequential = offset == self._last_end
        self._last_end = end
        wanted = [self._cached(i) for i in range(first, last + 1)]
        self._request([i for i, d in zip(range(first, last + 1), wanted, strict=True) if d is None])
        if sequential and self._readahead > 0:
            self._read_ahead(last)
        pieces = [await self._chunk(i) for i in range(first, last + 1)]
        start = offset - first * size
        if len(pieces) == 1:
            return pieces[0][start : start + (end - offset)]
        return b"".join(pieces)[start : start + (end - offset)]

    def _read_ahead(self, last: int) -> None:
        """Keep the ``readahead`` chunks after ``last`` requested, a run of them at a time."""
        chunks = -(-self.size // self._chunk_size)
        if self._ahead > last + self._readahead // 2 or last + 1 >= chunks:
            return
        begin = max(self._ahead, last + 1)
        stop = min(chunks, begin + self._readahead)
        self._ahead = stop
        self._request([i for i in range(begin, stop) if self._cached(i) is None])

    def _cached(self, index: int) -> Deferred[bytes | _Failed] | None:
        return self._chunks.get(index)

    def _request(self, indexes: list[int]) -> None:
        """Start fetching chunks, each run of consecutive ones with one read."""
        assert self._reader is not None
        runs: list[list[int]] = []
        for i in indexes:
            if runs and runs[-1][-1] == i - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
        size = self._chunk_size
        for run in runs:
            whole = Deferred.fromCoroutine(self._reader.read(run[0] * size, len(run) * size))
            for n, index in enumerate(run):
                piece: Deferred[bytes | _Failed] = Deferred()
                self._chunks[index] = piece
                whole.addBoth(_deliver_slice, piece, n * size, size)
            whole.addErrback(lambda _: None)  # each piece got the failure
        while len(self._chunks) > self._capacity:
            self._chunks.popitem(last=False)

    async def _chunk(self, index: int) -> bytes:
        cached = self._chunks.get(index)
        if cached is None:
            self._request([index])
            cached = self._chunks[index]
        else:
            self._chunks.move_to_end(index)
        result = await shared(cached)
        if isinstance(result, _Failed):
            if self._chunks.get(index) is cached:
                del self._chunks[index]  # a failed fetch is not remembered
            result.failure.raiseException()
        assert isinstance(result, bytes)
        return result


@define
class _Failed:
    """A chunk whose fetch failed, held as a value: a read-ahead chunk may never be awaited,
    and a failed Deferred nobody awaits is logged as an unhandled error."""

    failure: Failure


def _deliver_slice(
    result: object, piece: Deferred[bytes | _Failed], start: int, size: int
) -> object:
    """Fire ``piece`` with its slice of a run's bytes (or the run's failure)."""
    if isinstance(result, Failure):
        piece.callback(_Failed(result))
    else:
        assert isinstance(result, bytes)
        piece.callback(result[start : start + size])
    return result
