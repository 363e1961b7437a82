"""The storage core's interface: what the HTTP adapter (and the gateway's embedded grid) call.

The core knows no transport. Every method is synchronous and runs on the reactor
thread, which is what makes a mutable read-test-write atomic per storage index:
no other request can interleave between its tests and its writes. The one
exception is durability of a completed immutable share: its flushes run in
threads, grouped with other completions, and :meth:`IStorageServer.durable`
says when they are done. Methods raise
the errors of :mod:`storage.errors`.

Storage indexes are the raw 16 bytes (the wire carries them as 26 base32
characters); share numbers are integers 0..255; secrets are the raw 32 bytes
(upload secrets may be any length 1..64, as they are opaque).
"""

from __future__ import annotations

from attrs import field, frozen
from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface


@frozen
class ByteRange:
    """A half-open byte range ``[begin, end)`` of a share."""

    begin: int
    end: int


@frozen
class AllocationResult:
    """What an allocation did: shares already complete here, shares now open for writing."""

    already_have: frozenset[int]
    allocated: frozenset[int]


@frozen
class WriteResult:
    """After an immutable write: whether the share is now complete, and what is still missing."""

    finished: bool
    required: tuple[ByteRange, ...] = ()


@frozen
class TestVector:
    """Compare ``size`` bytes at ``offset`` of a mutable share with ``specimen`` (equality)."""

    offset: int
    size: int
    specimen: bytes


@frozen
class WriteVector:
    """Write ``data`` at ``offset`` of a mutable share."""

    offset: int
    data: bytes


@frozen
class ReadVector:
    """Read ``size`` bytes at ``offset`` (clamped to the share's end)."""

    offset: int
    size: int


@frozen
class TestWriteVectors:
    """For one mutable share: tests that must all hold, then writes and an optional new length."""

    test: tuple[TestVector, ...] = ()
    write: tuple[WriteVector, ...] = ()
    new_length: int | None = None


@frozen
class ReadTestWriteResult:
    """Whether every test held (so every write was applied), and the reads taken before writing."""

    success: bool
    reads: dict[int, list[bytes]] = field(factory=dict)


@frozen
class VersionInfo:
    """What the version endpoint reports."""

    maximum_immutable_share_size: int
    maximum_mutable_share_size: int
    available_space: int
    application_version: bytes


class IStorageServer(Interface):
    """The storage core: shares, leases, space accounting and test-and-write, no transport."""

    def get_version() -> VersionInfo:
        """Describe this server: limits, space available now, software version."""

    def add_or_renew_lease(storage_index: bytes, renew_secret: bytes, cancel_secret: bytes) -> None:
        """Renew the lease with ``renew_secret`` (or add one) on every share of the index.

        Raises NoSuchShare when nothing is stored under the storage index.
        """

    def allocate_buckets(
        storage_index: bytes,
        share_numbers: frozenset[int],
        allocated_size: int,
        upload_secret: bytes,
        renew_secret: bytes,
        cancel_secret: bytes,
    ) -> AllocationResult:
        """Open immutable shares for writing. Idempotent for the same upload secret.

        Raises NoSpace when the allocation would cross reserved space or the maximum size.
        """

    def write_immutable(
        storage_index: bytes, share_number: int, upload_secret: bytes, offset: int, data: bytes
    ) -> WriteResult:
        """Write a chunk of an allocated share; it becomes readable once every byte is written.

        Raises NoSuchUpload (no such allocation), NotAuthorized (wrong upload secret),
        ConflictingWrite (different bytes over written ones) or RangeNotSatisfiable.
        """

    def durable(storage_index: bytes, share_number: int) -> Deferred[None]:
        """Fires once the completion of that share (by a write that answered ``finished``)
        is durable: an adapter answers the completing write only then. At once if none is
        under way; fails with the error of a failed flush (the upload is then lost).

        A share being completed is neither listed, read, written nor offered.
        """

    def sync() -> None:
        """Make every change made so far durable, the completions under way included
        (raises the error of a flush that fails, or failed before)."""

    def abort_immutable(storage_index: bytes, share_number: int, upload_secret: bytes) -> None:
        """Discard an incomplete upload. Raises NoSuchUpload if there is none with that secret."""

    def list_immutable(storage_index: bytes) -> frozenset[int]:
        """Share numbers complete and readable under the storage index (empty if unknown)."""

    def read_immutable(storage_index: bytes, share_number: int, offset: int, length: int) -> bytes:
        """Read from a complete share, clamped at its end. Raises NoSuchShare."""

    def advise_corrupt_immutable(storage_index: bytes, share_number: int, reason: str) -> None:
        """Record a client's report that a share is corrupt. Raises NoSuchShare."""

    def read_test_write(
        storage_index: bytes,
        write_enabler: bytes,
        renew_secret: bytes,
        cancel_secret: bytes,
        test_write_vectors: dict[int, TestWriteVectors],
        read_vector: tuple[ReadVector, ...],
    ) -> ReadTestWriteResult:
        """Atomically: read, test every share's vectors, and only if all hold apply every write.

        The write enabler is stored with the first write and must match afterwards
        (NotAuthorized). ``new_length`` truncates or extends; 0 deletes the share.
        """

    def list_mutable(storage_index: bytes) -> frozenset[int]:
        """Share numbers of a mutable slot (empty if unknown)."""

    def read_mutable(storage_index: bytes, share_number: int, offset: int, length: int) -> bytes:
        """Read from a mutable share, clamped at its end. Raises NoSuchShare."""

    def advise_corrupt_mutable(storage_index: bytes, share_number: int, reason: str) -> None:
        """Record a client's report that a mutable share is corrupt. Raises NoSuchShare."""

    corruption_reports = Attribute("Recent corruption advisories, newest last (for operators).")
