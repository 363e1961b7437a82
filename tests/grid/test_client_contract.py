"""One contract for every IStorageClient: the HTTPS client (real TLS) and the embedded client.

Both run the same operations against the real storage core and must give the
same answers and raise the same :mod:`storage.errors`.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from gateway.grid.http_client import HttpStorageClient
from gateway.grid.interfaces import IStorageClient
from gateway.grid.local import LocalStorageClient
from storage.errors import (
    ConflictingWrite,
    InvalidRequest,
    NoSuchShare,
    NoSuchUpload,
    NotAuthorized,
)
from storage.interfaces import (
    ByteRange,
    ReadVector,
    WriteVector,
)
from storage.interfaces import (
    TestVector as TVector,
)
from storage.interfaces import (
    TestWriteVectors as TWVectors,
)
from storage.memory import MemoryBackend
from storage.server import StorageServer
from tests.storage.test_http_server import LiveStorage, deferred_test

SI = bytes(range(100, 116))
RENEW, CANCEL, UPLOAD, WE = b"r" * 32, b"c" * 32, b"u" * 32, b"w" * 32


class _Contract:
    """The behaviour every storage client shares; subclasses say how to build one."""

    async def client(self) -> IStorageClient:
        raise NotImplementedError

    @deferred_test
    async def test_provides_interface(self) -> None:
        """The client provides IStorageClient with a bytes server id and a nickname."""
        client = await self.client()
        assert verifyObject(IStorageClient, client)
        assert isinstance(client.server_id, bytes) and isinstance(client.nickname, str)

    @deferred_test
    async def test_version(self) -> None:
        """Limits and space fit in 64 bits; the health record learns the space."""
        client = await self.client()
        info = await client.get_version()
        assert info.available_space > 0 and info.maximum_mutable_share_size > 0
        assert client.health.available_space == info.available_space  # type: ignore[attr-defined]

    @deferred_test
    async def test_immutable(self) -> None:
        """Allocate, write in two chunks, list, read ranges, renew, advise; the errors."""
        client = await self.client()
        result = await client.allocate_buckets(SI, frozenset({0, 1}), 8, UPLOAD, RENEW, CANCEL)
        assert (result.already_have, result.allocated) == (frozenset(), frozenset({0, 1}))
        first = await client.write_immutable(SI, 0, UPLOAD, 0, b"abcd")
        assert not first.finished and first.required == (ByteRange(4, 8),)
        with self.assertRaises(ConflictingWrite):  # type: ignore[attr-defined]
            await client.write_immutable(SI, 0, UPLOAD, 0, b"xxxx")
        with self.assertRaises(NotAuthorized):  # type: ignore[attr-defined]
            await client.write_immutable(SI, 0, b"v" * 32, 4, b"efgh")
        assert (await client.write_immutable(SI, 0, UPLOAD, 4, b"efgh")).finished
        assert await client.list_immutable(SI) == frozenset({0})
        assert await client.read_immutable(SI, 0, 2, 4) == b"cdef"
        assert await client.read_immutable(SI, 0, 6, 100) == b"gh"
        assert await client.read_immutable(SI, 0, 8, 5) == b""
        with self.assertRaises(NoSuchShare):  # type: ignore[attr-defined]
            await client.read_immutable(SI, 1, 0, 4)
        again = await client.allocate_buckets(SI, frozenset({0, 1}), 8, UPLOAD, RENEW, CANCEL)
        assert again.already_have == frozenset({0})
        await client.abort_immutable(SI, 1, UPLOAD)
        with self.assertRaises(NoSuchUpload):  # type: ignore[attr-defined]
            await client.abort_immutable(SI, 1, UPLOAD)
        await client.add_or_renew_lease(SI, RENEW, CANCEL)
        await client.advise_corrupt_immutable(SI, 0, "block hash mismatch")
        with self.assertRaises(NoSuchShare):  # type: ignore[attr-defined]
            await client.add_or_renew_lease(bytes(16), RENEW, CANCEL)

    @deferred_test
    async def test_mutable(self) -> None:
        """Read-test-write creates, tests fail without writing, reads and listing."""
        client = await self.client()
        create = {3: TWVectors(test=(TVector(0, 1, b""),), write=(WriteVector(0, b"version one"),))}
        result = await client.read_test_write(SI, WE, RENEW, CANCEL, create, (ReadVector(0, 7),))
        assert result.success and result.reads == {}
        result = await client.read_test_write(SI, WE, RENEW, CANCEL, create, (ReadVector(0, 7),))
        assert not result.success and result.reads == {3: [b"version"]}
        update = {
            3: TWVectors(
                test=(TVector(0, 11, b"version one"),),
                write=(WriteVector(8, b"two"),),
                new_length=11,
            )
        }
        result = await client.read_test_write(SI, WE, RENEW, CANCEL, update, ())
        assert result.success
        assert await client.read_mutable(SI, 3, 0, 100) == b"version two"
        assert await client.list_mutable(SI) == frozenset({3})
        with self.assertRaises(NotAuthorized):  # type: ignore[attr-defined]
            await client.read_test_write(SI, b"W" * 32, RENEW, CANCEL, update, ())
        with self.assertRaises(NoSuchShare):  # type: ignore[attr-defined]
            await client.read_mutable(SI, 4, 0, 10)
        await client.advise_corrupt_mutable(SI, 3, "signature invalid")
        with self.assertRaises(NoSuchShare):  # type: ignore[attr-defined]
            await client.advise_corrupt_mutable(SI, 5, "no such share")

    @deferred_test
    async def test_invalid_requests(self) -> None:
        """Share numbers out of range and short secrets are refused as InvalidRequest."""
        client = await self.client()
        with self.assertRaises(InvalidRequest):  # type: ignore[attr-defined]
            await client.allocate_buckets(SI, frozenset({300}), 8, UPLOAD, RENEW, CANCEL)
        with self.assertRaises(InvalidRequest):  # type: ignore[attr-defined]
            await client.allocate_buckets(SI, frozenset({1}), 8, UPLOAD, b"short", CANCEL)


class HttpClientContractTests(_Contract, TestCase):
    """The contract over HTTPS on loopback to our server."""

    async def client(self) -> IStorageClient:
        live = await LiveStorage.start(self)
        client = HttpStorageClient.from_nurl(reactor, live.nurl, timeout=10)
        self.addCleanup(lambda: Deferred.fromCoroutine(client.close()))
        return client


class LocalClientContractTests(_Contract, TestCase):
    """The contract over the embedded core, in process."""

    async def client(self) -> IStorageClient:
        return LocalStorageClient(StorageServer(MemoryBackend(), reactor))
