"""The storage core: Tahoe-LAFS storage semantics over a share backend, with no transport.

:class:`StorageServer` validates every request, enforces secrets, leases and
space, and keeps the bookkeeping of uploads in progress; the bytes go to an
:class:`~storage.backend.IShareBackend`. Time comes from the clock it is given
(anything with ``seconds()``, such as the reactor or ``task.Clock``).
"""

from __future__ import annotations

import hmac
from typing import Protocol

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from storage import validation as check
from storage.backend import CorruptionReport, IndexMetadata, IShareBackend, ShareKind
from storage.errors import (
    ConflictingWrite,
    InvalidRequest,
    NoSpace,
    NoSuchShare,
    NoSuchUpload,
    NotAuthorized,
    RangeNotSatisfiable,
)
from storage.interfaces import (
    AllocationResult,
    IStorageServer,
    ReadTestWriteResult,
    ReadVector,
    TestWriteVectors,
    VersionInfo,
    WriteResult,
)
from storage.leases import RENEWAL_GRANULARITY, add_or_renew, write_enabler_digest
from storage.space import available_space
from storage.uploads import IncompleteUpload

#: Largest mutable share accepted, as in Tahoe-LAFS (``allmydata.mutable.layout``).
MAX_MUTABLE_SHARE_SIZE = 69_105 * 1000

#: How many corruption advisories are kept in memory.
MAX_CORRUPTION_REPORTS = 1000

#: Longest advisory text kept, in characters.
MAX_REASON_LENGTH = 4096


class IClock(Protocol):
    """The one thing the core needs from a reactor: the current time."""

    def seconds(self) -> float:
        """Seconds since the epoch."""


@implementer(IStorageServer)
@define(eq=False)
class StorageServer:
    """Storage semantics over ``backend``; see :class:`storage.interfaces.IStorageServer`."""

    backend: IShareBackend
    clock: IClock
    reserved_space: int = 0
    application_version: bytes = b"grid-storage/0"
    corruption_reports: list[CorruptionReport] = field(factory=list, init=False)
    _uploads: dict[tuple[bytes, int], IncompleteUpload] = field(factory=dict, init=False)
    _completions: dict[tuple[bytes, int], list[Deferred[None]]] = field(factory=dict, init=False)
    """Completions under way, with who waits for each."""

    # -- space ---------------------------------------------------------------

    def available_space(self) -> int:
        """Bytes new shares may take now: free less reserve less what uploads were promised."""
        committed = sum(upload.outstanding() for upload in self._uploads.values())
        return available_space(self.backend.free_space(), self.reserved_space, committed)

    def get_version(self) -> VersionInfo:
        """Limits, space available now and software version."""
        space = self.available_space()
        return VersionInfo(
            maximum_immutable_share_size=space,
            maximum_mutable_share_size=MAX_MUTABLE_SHARE_SIZE,
            available_space=space,
            application_version=self.application_version,
        )

    # -- leases --------------------------------------------------------------

    def _kind(self, storage_index: bytes, shares: frozenset[int] | None = None) -> ShareKind | None:
        """The kind of shares stored under the index, or None if there are none (``shares``:
        the index's shares, when the caller has just listed them)."""
        if not (self.backend.list_shares(storage_index) if shares is None else shares):
            return None
        metadata = self.backend.get_metadata(storage_index)
        return ShareKind.IMMUTABLE if metadata is None else metadata.kind

    def _renewed(
        self, storage_index: bytes, kind: ShareKind, renew_secret: bytes, cancel_secret: bytes
    ) -> IndexMetadata:
        """The index's metadata with the lease added or renewed (not yet stored)."""
        metadata = self.backend.get_metadata(storage_index)
        if metadata is None or metadata.kind is not kind:
            metadata = IndexMetadata(kind=kind)
        leases = add_or_renew(
            metadata.leases,
            renew_secret,
            cancel_secret,
            self.clock.seconds(),
            RENEWAL_GRANULARITY,
        )
        return IndexMetadata(kind, leases, metadata.write_enabler_digest)

    def _put_metadata(
        self, storage_index: bytes, metadata: IndexMetadata, durable: bool = True
    ) -> None:
        """Store an index's metadata, unless it is stored already (one durable write fewer).

        ``durable=False`` when a durable change of the same index follows at once.
        """
        if self.backend.get_metadata(storage_index) != metadata:
            self.backend.put_metadata(storage_index, metadata, durable)

    def add_or_renew_lease(
        self, storage_index: bytes, renew_secret: bytes, cancel_secret: bytes
    ) -> None:
        """Renew (or add) the lease of ``renew_secret`` on every share of the index."""
        check.storage_index(storage_index)
        check.secret(renew_secret, "lease renew secret")
        check.secret(cancel_secret, "lease cancel secret")
        kind = self._kind(storage_index)
        if kind is None:
            raise NoSuchShare("no shares are stored under that storage index")
        metadata = self._renewed(storage_index, kind, renew_secret, cancel_secret)
        self._put_metadata(storage_index, metadata)

    # -- immutable -----------------------------------------------------------

    def allocate_buckets(
        self,
        storage_index: bytes,
        share_numbers: frozenset[int],
        allocated_size: int,
        upload_secret: bytes,
        renew_secret: bytes,
        cancel_secret: bytes,
    ) -> AllocationResult:
        """Open immutable shares for writing; idempotent for the same upload secret."""
        check.storage_index(storage_index)
        for share_number in share_numbers:
            check.share_number(share_number)
        check.size(allocated_size, "allocated size", minimum=1)
        check.upload_secret(upload_secret)
        check.secret(renew_secret, "lease renew secret")
        check.secret(cancel_secret, "lease cancel secret")

        have = self.backend.list_shares(storage_index)  # listed once (a directory read)
        if self._kind(storage_index, have) is ShareKind.MUTABLE:
            raise InvalidRequest("that storage index holds a mutable slot, not immutable shares")
        allocated: set[int] = set()
        new: list[int] = []
        for share_number in sorted(frozenset(share_numbers) - have):
            upload = self._uploads.get((storage_index, share_number))
            if upload is None:
                new.append(share_number)
            elif upload.completing:
                pass  # complete once durable: neither had nor offered until then
            elif hmac.compare_digest(upload.upload_secret, upload_secret):
                allocated.add(share_number)
            # else: another client's upload in progress; left alone and not offered.

        if new:
            space = self.available_space()
            if allocated_size > space or allocated_size * len(new) > space:
                raise NoSpace(
                    f"{len(new)} share(s) of {allocated_size} bytes do not fit in the "
                    f"{space} bytes available"
                )
        if have:  # only once nothing can refuse the request: a refusal changes nothing
            metadata = self._renewed(
                storage_index, ShareKind.IMMUTABLE, renew_secret, cancel_secret
            )
            self._put_metadata(storage_index, metadata)
        now = self.clock.seconds()
        for share_number in new:
            self.backend.create_incoming(storage_index, share_number)
            self._uploads[storage_index, share_number] = IncompleteUpload(
                allocated_size, upload_secret, renew_secret, cancel_secret, now
            )
            allocated.add(share_number)
        return AllocationResult(already_have=frozenset(have), allocated=frozenset(allocated))

    def _upload(
        self, storage_index: bytes, share_number: int, upload_secret: bytes
    ) -> IncompleteUpload:
        upload = self._uploads.get((storage_index, share_number))
        if upload is None or upload.completing:
            raise NoSuchUpload(f"share {share_number} has no upload in progress")
        if not hmac.compare_digest(upload.upload_secret, upload_secret):
            raise NotAuthorized(f"wrong upload secret for share {share_number}")
        return upload

    def write_immutable(
        self,
        storage_index: bytes,
        share_number: int,
        upload_secret: bytes,
        offset: int,
        data: bytes,
    ) -> WriteResult:
        """Write a chunk; once every byte is there the share becomes readable."""
        check.storage_index(storage_index)
        check.share_number(share_number)
        check.upload_secret(upload_secret)
        check.size(offset, "offset")
        check.data(data)
        upload = self._upload(storage_index, share_number, upload_secret)
        end = offset + len(data)
        if end > upload.size:
            raise RangeNotSatisfiable(
                f"bytes {offset}-{end} lie outside share {share_number}'s {upload.size} bytes"
            )
        for chunk in upload.received.overlapping(offset, end):
            written = self.backend.read_incoming(
                storage_index, share_number, chunk.begin, chunk.end - chunk.begin
            )
            if written != data[chunk.begin - offset : chunk.end - offset]:
                raise ConflictingWrite(
                    f"bytes {chunk.begin}-{chunk.end} of share {share_number} were already "
                    "written with different contents"
                )
        self.backend.write_incoming(storage_index, share_number, offset, data)
        upload.received.add(offset, end)
        upload.last_activity = self.clock.seconds()
        if not upload.is_complete():
            return WriteResult(finished=False, required=upload.received.missing(upload.size))

        # Lease first, then the share: a crash in between leaves a lease with no share
        # (harmless), never a share that no lease keeps.
        metadata = self._renewed(
            storage_index, ShareKind.IMMUTABLE, upload.renew_secret, upload.cancel_secret
        )
        self._put_metadata(storage_index, metadata, durable=False)  # finishing flushes it
        self._complete(storage_index, share_number, upload)
        return WriteResult(finished=True)

    def _complete(self, storage_index: bytes, share_number: int, upload: IncompleteUpload) -> None:
        """Start the backend's completion; raise its error if it failed at once."""
        key = (storage_index, share_number)
        upload.completing = True
        self._completions[key] = []
        errors: list[Failure] = []
        done = self.backend.finish_incoming(storage_index, share_number, upload.size)
        done.addBoth(self._completed, key).addErrback(errors.append)
        if errors:
            errors[0].raiseException()

    def _completed(self, result: Failure | None, key: tuple[bytes, int]) -> Failure | None:
        del self._uploads[key]
        for waiter in self._completions.pop(key):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(None)
        return result

    def sync(self) -> None:
        """Make every change made so far durable (see the interface)."""
        self.backend.sync()

    def durable(self, storage_index: bytes, share_number: int) -> Deferred[None]:
        """Fires once the share's completion is durable (at once if none is under way)."""
        waiters = self._completions.get((storage_index, share_number))
        if waiters is None:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        waiters.append(waiter)
        return waiter

    def abort_immutable(
        self, storage_index: bytes, share_number: int, upload_secret: bytes
    ) -> None:
        """Discard an incomplete upload made with ``upload_secret``."""
        check.storage_index(storage_index)
        check.share_number(share_number)
        check.upload_secret(upload_secret)
        upload = self._uploads.get((storage_index, share_number))
        if (
            upload is None
            or upload.completing
            or not hmac.compare_digest(upload.upload_secret, upload_secret)
        ):
            raise NoSuchUpload(f"share {share_number} has no upload in progress with that secret")
        self._discard(storage_index, share_number)

    def _discard(self, storage_index: bytes, share_number: int) -> None:
        del self._uploads[storage_index, share_number]
        self.backend.discard_incoming(storage_index, share_number)

    def abort_idle_uploads(self, max_idle: float) -> int:
        """Discard uploads that received nothing for ``max_idle`` seconds; return how many."""
        cutoff = self.clock.seconds() - max_idle
        idle = [
            key
            for key, upload in self._uploads.items()
            if upload.last_activity <= cutoff and not upload.completing
        ]
        for storage_index, share_number in idle:
            self._discard(storage_index, share_number)
        return len(idle)

    def _shares_of(self, storage_index: bytes, kind: ShareKind) -> frozenset[int]:
        check.storage_index(storage_index)
        shares = self.backend.list_shares(storage_index)
        return shares if self._kind(storage_index, shares) is kind else frozenset()

    def _read(
        self, kind: ShareKind, storage_index: bytes, share_number: int, offset: int, length: int
    ) -> bytes:
        check.share_number(share_number)
        check.size(offset, "offset")
        check.size(length, "length")
        missing = NoSuchShare(f"no {kind.value} share {share_number} under that storage index")
        # The kind from the metadata alone (listing the shares as well would cost two
        # directory reads per request; a missing share is found by reading it).
        metadata = self.backend.get_metadata(storage_index)
        if (ShareKind.IMMUTABLE if metadata is None else metadata.kind) is not kind:
            raise missing
        try:
            return self.backend.read_share(storage_index, share_number, offset, length)
        except NoSuchShare:
            raise missing from None

    def list_immutable(self, storage_index: bytes) -> frozenset[int]:
        """Complete immutable shares under the index."""
        return self._shares_of(storage_index, ShareKind.IMMUTABLE)

    def read_immutable(
        self, storage_index: bytes, share_number: int, offset: int, length: int
    ) -> bytes:
        """Read from a complete immutable share, clamped at its end."""
        return self._read(ShareKind.IMMUTABLE, storage_index, share_number, offset, length)

    def _advise(
        self, kind: ShareKind, storage_index: bytes, share_number: int, reason: str
    ) -> None:
        check.share_number(share_number)
        if not isinstance(reason, str):
            raise InvalidRequest("the corruption reason must be text")
        if share_number not in self._shares_of(storage_index, kind):
            raise NoSuchShare(f"no {kind.value} share {share_number} under that storage index")
        report = CorruptionReport(
            kind, storage_index, share_number, reason[:MAX_REASON_LENGTH], self.clock.seconds()
        )
        self.corruption_reports.append(report)
        del self.corruption_reports[:-MAX_CORRUPTION_REPORTS]
        self.backend.record_corruption(report)

    def advise_corrupt_immutable(
        self, storage_index: bytes, share_number: int, reason: str
    ) -> None:
        """Record that a client found an immutable share corrupt."""
        self._advise(ShareKind.IMMUTABLE, storage_index, share_number, reason)

    # -- mutable -------------------------------------------------------------

    def read_test_write(
        self,
        storage_index: bytes,
        write_enabler: bytes,
        renew_secret: bytes,
        cancel_secret: bytes,
        test_write_vectors: dict[int, TestWriteVectors],
        read_vector: tuple[ReadVector, ...],
    ) -> ReadTestWriteResult:
        """Read, test, and (only if every test holds) write, as one step."""
        check.storage_index(storage_index)
        check.secret(write_enabler, "write enabler")
        check.secret(renew_secret, "lease renew secret")
        check.secret(cancel_secret, "lease cancel secret")
        check.test_write_vectors(test_write_vectors)
        check.read_vector(read_vector)

        backend = self.backend
        shares = backend.list_shares(storage_index)
        metadata = self._slot_metadata(storage_index, shares, write_enabler)
        reads = {
            n: [backend.read_share(storage_index, n, r.offset, r.size) for r in read_vector]
            for n in sorted(shares)
        }
        for n, vectors in test_write_vectors.items():
            for test in vectors.test:
                current = (
                    backend.read_share(storage_index, n, test.offset, test.size)
                    if n in shares
                    else b""
                )
                if current != test.specimen:
                    return ReadTestWriteResult(success=False, reads=reads)
        if test_write_vectors:
            self._check_mutable_space(storage_index, shares, test_write_vectors)
            leases = add_or_renew(
                () if metadata is None else metadata.leases,
                renew_secret,
                cancel_secret,
                self.clock.seconds(),
                RENEWAL_GRANULARITY,
            )
            new_metadata = IndexMetadata(
                ShareKind.MUTABLE, leases, write_enabler_digest(write_enabler)
            )
            self._apply_writes(storage_index, shares, new_metadata, test_write_vectors)
        return ReadTestWriteResult(success=True, reads=reads)

    def _slot_metadata(
        self, storage_index: bytes, shares: frozenset[int], write_enabler: bytes
    ) -> IndexMetadata | None:
        """The metadata of an existing mutable slot (None if there is none), once authorized."""
        if any(si == storage_index for si, _ in self._uploads):
            raise InvalidRequest("that storage index holds immutable shares, not a mutable slot")
        if not shares:
            return None  # a slot without shares is free for a new write enabler
        metadata = self.backend.get_metadata(storage_index)
        if metadata is None or metadata.kind is not ShareKind.MUTABLE:
            raise InvalidRequest("that storage index holds immutable shares, not a mutable slot")
        if not hmac.compare_digest(
            metadata.write_enabler_digest or b"", write_enabler_digest(write_enabler)
        ):
            raise NotAuthorized("wrong write enabler for that mutable slot")
        return metadata

    def _apply_writes(
        self,
        storage_index: bytes,
        shares: frozenset[int],
        metadata: IndexMetadata,
        test_write_vectors: dict[int, TestWriteVectors],
    ) -> None:
        """Apply every share's writes; delete the slot's metadata once no share is left."""
        deleted = {n for n, v in test_write_vectors.items() if v.new_length == 0}
        remaining = (shares | set(test_write_vectors)) - deleted
        if remaining:
            # Write enabler and lease first, so that no share ever exists without them; the
            # share writes (or deletions) that follow flush the metadata with them.
            self._put_metadata(storage_index, metadata, durable=False)
        for n, vectors in sorted(test_write_vectors.items()):
            if n in deleted:
                self.backend.delete_share(storage_index, n)
            else:
                writes = [(w.offset, w.data) for w in vectors.write]
                self.backend.write_share(storage_index, n, writes, vectors.new_length)
        if not remaining:
            self.backend.delete_index(storage_index)

    def _check_mutable_space(
        self,
        storage_index: bytes,
        shares: frozenset[int],
        test_write_vectors: dict[int, TestWriteVectors],
    ) -> None:
        growth = 0
        for n, vectors in test_write_vectors.items():
            old = self.backend.share_length(storage_index, n) if n in shares else 0
            new = _length_after(old, vectors)
            if new > MAX_MUTABLE_SHARE_SIZE:
                raise NoSpace(
                    f"share {n} would grow to {new} bytes, over the maximum mutable "
                    f"share size of {MAX_MUTABLE_SHARE_SIZE}"
                )
            growth += max(0, new - old)
        if growth:
            space = self.available_space()
            if growth > space:
                raise NoSpace(f"the write needs {growth} more bytes but {space} are available")

    def list_mutable(self, storage_index: bytes) -> frozenset[int]:
        """Share numbers of a mutable slot."""
        return self._shares_of(storage_index, ShareKind.MUTABLE)

    def read_mutable(
        self, storage_index: bytes, share_number: int, offset: int, length: int
    ) -> bytes:
        """Read from a mutable share, clamped at its end."""
        return self._read(ShareKind.MUTABLE, storage_index, share_number, offset, length)

    def advise_corrupt_mutable(self, storage_index: bytes, share_number: int, reason: str) -> None:
        """Record that a client found a mutable share corrupt."""
        self._advise(ShareKind.MUTABLE, storage_index, share_number, reason)


def _length_after(old: int, vectors: TestWriteVectors) -> int:
    """A mutable share's length after its writes and new length are applied."""
    length = max([old, *(w.offset + len(w.data) for w in vectors.write)])
    return length if vectors.new_length is None else vectors.new_length
