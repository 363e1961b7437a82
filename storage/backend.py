"""The share store beneath the storage core: bytes, per-index metadata, incomplete uploads.

A backend does no validation of secrets, no space policy and no lease policy —
:class:`storage.server.StorageServer` does. It is given only validated storage
indexes (16 bytes) and share numbers (0..255) and must keep what it is told to
keep, durably if it says so. Every method is synchronous, but for the completion
of an immutable upload, which answers a Deferred (its flushes may run in a thread,
grouped with other completions).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from enum import Enum

from attrs import frozen
from twisted.internet.defer import Deferred
from zope.interface import Interface

from storage import base32
from storage.leases import Lease


class ShareKind(Enum):
    """Whether a storage index holds immutable shares or a mutable slot."""

    IMMUTABLE = "immutable"
    MUTABLE = "mutable"


@frozen
class IndexMetadata:
    """What is kept beside the shares of one storage index.

    ``write_enabler_digest`` is set for mutable slots only; ``leases`` apply to
    every share of the index.
    """

    kind: ShareKind
    leases: tuple[Lease, ...] = ()
    write_enabler_digest: bytes | None = None


@frozen
class CorruptionReport:
    """A client's advice that a share it read was corrupt."""

    kind: ShareKind
    storage_index: bytes
    share_number: int
    reason: str
    time: float


def si_b2a(storage_index: bytes) -> str:
    """The 26-character lowercase base32 form of a storage index, as Tahoe-LAFS writes it."""
    return base32.b2a(storage_index)


def si_a2b(text: str) -> bytes:
    """Inverse of :func:`si_b2a`; raises ``ValueError`` for anything else."""
    if len(text) != 26:
        raise ValueError("not a base32 storage index")
    return base32.a2b(text)


class IShareBackend(Interface):
    """Low-level store of share bytes, per-index metadata and incomplete immutable uploads."""

    def list_shares(storage_index: bytes) -> frozenset[int]:
        """Numbers of the complete shares stored under the index."""

    def share_length(storage_index: bytes, share_number: int) -> int:
        """Length of a complete share. Raises NoSuchShare."""

    def read_share(storage_index: bytes, share_number: int, offset: int, length: int) -> bytes:
        """Read from a complete share, clamped at its end. Raises NoSuchShare."""

    def write_share(
        storage_index: bytes,
        share_number: int,
        writes: Sequence[tuple[int, bytes]],
        new_length: int | None,
    ) -> None:
        """Create or change a (mutable) share in one atomic step.

        Writes are applied in order (holes read as zeros), then the share is cut
        or zero-extended to ``new_length`` when given.
        """

    def delete_share(storage_index: bytes, share_number: int) -> None:
        """Remove a complete share if it exists."""

    def get_metadata(storage_index: bytes) -> IndexMetadata | None:
        """The index's metadata, or None if none is stored."""

    def put_metadata(storage_index: bytes, metadata: IndexMetadata, durable: bool = True) -> None:
        """Store the index's metadata, replacing any earlier (atomically).

        ``durable=False``: the caller makes a durable change of the same index right after
        (a share write or completion), which may carry this one with it.
        """

    def delete_index(storage_index: bytes) -> None:
        """Remove every complete share and the metadata of the index."""

    def storage_indexes() -> Iterator[bytes]:
        """Every storage index that has metadata or complete shares, in no particular order."""

    def create_incoming(storage_index: bytes, share_number: int) -> None:
        """Start an empty incomplete upload (replacing any leftover one)."""

    def write_incoming(storage_index: bytes, share_number: int, offset: int, data: bytes) -> None:
        """Write bytes into an incomplete upload at an offset, in place."""

    def read_incoming(storage_index: bytes, share_number: int, offset: int, length: int) -> bytes:
        """Read back bytes already written to an incomplete upload."""

    def finish_incoming(storage_index: bytes, share_number: int, size: int) -> Deferred[None]:
        """Make an incomplete upload of ``size`` bytes a complete share, durably and atomically.

        The Deferred fires once the share is durable; until then it is neither listed nor
        read. It may have fired already (a backend that completes at once); it fails with
        the error of a failed flush, and the upload is then lost.
        """

    def discard_incoming(storage_index: bytes, share_number: int) -> None:
        """Throw away an incomplete upload if it exists."""

    def free_space() -> int | None:
        """Bytes the store can still take, or None if it cannot tell (unbounded)."""

    def record_corruption(report: CorruptionReport) -> None:
        """Keep a corruption advisory where operators will find it."""

    def sync() -> None:
        """Make every change made so far durable, share completions queued included
        (raises the OSError of a flush that fails, or failed before)."""

    def close() -> None:
        """Make every change durable and release files (the backend is not used after)."""
