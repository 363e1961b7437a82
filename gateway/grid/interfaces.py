"""What the object layer needs from one storage server, whatever carries the requests.

Two providers: the HTTPS client of Tahoe-LAFS's storage protocol (any NURL, ours
or a Tahoe 1.20 node) and an in-process adapter over the embedded storage core.
Methods are coroutines; they raise the errors of :mod:`storage.errors` for what
the server refused, and :class:`ServerUnavailable` when the server could not be
reached or answered garbage. Every provider also keeps a :class:`ServerHealth`
record (its ``health``) and has ``close()``; ``tests/grid/contract.py`` checks
every promise made here against each provider.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

from attrs import frozen
from zope.interface import Attribute, Interface

from storage.interfaces import (
    AllocationResult,
    ReadTestWriteResult,
    ReadVector,
    TestWriteVectors,
    VersionInfo,
    WriteResult,
)


class ServerUnavailable(Exception):
    """A storage server could not be reached, timed out, or sent a malformed answer."""


@frozen
class ServerHealth:
    """What the gateway last learned about one server (no secrets).

    ``connected``: the last request got an answer (a refusal counts); ``last_error``:
    why the last unanswered request failed (kept once the server answers again);
    ``last_latency``: seconds the last answered request took; ``available_space``:
    from the last version answer; ``last_contact``: reactor time of the last answer,
    where the client knows it.
    """

    connected: bool = False
    last_error: str | None = None
    last_latency: float | None = None
    available_space: int | None = None
    last_contact: float | None = None


class IStorageClient(Interface):
    """One storage server as the gateway sees it."""

    server_id = Attribute("bytes: stable identity used for the permuted ring (the SPKI hash).")
    nickname = Attribute("str: a human name for status pages and logs (never a secret).")
    health: ServerHealth = Attribute(
        """ServerHealth: what this client last learned about the server.

        Reading it never sends a request: it is the record of the requests already made.
        ``available_space`` is None until a :meth:`get_version` answer, then that answer's
        space. After any answer (a refusal such as NoSuchShare included) ``connected`` is
        true and ``last_latency`` is set; after :class:`ServerUnavailable` ``connected`` is
        false and ``last_error`` says why. An in-process server is always connected. The
        record never contains a secret (swissnum, lease, upload or write-enabler secret).
        """
    )

    async def close() -> None:
        """Release what the client holds open (idle pooled connections), once they are closed.

        Requests in flight are not interrupted. Calling it again does nothing more, and
        the client stays usable: a later request opens a new connection.
        """

    async def get_version() -> VersionInfo:
        """Ask the server for its limits and available space."""

    async def add_or_renew_lease(
        storage_index: bytes, renew_secret: bytes, cancel_secret: bytes
    ) -> None:
        """Renew or add a lease on every share of the index."""

    async def allocate_buckets(
        storage_index: bytes,
        share_numbers: frozenset[int],
        allocated_size: int,
        upload_secret: bytes,
        renew_secret: bytes,
        cancel_secret: bytes,
    ) -> AllocationResult:
        """Open immutable shares for writing."""

    async def write_immutable(
        storage_index: bytes, share_number: int, upload_secret: bytes, offset: int, data: bytes
    ) -> WriteResult:
        """Write a chunk of an allocated immutable share."""

    async def abort_immutable(
        storage_index: bytes, share_number: int, upload_secret: bytes
    ) -> None:
        """Discard an incomplete immutable upload."""

    async def list_immutable(storage_index: bytes) -> frozenset[int]:
        """Complete immutable shares held for the index."""

    async def read_immutable(
        storage_index: bytes, share_number: int, offset: int, length: int
    ) -> bytes:
        """Read a byte range of an immutable share (clamped at its end)."""

    async def advise_corrupt_immutable(
        storage_index: bytes, share_number: int, reason: str
    ) -> None:
        """Tell the server one of its immutable shares is corrupt."""

    async def read_test_write(
        storage_index: bytes,
        write_enabler: bytes,
        renew_secret: bytes,
        cancel_secret: bytes,
        test_write_vectors: dict[int, TestWriteVectors],
        read_vector: tuple[ReadVector, ...],
    ) -> ReadTestWriteResult:
        """Atomic read, test and write on a mutable slot."""

    async def list_mutable(storage_index: bytes) -> frozenset[int]:
        """Shares of a mutable slot."""

    async def read_mutable(
        storage_index: bytes, share_number: int, offset: int, length: int
    ) -> bytes:
        """Read a byte range of a mutable share."""

    async def advise_corrupt_mutable(storage_index: bytes, share_number: int, reason: str) -> None:
        """Tell the server one of its mutable shares is corrupt."""


class IOrderedStorage(Interface):
    """A storage server whose changes become durable in the order they were made: once a
    change made through it is durable, so is every change made through it before. The
    embedded core is one (one redo log, replayed up to its first lost record; see
    :class:`storage.disk.DiskBackend`); a server over the network is not.

    On a grid of that one server, an fsync's directory is published right after its
    objects are written, before they are known durable: the publish's own flush makes
    them durable with it, one flush instead of two (``docs/architecture.rst``).
    """

    async def write_immutable_ordered(
        storage_index: bytes, share_number: int, upload_secret: bytes, offset: int, data: bytes
    ) -> WriteResult:
        """As :meth:`IStorageClient.write_immutable`, but answered once the write is made,
        not once the share it completes is durable: it is durable no later than the next
        change made after it that is answered durable (a slot's test-and-write), or than
        :meth:`sync`. A write that cannot be made raises as the other does."""

    async def sync() -> None:
        """Return once every change made so far is durable (raises the error of a flush
        that failed, now or before: nothing made since is then known durable)."""


class IWholeShares(Interface):
    """An ordered server (:class:`IOrderedStorage`) that takes a small object's shares in
    one call: the embedded core, where the calls an allocation and its writes go through
    took a third of the time storing an fsync's node did (``docs/performance.rst``)."""

    async def put_whole_ordered(
        storage_index: bytes,
        shares: Sequence[bytes],
        upload_secret: bytes,
        renew_secret: bytes,
        cancel_secret: bytes,
    ) -> AllocationResult:
        """Allocate shares ``0 .. len(shares) - 1`` (all of one size) and write each one
        the server does not have yet whole: :meth:`IStorageClient.allocate_buckets`, then
        :meth:`IOrderedStorage.write_immutable_ordered` of each share allocated, in one
        call. Answered as those are; a write that fails aborts the shares allocated and
        raises as the write would."""


async def sync_ordered(servers: Iterable[IStorageClient]) -> None:
    """Make every change made so far on the ordered ones among ``servers`` durable."""
    for server in servers:
        if IOrderedStorage.providedBy(server):
            await cast(IOrderedStorage, server).sync()
