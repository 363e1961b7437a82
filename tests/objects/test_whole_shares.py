"""A small object on a grid of one server that takes whole shares in one call.

The embedded core (:class:`gateway.grid.interfaces.IWholeShares`) allocates and writes a
small object's shares in one call: an fsync's node and a small file's object cost one
call on the core instead of an allocation and a write per share. These tests drive the
uploader against an in-process server that offers that call and record which calls it got.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import pytest
from zope.interface import implementer

from gateway.grid.interfaces import IOrderedStorage, IWholeShares
from gateway.objects import immutable_format as fmt
from gateway.objects.caps import ImmutableReadCap
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.errors import UploadUnhappy
from gateway.objects.immutable import read_immutable
from gateway.objects.upload import ImmutableUploader
from storage.errors import StorageError
from storage.interfaces import AllocationResult, WriteResult
from tests.objects.grid import GridClient, make_grid, run

SECRETS = GatewaySecrets(convergence=b"w" * 32, lease=b"l" * 32)
PARAMS = fmt.EncodingParams(k=1, happy=1, n=3, segment_size=1024)
DATA = bytes(range(256)) * 8


@implementer(IOrderedStorage, IWholeShares)
class WholeServer(GridClient):
    """The in-process server, ordered, taking whole shares in one call (recorded in
    ``requests`` as ``("put_whole", ...)``); ``refuse`` answers no allocation, ``fail``
    raises from the call."""

    refuse = False
    fail = False

    async def write_immutable_ordered(
        self, storage_index: bytes, share: int, secret: bytes, offset: int, data: bytes
    ) -> WriteResult:
        return await self.write_immutable(storage_index, share, secret, offset, data)

    async def sync(self) -> None:
        """Writes are durable once answered here."""

    async def put_whole_ordered(
        self,
        storage_index: bytes,
        shares: Sequence[bytes],
        upload_secret: bytes,
        renew_secret: bytes,
        cancel_secret: bytes,
    ) -> AllocationResult:
        self.requests.append(("put_whole", storage_index, len(shares)))
        if self.fail:
            raise StorageError("the disk is full")
        if self.refuse:
            return AllocationResult(already_have=frozenset(), allocated=frozenset())
        numbers = frozenset(range(len(shares)))
        inner = self.inner
        result = await inner.allocate_buckets(
            storage_index, numbers, len(shares[0]), upload_secret, renew_secret, cancel_secret
        )
        for share in sorted(result.allocated):
            await inner.write_immutable(storage_index, share, upload_secret, 0, shares[share])
        return result


def whole_server() -> WholeServer:
    """One in-process server offering whole-share puts."""
    (plain,) = make_grid(1)
    return WholeServer(plain.server, plain.server_id, plain.nickname)


def kinds(server: GridClient) -> list[str]:
    """The kinds of call the server got, in order."""
    return [str(request[0]) for request in server.requests]


def test_an_ordered_upload_to_such_a_server_is_one_call_and_reads_back() -> None:
    """An ordered upload of a small object to one such server makes one call (no
    allocation, no write of its own), the object reads back whole, and a second upload
    of the same bytes finds its shares there."""
    server = whole_server()
    uploader = ImmutableUploader([server], SECRETS, PARAMS, ordered=True)
    cap = run(uploader.upload(io.BytesIO(DATA)))
    assert isinstance(cap, ImmutableReadCap)
    assert kinds(server) == ["put_whole"]
    assert run(server.inner.list_immutable(cap.storage_index)) == frozenset({0, 1, 2})
    assert run(read_immutable(cap, [server])) == DATA
    server.requests.clear()
    assert run(uploader.upload(io.BytesIO(DATA))) == cap
    assert kinds(server) == ["put_whole"]


def test_an_upload_that_is_not_ordered_allocates_and_writes_as_ever() -> None:
    """Background uploads (not ordered) and grids of several servers go the usual way:
    an allocation, then the writes."""
    server = whole_server()
    uploader = ImmutableUploader([server], SECRETS, PARAMS, ordered=False)
    cap = run(uploader.upload(io.BytesIO(DATA)))
    assert "put_whole" not in kinds(server)
    assert "allocate_buckets" in kinds(server)
    assert run(read_immutable(cap, [server])) == DATA
    two = [whole_server(), whole_server()]
    run(ImmutableUploader(two, SECRETS, PARAMS, ordered=True).upload(io.BytesIO(DATA)))
    assert all("put_whole" not in kinds(s) for s in two)


@pytest.mark.parametrize(
    ("refuse", "fail", "said"),
    [(True, False, r"1 refused \(full\)"), (False, True, "1 failed while writing")],
    ids=["refused", "failing"],
)
def test_a_refusal_or_a_failure_is_an_unhappy_upload_that_says_which(
    refuse: bool, fail: bool, said: str
) -> None:
    """A server that allocates nothing, or whose call fails, fails the upload with
    UploadUnhappy naming what happened, as the usual way does."""
    server = whole_server()
    server.refuse, server.fail = refuse, fail
    uploader = ImmutableUploader([server], SECRETS, PARAMS, ordered=True)
    with pytest.raises(UploadUnhappy, match=said):
        run(uploader.upload(io.BytesIO(DATA)))


def test_without_its_thread_the_core_puts_share_by_share_and_aborts_on_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The embedded client without a storage thread (or in background work) makes the
    allocation and the writes one by one; a write that fails aborts what was allocated,
    so a retry allocates those shares again and completes the object."""
    from gateway.grid.local import LocalStorageClient
    from storage.server import StorageServer

    (plain,) = make_grid(1)
    client = LocalStorageClient(plain.server)
    real = StorageServer.write_immutable

    def failing(
        server: StorageServer, si: bytes, share: int, secret: bytes, offset: int, data: bytes
    ) -> WriteResult:
        if share == 1:
            raise StorageError("the disk is full")
        return real(server, si, share, secret, offset, data)

    monkeypatch.setattr(StorageServer, "write_immutable", failing)
    si, secret, renew, cancel = b"s" * 16, b"u" * 32, b"r" * 32, b"c" * 32
    shares = [b"a" * 100, b"b" * 100, b"c" * 100]
    with pytest.raises(StorageError):
        run(client.put_whole_ordered(si, shares, secret, renew, cancel))
    monkeypatch.setattr(StorageServer, "write_immutable", real)
    retried = run(client.put_whole_ordered(si, shares, b"v" * 32, renew, cancel))
    assert retried.already_have == frozenset({0})
    assert retried.allocated == frozenset({1, 2})
    assert run(client.read_immutable(si, 2, 0, 3)) == b"ccc"
