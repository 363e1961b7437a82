"""The contract of :class:`~gateway.grid.interfaces.IStorageClient`, written once.

The object layer places shares, reads them back, renews leases and updates
mutable slots through ``IStorageClient`` alone, whichever server is behind it:
the embedded core in process, our storage server over HTTPS, or an unmodified
Tahoe-LAFS 1.20 node. :class:`StorageClientContract` holds one small test per
promise; each ``test_contract_*.py`` module mixes it into a trial ``TestCase``
that says how to make a client (:meth:`~StorageClientContract.make_client`) and
what that implementation answers where implementations legitimately differ
(:class:`Expectations`, with the differences documented in ``docs/storage.rst``).
:class:`NurlContract` adds what a client built from a NURL promises about its
credentials, for clients that reach a real TLS listener.

Every test uses fresh random storage indexes and secrets, so implementations
backed by one long-running server process share it across tests.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import ClassVar, TypeVar

from attrs import frozen
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim
from twisted.trial.unittest import TestCase
from twisted.web.client import URI, Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IBodyProducer, IResponse
from twisted.web.server import Site
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gateway.grid.http_client import HttpStorageClient
from gateway.grid.interfaces import IStorageClient, ServerHealth, ServerUnavailable
from storage import wire
from storage.errors import (
    ConflictingWrite,
    InvalidRequest,
    NoSuchShare,
    NoSuchUpload,
    NotAuthorized,
    RangeNotSatisfiable,
    StorageError,
)
from storage.interfaces import (
    AllocationResult,
    ByteRange,
    ReadTestWriteResult,
    ReadVector,
    TestWriteVectors,
    WriteResult,
    WriteVector,
)
from storage.interfaces import TestVector as TVector
from storage.tls import generate_tls_credentials
from tests.grid_e2e.processes import stop_pid
from tests.storage.test_http_server import deferred_test

# --- what differs between implementations ----------------------------------------------


@frozen
class Expectations:
    """What one implementation answers where implementations may legitimately differ.

    The defaults are our storage core's answers (in process or over HTTPS);
    ``docs/storage.rst`` lists where Tahoe-LAFS 1.20 answers differently.
    """

    application_version: bytes = b"grid-storage/"
    """How the version answer names the server's software (a prefix)."""
    reallocation_offers_own_uploads: bool = True
    """Allocating again with the same upload secret offers the shares it is still uploading."""
    write_without_upload: type[StorageError] = NoSuchUpload
    """The error of a write to a share that has no upload in progress."""
    abort_without_upload: type[StorageError] = NoSuchUpload
    """The error of aborting an upload that is not (or no longer) in progress."""
    abort_with_wrong_secret: type[StorageError] = NoSuchUpload
    """The error of aborting someone else's upload (another upload secret)."""
    short_write_enabler: type[StorageError] | None = InvalidRequest
    """The error of a write enabler shorter than 32 bytes (None: it is accepted)."""
    write_past_allocated_size: type[Exception] = RangeNotSatisfiable
    """The error of a write beyond the allocated size of a share."""
    empty_write: type[StorageError] | None = InvalidRequest
    """The error of an immutable write of no bytes (None: accepted, and nothing changes)."""
    new_length_extends: bool = True
    """A read-test-write's ``new_length`` beyond the share's end extends it with zeros."""


OURS = Expectations()
"""Our storage server, over HTTPS."""

OURS_IN_PROCESS = Expectations(empty_write=None)
"""The embedded core through the in-process client: it has no wire that forbids an
empty chunk, and the core writes nothing for one."""

TAHOE_1_20 = Expectations(
    application_version=b"tahoe-lafs/1.20",
    reallocation_offers_own_uploads=False,
    write_without_upload=NoSuchShare,
    abort_without_upload=NoSuchShare,
    abort_with_wrong_secret=NotAuthorized,
    short_write_enabler=None,
    write_past_allocated_size=ServerUnavailable,
    new_length_extends=False,
)
"""An unmodified Tahoe-LAFS 1.20 storage node, over HTTPS.

Tahoe allocates share number 256 and answers so, an answer our client refuses
as malformed; and it fails (500) a write beyond the allocated size: our client
reports both as the server being unavailable."""


# --- values -------------------------------------------------------------------------------


def new_storage_index() -> bytes:
    """A storage index no other test uses."""
    return os.urandom(16)


def new_secret() -> bytes:
    """A lease secret, upload secret or write enabler no other test uses."""
    return os.urandom(32)


@frozen
class Lease:
    """The renew and cancel secrets of one lease."""

    renew: bytes
    cancel: bytes

    @classmethod
    def new(cls) -> Lease:
        return cls(new_secret(), new_secret())


@frozen
class Upload:
    """One immutable upload: its storage index, upload secret and lease."""

    si: bytes
    secret: bytes
    lease: Lease

    @classmethod
    def new(cls, si: bytes | None = None) -> Upload:
        return cls(si or new_storage_index(), new_secret(), Lease.new())

    def again(self) -> Upload:
        """Another uploader of the same storage index (its own secrets)."""
        return Upload.new(self.si)

    async def allocate(
        self, client: IStorageClient, shares: set[int] | frozenset[int], size: int
    ) -> AllocationResult:
        result: AllocationResult = await client.allocate_buckets(
            self.si, frozenset(shares), size, self.secret, self.lease.renew, self.lease.cancel
        )
        return result

    async def write(
        self, client: IStorageClient, share: int, offset: int, data: bytes
    ) -> WriteResult:
        result: WriteResult = await client.write_immutable(
            self.si, share, self.secret, offset, data
        )
        return result


@frozen
class Slot:
    """One mutable slot: its storage index, write enabler and lease."""

    si: bytes
    write_enabler: bytes
    lease: Lease

    @classmethod
    def new(cls) -> Slot:
        return cls(new_storage_index(), new_secret(), Lease.new())

    async def rtw(
        self,
        client: IStorageClient,
        vectors: dict[int, TestWriteVectors],
        reads: tuple[ReadVector, ...] = (),
        write_enabler: bytes | None = None,
    ) -> ReadTestWriteResult:
        result: ReadTestWriteResult = await client.read_test_write(
            self.si,
            write_enabler or self.write_enabler,
            self.lease.renew,
            self.lease.cancel,
            vectors,
            reads,
        )
        return result

    async def write(self, client: IStorageClient, share: int, data: bytes) -> None:
        """Create or overwrite a share unconditionally."""
        result = await self.rtw(client, {share: TestWriteVectors(write=(WriteVector(0, data),))})
        assert result.success


async def uploaded(
    client: IStorageClient, data: bytes, shares: frozenset[int] = frozenset({0})
) -> Upload:
    """A complete immutable upload of ``data`` as each of ``shares``."""
    upload = Upload.new()
    await upload.allocate(client, shares, len(data))
    for share in shares:
        assert (await upload.write(client, share, 0, data)).finished
    return upload


async def refused(expected: type[Exception], call: Awaitable[object]) -> Exception:
    """The error ``call`` raised, which must be an ``expected``."""
    try:
        result = await call
    except expected as e:
        return e
    except Exception as e:
        raise AssertionError(f"expected {expected.__name__}, got {e!r}") from e
    raise AssertionError(f"expected {expected.__name__}, got the answer {result!r}")


C = TypeVar("C", bound=IStorageClient)

DATA = bytes(range(256)) * 4  # 1 KiB, every byte value, no two neighbouring chunks alike


# --- the contract ---------------------------------------------------------------------------


class StorageClientContract:
    """What every IStorageClient promises, one behaviour per test.

    Mix into a trial ``TestCase``; define :meth:`make_client` (registering any
    cleanup with ``addCleanup``) and set :attr:`expect`.
    """

    expect: ClassVar[Expectations] = OURS
    keeps_connections: ClassVar[bool] = False
    """Whether the client keeps a connection open between requests (a pooled socket)."""
    timeout = 30  # seconds per test (trial)

    async def make_client(self) -> IStorageClient:
        """A new client of this implementation's server, closed when the test ends."""
        raise NotImplementedError

    def open_connections(self) -> int:
        """How many connections to the server this process holds open now."""
        return 0

    # -- the client itself ----------------------------------------------------------------

    @deferred_test
    async def test_provides_interface(self) -> None:
        """Callers use any provider alike: every attribute and method of IStorageClient."""
        client = await self.make_client()
        assert verifyObject(IStorageClient, client)
        assert isinstance(client.server_id, bytes) and client.server_id
        assert isinstance(client.nickname, str) and client.nickname
        assert isinstance(client.health, ServerHealth)

    @deferred_test
    async def test_health_before_any_request(self) -> None:
        """Before the server was asked, health claims no space and no failure."""
        client = await self.make_client()
        assert client.health.available_space is None
        assert client.health.last_error is None

    @deferred_test
    async def test_health_after_version(self) -> None:
        """After a version answer, health shows the server connected with that answer's space."""
        client = await self.make_client()
        info = await client.get_version()
        health = client.health
        assert health.connected and health.last_error is None
        assert health.available_space == info.available_space
        assert health.last_latency is not None and health.last_latency >= 0

    @deferred_test
    async def test_health_after_refusal(self) -> None:
        """A refused request still means the server is reachable: connected, no error."""
        client = await self.make_client()
        await refused(NoSuchShare, client.read_immutable(new_storage_index(), 0, 0, 10))
        assert client.health.connected and client.health.last_error is None

    @deferred_test
    async def test_close_releases_connections(self) -> None:
        """Once close() returns, the client holds no connection to the server open."""
        client = await self.make_client()
        await client.get_version()
        assert self.open_connections() == (1 if self.keeps_connections else 0)
        await client.close()
        assert self.open_connections() == 0

    @deferred_test
    async def test_close_twice_then_use(self) -> None:
        """close() may be called again, and a closed client still answers requests."""
        client = await self.make_client()
        await client.get_version()
        await client.close()
        await client.close()
        assert (await client.get_version()).available_space > 0

    # -- version ----------------------------------------------------------------------------

    @deferred_test
    async def test_version_limits(self) -> None:
        """The version answer gives positive share-size limits and available space."""
        info = await (await self.make_client()).get_version()
        assert info.maximum_immutable_share_size > 0
        assert info.maximum_mutable_share_size > 0
        assert info.available_space > 0

    @deferred_test
    async def test_version_names_software(self) -> None:
        """The version answer names the server's software (shown on the status page)."""
        info = await (await self.make_client()).get_version()
        assert info.application_version.startswith(self.expect.application_version)

    # -- immutable: allocation -------------------------------------------------------------

    @deferred_test
    async def test_allocate_new_shares(self) -> None:
        """A new storage index: every requested share is allocated, none already held."""
        client = await self.make_client()
        result = await Upload.new().allocate(client, {0, 1, 2}, 100)
        assert result == AllocationResult(frozenset(), frozenset({0, 1, 2}))

    @deferred_test
    async def test_allocate_again_same_secret(self) -> None:
        """Allocating again (an uploader retrying) gets the new shares, and none twice over."""
        client = await self.make_client()
        upload = Upload.new()
        await upload.allocate(client, {0, 1}, 100)
        again = await upload.allocate(client, {0, 1, 2}, 100)
        assert again.already_have == frozenset()
        own = {0, 1} if self.expect.reallocation_offers_own_uploads else set()
        assert again.allocated == frozenset({2} | own)

    @deferred_test
    async def test_allocate_skips_uploads_of_others(self) -> None:
        """A share someone else is uploading is not offered to a second uploader."""
        client = await self.make_client()
        first = Upload.new()
        await first.allocate(client, {0}, 100)
        second = await first.again().allocate(client, {0, 1}, 100)
        assert second == AllocationResult(frozenset(), frozenset({1}))

    @deferred_test
    async def test_allocate_reports_already_have(self) -> None:
        """A complete share is reported as already held, to its uploader and to anyone else."""
        client = await self.make_client()
        upload = await uploaded(client, DATA)
        result = await upload.again().allocate(client, {0, 1}, len(DATA))
        assert result == AllocationResult(frozenset({0}), frozenset({1}))
        assert (await upload.allocate(client, {0}, len(DATA))).already_have == frozenset({0})

    # -- immutable: writes -------------------------------------------------------------------

    @deferred_test
    async def test_write_in_order(self) -> None:
        """Chunks written in order: the last one finishes the share, which is then listed."""
        client = await self.make_client()
        upload = Upload.new()
        await upload.allocate(client, {0}, len(DATA))
        first = await upload.write(client, 0, 0, DATA[:300])
        assert not first.finished and first.required == (ByteRange(300, len(DATA)),)
        assert (await upload.write(client, 0, 300, DATA[300:])).finished
        assert await client.list_immutable(upload.si) == frozenset({0})

    @deferred_test
    async def test_write_out_of_order(self) -> None:
        """Chunks may arrive in any order (Content-Range); the share is whole when all are in."""
        client = await self.make_client()
        upload = Upload.new()
        await upload.allocate(client, {0}, len(DATA))
        last = await upload.write(client, 0, 512, DATA[512:])
        assert not last.finished and last.required == (ByteRange(0, 512),)
        assert (await upload.write(client, 0, 0, DATA[:512])).finished
        assert await client.read_immutable(upload.si, 0, 0, len(DATA)) == DATA

    @deferred_test
    async def test_write_reports_missing_ranges(self) -> None:
        """After each write the answer lists every byte range still missing."""
        client = await self.make_client()
        upload = Upload.new()
        await upload.allocate(client, {0}, len(DATA))
        result = await upload.write(client, 0, 100, DATA[100:200])
        assert result.required == (ByteRange(0, 100), ByteRange(200, len(DATA)))

    @deferred_test
    async def test_rewrite_same_bytes(self) -> None:
        """Writing bytes again with the same contents (a retried request) is accepted."""
        client = await self.make_client()
        upload = Upload.new()
        await upload.allocate(client, {0}, len(DATA))
        await upload.write(client, 0, 0, DATA[:600])
        assert not (await upload.write(client, 0, 500, DATA[500:700])).finished
        assert (await upload.write(client, 0, 600, DATA[600:])).finished
        assert await client.read_immutable(upload.si, 0, 0, len(DATA)) == DATA

    @deferred_test
    async def test_conflicting_write(self) -> None:
        """Different bytes over written ones are refused, and the written bytes are kept."""
        client = await self.make_client()
        upload = Upload.new()
        await upload.allocate(client, {0}, len(DATA))
        await upload.write(client, 0, 0, DATA[:600])
        await refused(ConflictingWrite, upload.write(client, 0, 500, b"\xff" * 200))
        assert (await upload.write(client, 0, 600, DATA[600:])).finished
        assert await client.read_immutable(upload.si, 0, 0, len(DATA)) == DATA

    @deferred_test
    async def test_write_wrong_upload_secret(self) -> None:
        """Only the holder of the upload secret may write a share being uploaded."""
        client = await self.make_client()
        upload = Upload.new()
        await upload.allocate(client, {0}, len(DATA))
        intruder = Upload(upload.si, new_secret(), upload.lease)
        await refused(NotAuthorized, intruder.write(client, 0, 0, DATA))
        assert await client.list_immutable(upload.si) == frozenset()

    @deferred_test
    async def test_write_without_allocation(self) -> None:
        """A write to a share that was never allocated is refused."""
        client = await self.make_client()
        upload = Upload.new()
        await upload.allocate(client, {0}, len(DATA))
        await refused(self.expect.write_without_upload, upload.write(client, 1, 0, DATA))

    @deferred_test
    async def test_write_past_allocated_size(self) -> None:
        """Bytes beyond the allocated size are refused (see Expectations)."""
        client = await self.make_client()
        upload = Upload.new()
        await upload.allocate(client, {0}, 100)
        too_far = upload.write(client, 0, 90, b"x" * 20)
        await refused(self.expect.write_past_allocated_size, too_far)

    @deferred_test
    async def test_write_nothing(self) -> None:
        """A write of no bytes changes nothing (see Expectations.empty_write)."""
        client = await self.make_client()
        upload = Upload.new()
        await upload.allocate(client, {0}, 100)
        if self.expect.empty_write is None:
            assert not (await upload.write(client, 0, 0, b"")).finished
        else:
            await refused(self.expect.empty_write, upload.write(client, 0, 0, b""))
        assert await client.list_immutable(upload.si) == frozenset()

    @deferred_test
    async def test_incomplete_share_hidden(self) -> None:
        """A share missing some bytes is neither listed nor readable."""
        client = await self.make_client()
        upload = Upload.new()
        await upload.allocate(client, {0}, len(DATA))
        await upload.write(client, 0, 0, DATA[:-1])
        assert await client.list_immutable(upload.si) == frozenset()
        await refused(NoSuchShare, client.read_immutable(upload.si, 0, 0, 10))

    # -- immutable: reads and listing ---------------------------------------------------------

    @deferred_test
    async def test_read_whole_share(self) -> None:
        """A share of many chunks reads back byte for byte in one request."""
        client = await self.make_client()
        data = os.urandom(200_000)
        upload = Upload.new()
        await upload.allocate(client, {0}, len(data))
        for offset in range(0, len(data), 65536):
            await upload.write(client, 0, offset, data[offset : offset + 65536])
        assert await client.read_immutable(upload.si, 0, 0, len(data)) == data

    @deferred_test
    async def test_read_range(self) -> None:
        """A range inside the share reads exactly those bytes."""
        client = await self.make_client()
        upload = await uploaded(client, DATA)
        assert await client.read_immutable(upload.si, 0, 100, 50) == DATA[100:150]

    @deferred_test
    async def test_read_clamped_at_end(self) -> None:
        """A range running past the end reads up to the end."""
        client = await self.make_client()
        upload = await uploaded(client, DATA)
        assert await client.read_immutable(upload.si, 0, 1000, 100) == DATA[1000:]

    @deferred_test
    async def test_read_at_end(self) -> None:
        """A range starting at the end reads nothing."""
        client = await self.make_client()
        upload = await uploaded(client, DATA)
        assert await client.read_immutable(upload.si, 0, len(DATA), 10) == b""

    @deferred_test
    async def test_read_nothing(self) -> None:
        """A read of length zero answers no bytes."""
        client = await self.make_client()
        upload = await uploaded(client, DATA)
        assert await client.read_immutable(upload.si, 0, 10, 0) == b""

    @deferred_test
    async def test_read_negative_offset(self) -> None:
        """A negative offset is an invalid request."""
        client = await self.make_client()
        upload = await uploaded(client, DATA)
        await refused(InvalidRequest, client.read_immutable(upload.si, 0, -1, 10))

    @deferred_test
    async def test_read_unknown_share(self) -> None:
        """Reading a share the storage index does not hold is NoSuchShare."""
        client = await self.make_client()
        upload = await uploaded(client, DATA)
        await refused(NoSuchShare, client.read_immutable(upload.si, 1, 0, 10))

    @deferred_test
    async def test_read_unknown_storage_index(self) -> None:
        """Reading from a storage index the server never saw is NoSuchShare."""
        client = await self.make_client()
        await refused(NoSuchShare, client.read_immutable(new_storage_index(), 0, 0, 10))

    @deferred_test
    async def test_list_immutable(self) -> None:
        """Listing names exactly the complete shares."""
        client = await self.make_client()
        upload = await uploaded(client, DATA, frozenset({0, 3, 7}))
        assert await client.list_immutable(upload.si) == frozenset({0, 3, 7})

    @deferred_test
    async def test_list_unknown_storage_index(self) -> None:
        """Listing a storage index the server never saw is empty, not an error."""
        client = await self.make_client()
        assert await client.list_immutable(new_storage_index()) == frozenset()

    # -- immutable: abort -------------------------------------------------------------------

    @deferred_test
    async def test_abort_discards_upload(self) -> None:
        """An aborted upload is gone: its secret writes nothing, the share can be uploaded anew."""
        client = await self.make_client()
        upload = Upload.new()
        await upload.allocate(client, {0}, len(DATA))
        await upload.write(client, 0, 0, DATA[:10])
        await client.abort_immutable(upload.si, 0, upload.secret)
        await refused(self.expect.write_without_upload, upload.write(client, 0, 10, DATA[10:]))
        retry = upload.again()
        assert (await retry.allocate(client, {0}, len(DATA))).allocated == frozenset({0})
        assert (await retry.write(client, 0, 0, b"\xff" * len(DATA))).finished

    @deferred_test
    async def test_abort_twice(self) -> None:
        """A second abort of the same upload is refused."""
        client = await self.make_client()
        upload = Upload.new()
        await upload.allocate(client, {0}, len(DATA))
        await client.abort_immutable(upload.si, 0, upload.secret)
        await refused(
            self.expect.abort_without_upload, client.abort_immutable(upload.si, 0, upload.secret)
        )

    @deferred_test
    async def test_abort_wrong_secret(self) -> None:
        """Nobody but the uploader can abort an upload; it goes on."""
        client = await self.make_client()
        upload = Upload.new()
        await upload.allocate(client, {0}, len(DATA))
        await refused(
            self.expect.abort_with_wrong_secret,
            client.abort_immutable(upload.si, 0, new_secret()),
        )
        assert (await upload.write(client, 0, 0, DATA)).finished

    @deferred_test
    async def test_abort_complete_share(self) -> None:
        """A complete share cannot be aborted, and stays readable."""
        client = await self.make_client()
        upload = await uploaded(client, DATA)
        await refused(NoSuchUpload, client.abort_immutable(upload.si, 0, upload.secret))
        assert await client.read_immutable(upload.si, 0, 0, 10) == DATA[:10]

    # -- immutable: corruption advice -------------------------------------------------------

    @deferred_test
    async def test_advise_corrupt_immutable(self) -> None:
        """Advice that a share is corrupt is accepted, and the share stays readable."""
        client = await self.make_client()
        upload = await uploaded(client, DATA)
        await client.advise_corrupt_immutable(upload.si, 0, "block hash mismatch")
        assert await client.read_immutable(upload.si, 0, 0, 10) == DATA[:10]

    @deferred_test
    async def test_advise_corrupt_immutable_unknown_share(self) -> None:
        """Advice about a share the server does not hold is NoSuchShare."""
        client = await self.make_client()
        upload = await uploaded(client, DATA)
        await refused(NoSuchShare, client.advise_corrupt_immutable(upload.si, 1, "no such share"))

    # -- leases -------------------------------------------------------------------------------

    @deferred_test
    async def test_renew_lease(self) -> None:
        """Renewing the lease the upload created is accepted."""
        client = await self.make_client()
        upload = await uploaded(client, DATA)
        await client.add_or_renew_lease(upload.si, upload.lease.renew, upload.lease.cancel)
        assert await client.list_immutable(upload.si) == frozenset({0})

    @deferred_test
    async def test_add_lease(self) -> None:
        """Another client may add its own lease (other secrets) to the same shares."""
        client = await self.make_client()
        upload = await uploaded(client, DATA)
        other = Lease.new()
        await client.add_or_renew_lease(upload.si, other.renew, other.cancel)
        assert await client.list_immutable(upload.si) == frozenset({0})

    @deferred_test
    async def test_lease_on_mutable_slot(self) -> None:
        """Leases are renewed on mutable slots just as on immutable shares."""
        client = await self.make_client()
        slot = Slot.new()
        await slot.write(client, 0, b"slot")
        await client.add_or_renew_lease(slot.si, slot.lease.renew, slot.lease.cancel)
        assert await client.read_mutable(slot.si, 0, 0, 10) == b"slot"

    @deferred_test
    async def test_lease_unknown_storage_index(self) -> None:
        """A lease on a storage index that holds nothing is NoSuchShare (nothing to keep)."""
        client = await self.make_client()
        lease = Lease.new()
        await refused(
            NoSuchShare, client.add_or_renew_lease(new_storage_index(), lease.renew, lease.cancel)
        )

    # -- mutable: read-test-write -----------------------------------------------------------

    @deferred_test
    async def test_rtw_creates_slot(self) -> None:
        """The first write creates the slot; a new slot reads nothing before the write."""
        client = await self.make_client()
        slot = Slot.new()
        vectors = {0: TestWriteVectors(write=(WriteVector(0, b"first version"),))}
        result = await slot.rtw(client, vectors, (ReadVector(0, 5),))
        assert result == ReadTestWriteResult(success=True, reads={})
        assert await client.read_mutable(slot.si, 0, 0, 100) == b"first version"
        assert await client.list_mutable(slot.si) == frozenset({0})

    @deferred_test
    async def test_rtw_several_shares(self) -> None:
        """One request writes several shares of a slot."""
        client = await self.make_client()
        slot = Slot.new()
        vectors = {n: TestWriteVectors(write=(WriteVector(0, b"share %d" % n),)) for n in (1, 4)}
        assert (await slot.rtw(client, vectors)).success
        assert await client.list_mutable(slot.si) == frozenset({1, 4})
        assert await client.read_mutable(slot.si, 4, 0, 10) == b"share 4"

    @deferred_test
    async def test_rtw_reads_before_writes(self) -> None:
        """The reads of a request see every share as it was before that request's writes."""
        client = await self.make_client()
        slot = Slot.new()
        await slot.write(client, 0, b"old data")
        await slot.write(client, 1, b"other")
        vectors = {0: TestWriteVectors(write=(WriteVector(0, b"new"),))}
        result = await slot.rtw(client, vectors, (ReadVector(0, 3), ReadVector(4, 4)))
        assert result.success
        assert result.reads == {0: [b"old", b"data"], 1: [b"oth", b"r"]}
        assert await client.read_mutable(slot.si, 0, 0, 100) == b"new data"

    @deferred_test
    async def test_rtw_matching_test_writes(self) -> None:
        """When every test vector matches, the writes are applied."""
        client = await self.make_client()
        slot = Slot.new()
        await slot.write(client, 0, b"version one")
        vectors = {
            0: TestWriteVectors(
                test=(TVector(0, 11, b"version one"),), write=(WriteVector(8, b"two"),)
            )
        }
        assert (await slot.rtw(client, vectors)).success
        assert await client.read_mutable(slot.si, 0, 0, 100) == b"version two"

    @deferred_test
    async def test_rtw_failing_test_writes_nothing(self) -> None:
        """One failing test vector: no share is written, and the reads still come back."""
        client = await self.make_client()
        slot = Slot.new()
        await slot.write(client, 0, b"zero")
        await slot.write(client, 1, b"one")
        vectors = {
            0: TestWriteVectors(test=(TVector(0, 4, b"zero"),), write=(WriteVector(0, b"ZERO"),)),
            1: TestWriteVectors(test=(TVector(0, 3, b"two"),), write=(WriteVector(0, b"ONE"),)),
        }
        result = await slot.rtw(client, vectors, (ReadVector(0, 4),))
        assert result == ReadTestWriteResult(success=False, reads={0: [b"zero"], 1: [b"one"]})
        assert await client.read_mutable(slot.si, 0, 0, 10) == b"zero"
        assert await client.read_mutable(slot.si, 1, 0, 10) == b"one"

    @deferred_test
    async def test_rtw_test_of_new_share(self) -> None:
        """A share that does not exist yet tests as empty: a create-only-if-new write."""
        client = await self.make_client()
        slot = Slot.new()
        create = {0: TestWriteVectors(test=(TVector(0, 1, b""),), write=(WriteVector(0, b"new"),))}
        assert (await slot.rtw(client, create)).success
        clobber = {0: TestWriteVectors(test=(TVector(0, 1, b""),), write=(WriteVector(0, b"bad"),))}
        assert not (await slot.rtw(client, clobber)).success
        assert await client.read_mutable(slot.si, 0, 0, 10) == b"new"

    @deferred_test
    async def test_rtw_test_past_end(self) -> None:
        """A test vector running past the share's end compares only the bytes that exist."""
        client = await self.make_client()
        slot = Slot.new()
        await slot.write(client, 0, b"short")
        vectors = {
            0: TestWriteVectors(test=(TVector(2, 100, b"ort"),), write=(WriteVector(0, b"S"),))
        }
        assert (await slot.rtw(client, vectors)).success
        assert await client.read_mutable(slot.si, 0, 0, 10) == b"Short"

    @deferred_test
    async def test_rtw_read_past_end(self) -> None:
        """Read vectors are clamped at the share's end; past it they read nothing."""
        client = await self.make_client()
        slot = Slot.new()
        await slot.write(client, 0, b"short")
        result = await slot.rtw(client, {}, (ReadVector(3, 100), ReadVector(10, 5)))
        assert result == ReadTestWriteResult(success=True, reads={0: [b"rt", b""]})

    @deferred_test
    async def test_rtw_wrong_write_enabler(self) -> None:
        """Only the holder of the slot's write enabler may write it; nothing changes."""
        client = await self.make_client()
        slot = Slot.new()
        await slot.write(client, 0, b"mine")
        vectors = {0: TestWriteVectors(write=(WriteVector(0, b"evil"),))}
        await refused(NotAuthorized, slot.rtw(client, vectors, write_enabler=new_secret()))
        assert await client.read_mutable(slot.si, 0, 0, 10) == b"mine"

    @deferred_test
    async def test_rtw_wrong_write_enabler_reading(self) -> None:
        """The write enabler is checked even for a request that only reads."""
        client = await self.make_client()
        slot = Slot.new()
        await slot.write(client, 0, b"mine")
        reading = slot.rtw(client, {}, (ReadVector(0, 4),), write_enabler=new_secret())
        await refused(NotAuthorized, reading)

    @deferred_test
    async def test_rtw_truncate(self) -> None:
        """``new_length`` shorter than the share truncates it, after the request's writes."""
        client = await self.make_client()
        slot = Slot.new()
        await slot.write(client, 0, b"first version")
        vectors = {0: TestWriteVectors(write=(WriteVector(6, b"v2"),), new_length=8)}
        assert (await slot.rtw(client, vectors)).success
        assert await client.read_mutable(slot.si, 0, 0, 100) == b"first v2"

    @deferred_test
    async def test_rtw_extend(self) -> None:
        """``new_length`` beyond the end (see Expectations.new_length_extends)."""
        client = await self.make_client()
        slot = Slot.new()
        await slot.write(client, 0, b"abc")
        assert (await slot.rtw(client, {0: TestWriteVectors(new_length=6)})).success
        expected = b"abc\0\0\0" if self.expect.new_length_extends else b"abc"
        assert await client.read_mutable(slot.si, 0, 0, 100) == expected

    @deferred_test
    async def test_rtw_delete_share(self) -> None:
        """``new_length`` 0 deletes the share: no longer listed nor readable."""
        client = await self.make_client()
        slot = Slot.new()
        await slot.write(client, 0, b"zero")
        await slot.write(client, 1, b"one")
        assert (await slot.rtw(client, {0: TestWriteVectors(new_length=0)})).success
        assert await client.list_mutable(slot.si) == frozenset({1})
        await refused(NoSuchShare, client.read_mutable(slot.si, 0, 0, 10))

    @deferred_test
    async def test_rtw_write_past_end(self) -> None:
        """A write beyond the end extends the share; the gap reads as zeros."""
        client = await self.make_client()
        slot = Slot.new()
        await slot.write(client, 0, b"abc")
        assert (
            await slot.rtw(client, {0: TestWriteVectors(write=(WriteVector(5, b"z"),))})
        ).success
        assert await client.read_mutable(slot.si, 0, 0, 100) == b"abc\0\0z"

    # -- mutable: reads, listing, advice ---------------------------------------------------

    @deferred_test
    async def test_read_mutable_range(self) -> None:
        """Mutable reads take a range, clamped at the end; past the end they read nothing."""
        client = await self.make_client()
        slot = Slot.new()
        await slot.write(client, 0, b"0123456789")
        assert await client.read_mutable(slot.si, 0, 2, 3) == b"234"
        assert await client.read_mutable(slot.si, 0, 8, 100) == b"89"
        assert await client.read_mutable(slot.si, 0, 10, 5) == b""

    @deferred_test
    async def test_read_mutable_unknown_share(self) -> None:
        """Reading a share the slot does not have, or of an unknown slot, is NoSuchShare."""
        client = await self.make_client()
        slot = Slot.new()
        await slot.write(client, 0, b"zero")
        await refused(NoSuchShare, client.read_mutable(slot.si, 1, 0, 10))
        await refused(NoSuchShare, client.read_mutable(new_storage_index(), 0, 0, 10))

    @deferred_test
    async def test_list_mutable_unknown_storage_index(self) -> None:
        """Listing a slot the server never saw is empty, not an error."""
        client = await self.make_client()
        assert await client.list_mutable(new_storage_index()) == frozenset()

    @deferred_test
    async def test_advise_corrupt_mutable(self) -> None:
        """Advice that a mutable share is corrupt is accepted; the share stays readable."""
        client = await self.make_client()
        slot = Slot.new()
        await slot.write(client, 3, b"three")
        await client.advise_corrupt_mutable(slot.si, 3, "signature invalid")
        assert await client.read_mutable(slot.si, 3, 0, 10) == b"three"

    @deferred_test
    async def test_advise_corrupt_mutable_unknown_share(self) -> None:
        """Advice about a mutable share the server does not hold is NoSuchShare."""
        client = await self.make_client()
        slot = Slot.new()
        await slot.write(client, 3, b"three")
        await refused(NoSuchShare, client.advise_corrupt_mutable(slot.si, 5, "no such share"))

    # -- malformed requests -------------------------------------------------------------------

    @deferred_test
    async def test_short_lease_secret(self) -> None:
        """Lease secrets are 32 bytes; a shorter one is an invalid request."""
        client = await self.make_client()
        upload = Upload.new()
        call = client.allocate_buckets(
            upload.si, frozenset({0}), 8, upload.secret, b"short", b"c" * 32
        )
        await refused(InvalidRequest, call)

    @deferred_test
    async def test_short_write_enabler(self) -> None:
        """Write enablers are 32 bytes: a shorter one (see Expectations)."""
        client = await self.make_client()
        slot = Slot.new()
        vectors = {0: TestWriteVectors(write=(WriteVector(0, b"x"),))}
        writing = slot.rtw(client, vectors, write_enabler=b"short")
        if self.expect.short_write_enabler is None:
            assert (await writing).success
        else:
            await refused(self.expect.short_write_enabler, writing)

    @deferred_test
    async def test_share_number_256(self) -> None:
        """Share numbers are 0..255: allocating 256 is refused before any server allocates
        anything (Tahoe 1.20 itself would allocate it)."""
        client = await self.make_client()
        upload = Upload.new()
        await refused(InvalidRequest, upload.allocate(client, {256}, 8))

    @deferred_test
    async def test_invalid_storage_index(self) -> None:
        """A storage index that is not 16 bytes is an invalid request."""
        client = await self.make_client()
        await refused(InvalidRequest, client.list_immutable(b"\x01" * 15))


class NurlContract:
    """What a client built from a NURL promises about its credentials (real TLS listeners).

    The implementing ``TestCase`` sets :attr:`nurl` and defines :meth:`client_for`.
    """

    nurl: str

    def client_for(self, nurl: str) -> HttpStorageClient:
        """A client of ``nurl``, closed when the test ends."""
        raise NotImplementedError

    @deferred_test
    async def test_wrong_swissnum(self) -> None:
        """A wrong swissnum is NotAuthorized: the server is reachable but refuses."""
        nurl = wire.parse_nurl(self.nurl)
        bad = wire.format_nurl(nurl.spki_hash, nurl.host, nurl.port, b"notthesecret")
        client = self.client_for(bad)
        error = await refused(NotAuthorized, client.get_version())
        assert "notthesecret" not in str(error)
        assert client.health.connected

    @deferred_test
    async def test_wrong_pin(self) -> None:
        """A server whose key does not match the pin is unavailable: TLS never completes."""
        nurl = wire.parse_nurl(self.nurl)
        other = generate_tls_credentials().spki_hash
        client = self.client_for(wire.format_nurl(other, nurl.host, nurl.port, nurl.swissnum))
        await refused(ServerUnavailable, client.get_version())
        assert not client.health.connected and "TLS" in (client.health.last_error or "")


# --- how tests reach servers ------------------------------------------------------------------


def sockets_to(port: int) -> int:
    """TCP connections from this process's reactor to ``127.0.0.1:port``."""
    count = 0
    for selectable in {*reactor.getReaders(), *reactor.getWriters()}:
        if ITCPTransport.providedBy(selectable):
            peer = selectable.getPeer()
            if isinstance(peer, IPv4Address) and peer.port == port:
                count += 1
    return count


@implementer(IAgentEndpointFactory)
class _MemoryEndpoints:
    """Every URI's endpoint is a TCP connection recorded by a memory reactor."""

    def __init__(self, memory: MemoryReactorClock) -> None:
        self._memory = memory

    def endpointForURI(self, uri: URI) -> TCP4ClientEndpoint:
        return TCP4ClientEndpoint(self._memory, "127.0.0.1", uri.port)


@implementer(IAgent)
class SiteAgent:
    """An ``IAgent`` that hands each request to a twisted.web ``Site`` over memory transports.

    No socket, no TLS: each request gets a new in-memory connection, pumped at
    once (the storage site answers synchronously), then closed.
    """

    def __init__(self, site: Site) -> None:
        self._memory = MemoryReactorClock()
        site.reactor = self._memory  # the server's connection timeouts, kept off the reactor
        self._site = site
        self._agent = Agent.usingEndpointFactory(self._memory, _MemoryEndpoints(self._memory))
        self._pumps: list[iosim.IOPump] = []

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        response = self._agent.request(method, uri, headers, bodyProducer)
        if not self._memory.tcpClients:
            return response  # refused before connecting
        _, port, factory, _, _ = self._memory.tcpClients.pop()
        server_address = IPv4Address("TCP", "127.0.0.1", port)
        client_address = IPv4Address("TCP", "127.0.0.1", 40000 + len(self._pumps))
        server = self._site.buildProtocol(client_address)
        client = factory.buildProtocol(server_address)
        self._pumps.append(
            iosim.connect(
                server,
                iosim.FakeTransport(server, True, server_address, client_address),
                client,
                iosim.FakeTransport(client, False, client_address, server_address),
            )
        )
        return response

    def open_connections(self) -> int:
        """Connections not yet closed at both ends."""
        return sum(
            1 for p in self._pumps if not (p.clientIO.disconnected and p.serverIO.disconnected)
        )


def memory_nurl(swissnum: bytes) -> str:
    """A NURL for a server reached in memory (its pin is never checked: there is no TLS)."""
    pin = base64.urlsafe_b64encode(hashlib.sha256(b"in memory").digest()).rstrip(b"=").decode()
    return wire.format_nurl(pin, "127.0.0.1", 443, swissnum)


class StorageNodeProcess:
    """One of our storage nodes as users run it: ``gateway create-storage`` and ``gateway start``.

    Runs the installed ``gateway`` (never the checkout's). ``gateway start``
    returns once the node listens on 127.0.0.1; :meth:`stop` ends it by its pid.
    """

    def __init__(self, node_dir: Path) -> None:
        self.node_dir = node_dir
        self._gateway("create-storage", str(node_dir), "--nickname", "contract",
                      "--reserved-space", "10M")  # fmt: skip
        self.nurl = (node_dir / "private" / "nurl").read_text().strip()
        self.pid: int | None = None

    def _gateway(self, *args: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            capture_output=True, text=True, timeout=120, cwd=self.node_dir.parent,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"gateway {args[0]} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        """Start the node; return once it listens."""
        self._gateway("start", str(self.node_dir))
        self.pid = int((self.node_dir / "node.pid").read_text().strip())

    def stop(self) -> None:
        """SIGTERM the node by its pid (SIGKILL if it lingers) and wait until it is gone."""
        if self.pid is not None:
            stop_pid(self.pid, sig=signal.SIGTERM)
            self.pid = None


def closing(testcase: TestCase, client: C) -> C:
    """Register the client's ``close()`` as a cleanup of ``testcase`` and hand it back."""

    def close() -> Deferred[None]:
        return Deferred.fromCoroutine(client.close())

    testcase.addCleanup(close)
    return client
