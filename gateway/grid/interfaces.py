"""What the object layer needs from one storage server, whatever carries the requests.

Two providers: the HTTPS client of Tahoe-LAFS's storage protocol (any NURL, ours
or a Tahoe 1.20 node) and an in-process adapter over the embedded storage core.
Methods are coroutines; they raise the errors of :mod:`storage.errors` for what
the server refused, and :class:`ServerUnavailable` when the server could not be
reached or answered garbage.
"""

from __future__ import annotations

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


class IStorageClient(Interface):
    """One storage server as the gateway sees it."""

    server_id = Attribute("bytes: stable identity used for the permuted ring (the SPKI hash).")
    nickname = Attribute("str: a human name for status pages and logs (never a secret).")

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
