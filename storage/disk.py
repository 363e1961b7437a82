"""A crash-safe share backend on the local filesystem, laid out like Tahoe-LAFS's.

Layout under the backend's directory::

    shares/<2-char prefix>/<base32 SI>/<shnum>          complete shares
    shares/<2-char prefix>/<base32 SI>/metadata.cbor    kind, leases, write enabler digest
    shares/incoming/<base32 SI>.<shnum>                 incomplete immutable uploads (but
                                                        small ones, held in memory)
    corruption-advisories.log                           one JSON object per line (.1: older)

    redo.log                                            changes not yet checkpointed

Mutable shares, metadata and deletions go through the redo log and are
applied in place (:mod:`storage.inplace`): one small flush per change, and a
crash at any moment leaves each file as the last acknowledged change made it.

Immutable shares are written under ``incoming`` and become visible only once
every byte is written and durable: a small one through the redo log, a larger
one by an atomic rename after an fsync; ``incoming`` is emptied whenever a
backend is opened, so nothing a crash leaves behind is ever readable. Their
completions are group-committed (:mod:`storage.commit`): the shares completed
while one sync runs share the next, and with a thread runner the syncs run off
the reactor thread; :meth:`DiskBackend.finish_incoming` answers a Deferred that
fires once the share is durable, and until then the share is neither listed nor
read.
Paths are built only from validated storage indexes and share numbers.
Directories are 0700, files 0600.

A backend assumes it is the only writer of its directory (the node's pid file
lock ensures that), so it keeps each storage index's metadata, once read or
written, in memory: the server consults it on every request.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cbor2
from attrs import define, field
from twisted.internet.defer import Deferred
from zope.interface import implementer

from storage.applier import lay_over_listing
from storage.backend import (
    CorruptionReport,
    IndexMetadata,
    IShareBackend,
    ShareKind,
    si_a2b,
    si_b2a,
)
from storage.commit import CompletingShare, GroupCommit, Threads
from storage.errors import NoSuchShare, StorageError
from storage.incoming import IncomingShares
from storage.inplace import (
    FILE_MODE,
    METADATA,
    LoggedFiles,
    len_parts,
    make_private_dirs,
    share_number,
)
from storage.leases import Lease
from storage.redolog import RedoLog
from storage.space import free_bytes

_REDO_LOG = "redo.log"
_CACHE_ENTRIES = 4096
"""Storage indexes whose paths and metadata a backend keeps (then it starts over; ~1 KiB each)."""
_KEPT_SHARE_BYTES = 16 * 1024 * 1024
"""Mutable shares' bytes kept in memory, at most (see :attr:`DiskBackend._kept`)."""
LOGGED_SHARE_BYTES = 128 * 1024
"""Immutable shares up to this size (every chunk tree node) are completed through the log."""


def _encode_metadata(metadata: IndexMetadata) -> bytes:
    return cbor2.dumps(
        {
            "version": 1,
            "kind": metadata.kind.value,
            "write-enabler-digest": metadata.write_enabler_digest,
            "leases": [
                [ls.renew_digest, ls.cancel_digest, ls.expiration] for ls in metadata.leases
            ],
        }
    )


def _decode_metadata(encoded: bytes) -> IndexMetadata:
    raw: dict[str, Any] = cbor2.loads(encoded)
    return IndexMetadata(
        kind=ShareKind(raw["kind"]),
        write_enabler_digest=raw["write-enabler-digest"],
        leases=tuple(Lease(bytes(r), bytes(c), int(e)) for r, c, e in raw["leases"]),
    )


ADVISORIES_MAX_BYTES = 1024 * 1024
"""Size past which ``corruption-advisories.log`` is rotated to ``.1`` (the older dropped)."""


@implementer(IShareBackend)
@define(eq=False)
class DiskBackend:
    """Shares under ``path``; opening it discards every incomplete upload left by a crash.

    ``threads`` runs the syncs of share completions (none: at once, in the caller's thread).
    ``batched``: completions wait for ``commits.drain()``, which the thread owning the
    backend calls after each batch of requests (:class:`storage.commit.GroupCommit`).

    *Ordered* (batched, or without ``threads``): a change is durable no later than every
    change made before it (docs/storage.rst, "Order, and a failed flush"): a slot's
    write right after small shares makes them durable with its own flush.
    """

    path: Path = field(converter=Path)
    threads: Threads | None = None
    batched: bool = False
    background: bool = False
    """Durable changes reach the files in a thread of their own (:mod:`storage.applier`)."""
    _shares: Path = field(init=False)
    _incoming: Path = field(init=False)
    _uploads: IncomingShares = field(init=False)
    _dirs: dict[bytes, Path] = field(init=False, factory=dict)
    _metadata: dict[bytes, IndexMetadata | None] = field(init=False, factory=dict)
    _kept: dict[bytes, dict[int, bytes]] = field(init=False, factory=dict)
    """Mutable shares as this backend last wrote them: a test-and-write reads its slot
    from memory, not from three opens of the file (bounded by ``_KEPT_SHARE_BYTES``)."""
    _kept_bytes: int = field(init=False, default=0)
    _log: RedoLog = field(init=False)
    _files: LoggedFiles = field(init=False)
    _failures_told: int = field(init=False, default=0)
    """Failed completions a change that flushes the log was failed for."""
    commits: GroupCommit = field(init=False)
    """Share completions queued and under way."""

    def __attrs_post_init__(self) -> None:
        self._shares = self.path / "shares"
        self._incoming = self._shares / "incoming"
        make_private_dirs(self._shares)
        shutil.rmtree(self._incoming, ignore_errors=True)
        make_private_dirs(self._incoming)
        self._uploads = IncomingShares(self._incoming, LOGGED_SHARE_BYTES)
        self._log = RedoLog(self.path / _REDO_LOG, fail_stop=True, buffered=True, grow_ahead=True)
        self._files = LoggedFiles(self._log, self._index_dir)
        self.commits = GroupCommit(self._log, self, self.threads, self.batched)
        if self.batched:  # (without threads, a completion is made durable at once)
            self._files.before_flush = self._complete_unlogged
        for record in list(self._log.records()):
            self._files.apply(record)
        self.checkpoint()
        if self.background:
            self._files.apply_in_background()

    def checkpoint(self, everything: bool = True) -> None:
        """Flush every file and directory changed since the last checkpoint; empty the log
        (``everything=False``: but for the records the applying thread has not written
        yet, see :meth:`storage.inplace.LoggedFiles.checkpoint`)."""
        self._files.checkpoint(everything)

    def _complete_unlogged(self) -> None:
        """Before the log is flushed for a change made now: complete the shares queued
        before it that are not in the log, so that none is durable later than the change
        (see *Ordered* above). A completion that failed since the last such flush (now,
        or in a commit since) fails the change, once: it may name that share."""
        if any(not share.logged for share in self.commits.pending()):
            self.commits.drain()
        if self.commits.failures != self._failures_told:
            self._failures_told = self.commits.failures
            raise StorageError("shares written before this change could not be completed")

    def checkpoint_when_asked(self, ask: Callable[[], None]) -> None:
        """From now on, when the log is due for a checkpoint, call ``ask`` (once, in the
        thread that grew the log or the applying thread) to have :meth:`checkpoint` run
        soon, not in that thread (:attr:`storage.inplace.LoggedFiles.checkpoint_due`)."""
        self._files.checkpoint_due = ask

    @property
    def checkpoint_wanted(self) -> bool:
        """Whether a checkpoint is due and not asked for yet (a hint, from any thread)."""
        return self._files.checkpoint_wanted

    def ask_checkpoint(self) -> None:
        """Ask for the checkpoint due unless clients are busy (LoggedFiles.ask_checkpoint)."""
        self._files.ask_checkpoint()

    def hold_applying(self, hold: Callable[[], bool]) -> None:
        """From now on durable records wait to be applied while ``hold()`` (asked in the
        applying thread) says so, within a bound (:mod:`storage.applier`); a backend that
        applies in the caller's thread ignores it."""
        if self._files.applier is not None:
            self._files.applier.hold = hold

    def sync(self) -> None:
        """Complete the shares queued (their group's flush is skipped when the log is
        durable past their records already), then flush what the log holds beyond."""
        self.commits.drain()
        self._files.sync()

    def close(self) -> None:
        """Complete queued shares, checkpoint and close the log (a backend not closed is
        replayed at its next opening)."""
        self.commits.drain()
        self.checkpoint()
        self._files.close()
        self._log.close()

    def stop_applying(self) -> None:
        """End the thread applying logged changes, once they are applied (the backend goes
        on applying them at once; :meth:`close` does this too)."""
        self._files.close()

    # -- shares and metadata -----------------------------------------------

    def _index_dir(self, storage_index: bytes) -> Path:
        path = self._dirs.get(storage_index)
        if path is None:
            if len(self._dirs) >= _CACHE_ENTRIES:
                self._dirs.clear()
            name = si_b2a(storage_index)
            path = self._dirs[storage_index] = self._shares / name[:2] / name
        return path

    def _forget(self, storage_index: bytes) -> None:
        kept = self._kept.pop(storage_index, None)
        if kept:
            self._kept_bytes -= sum(map(len, kept.values()))

    def _keep(self, storage_index: bytes, share_number: int, share: bytes) -> None:
        kept = self._kept.setdefault(storage_index, {})
        self._kept_bytes += len(share) - len(kept.get(share_number, b""))
        kept[share_number] = share
        if self._kept_bytes > _KEPT_SHARE_BYTES:
            self._kept.clear()
            self._kept_bytes = 0

    def _kept_share(self, storage_index: bytes, share_number: int) -> bytes | None:
        """A share's bytes if memory holds them (kept, or its newest waiting record's)."""
        kept = self._kept.get(storage_index)
        share = None if kept is None else kept.get(share_number)
        return share if share is not None else self._files.logged_share(storage_index, share_number)

    def _share_path(self, storage_index: bytes, share_number: int) -> Path:
        return self._index_dir(storage_index) / str(share_number)

    def _readable_path(self, storage_index: bytes, share_number: int) -> Path:
        if self.commits.hides(storage_index, share_number):
            raise NoSuchShare(f"no share {share_number} stored for that storage index")
        return self._share_path(storage_index, share_number)

    def list_shares(self, storage_index: bytes) -> frozenset[int]:
        """Numbers of the complete shares stored under the index.

        Records of the index that the applying thread has not written yet are laid over the
        directory's listing rather than waited for: a directory's slot is listed by every
        test-and-write, and its last write usually still waits behind the new objects
        logged before it, whose files take a directory and two inodes each.
        """
        records = self._files.pending(storage_index)
        if records is None:
            self._files.settle(storage_index)  # raises what left records unapplied
            records = []
        try:
            names = os.listdir(self._index_dir(storage_index))
        except FileNotFoundError:
            names = []
        numbers = {n for n in map(share_number, names) if n is not None}
        lay_over_listing(numbers, records)
        kept = self._kept.get(storage_index)
        if kept is not None and not numbers.issuperset(kept):
            self._forget(storage_index)  # a file removed by hand (or lost) is gone
        return frozenset(n for n in numbers if not self.commits.hides(storage_index, n))

    def share_length(self, storage_index: bytes, share_number: int) -> int:
        """Length of a complete share."""
        kept = self._kept_share(storage_index, share_number)
        if kept is not None:
            return len(kept)
        try:
            return self._readable_path(storage_index, share_number).stat().st_size
        except FileNotFoundError:
            raise NoSuchShare(f"no share {share_number} stored for that storage index") from None

    def read_share(
        self, storage_index: bytes, share_number: int, offset: int, length: int
    ) -> bytes:
        """Read from a complete share, clamped at its end."""
        kept = self._kept_share(storage_index, share_number)
        if kept is not None:
            return kept[offset : offset + max(0, length)]
        try:
            fd = os.open(self._readable_path(storage_index, share_number), os.O_RDONLY)
        except FileNotFoundError:
            raise NoSuchShare(f"no share {share_number} stored for that storage index") from None
        try:
            length = max(0, min(length, os.fstat(fd).st_size - offset))
            return os.pread(fd, length, offset) if length else b""
        finally:
            os.close(fd)

    def write_share(
        self,
        storage_index: bytes,
        share_number: int,
        writes: Sequence[tuple[int, bytes]],
        new_length: int | None,
    ) -> None:
        """Create or change a share: the new bytes go to the redo log, then into the file."""
        kept = self._kept_share(storage_index, share_number)
        if kept is not None:
            share = bytearray(kept)
        else:
            self._files.settle(storage_index)
            try:
                with open(self._share_path(storage_index, share_number), "rb") as source:
                    share = bytearray(source.read())
            except FileNotFoundError:
                share = bytearray()
        for offset, data in writes:
            if offset > len(share):
                share.extend(bytes(offset - len(share)))
            share[offset : offset + len(data)] = data
        # An empty write past the end still extends the share (as Tahoe-LAFS's does).
        if new_length is not None:
            del share[new_length:]
            share.extend(bytes(new_length - len(share)))
        data = bytes(share)
        self._forget(storage_index)  # until the change is durable, the file says what is
        self._files.change({"op": "share", "si": storage_index, "n": share_number, "data": data})
        self._keep(storage_index, share_number, data)

    def delete_share(self, storage_index: bytes, share_number: int) -> None:
        """Remove a complete share if it exists."""
        self._forget(storage_index)
        self._files.settle(storage_index)
        if self._share_path(storage_index, share_number).exists():
            self._files.change({"op": "delete-share", "si": storage_index, "n": share_number})
        else:
            self._files.sync()  # nothing to delete: still flush what the caller logged before

    def get_metadata(self, storage_index: bytes) -> IndexMetadata | None:
        """The index's metadata, or None."""
        if storage_index in self._metadata:
            return self._metadata[storage_index]
        self._files.settle(storage_index)
        path = self._index_dir(storage_index) / METADATA
        try:
            encoded = path.read_bytes()
        except FileNotFoundError:
            metadata = None
        else:
            try:
                metadata = _decode_metadata(encoded)
            except (ValueError, KeyError, TypeError, cbor2.CBORDecodeError) as e:
                raise StorageError(f"unreadable metadata file {path}") from e
        self._remember_metadata(storage_index, metadata)
        return metadata

    def _remember_metadata(self, storage_index: bytes, metadata: IndexMetadata | None) -> None:
        if len(self._metadata) >= _CACHE_ENTRIES:
            self._files.sync()  # the files must hold what the cache forgets
            self._metadata.clear()
        self._metadata[storage_index] = metadata

    def put_metadata(
        self, storage_index: bytes, metadata: IndexMetadata, durable: bool = True
    ) -> None:
        """Store the index's metadata (logged, then written in place).

        Not durable: logged without a flush of its own; the caller's next change flushes it.
        """
        self._metadata.pop(storage_index, None)  # unknown until the write is done
        record = {"op": "meta", "si": storage_index, "data": _encode_metadata(metadata)}
        self._files.change(record, sync=durable)
        self._remember_metadata(storage_index, metadata)

    def delete_index(self, storage_index: bytes) -> None:
        """Remove every complete share and the metadata, then the empty directories."""
        self._metadata.pop(storage_index, None)
        self._forget(storage_index)
        self._files.settle(storage_index)
        if self._index_dir(storage_index).is_dir():
            self._files.change({"op": "delete-index", "si": storage_index})

    def storage_indexes(self) -> Iterator[bytes]:
        """Every storage index with a directory under ``shares``."""
        self._files.settle_all()
        for prefix in sorted(os.listdir(self._shares)):
            if len(prefix) != 2:
                continue
            try:
                names = sorted(os.listdir(self._shares / prefix))
            except FileNotFoundError:  # removed since the outer listing
                continue
            for name in names:
                try:
                    storage_index = si_a2b(name)
                except ValueError:
                    continue
                if name[:2] == prefix:
                    yield storage_index

    def _key(self, storage_index: bytes, share_number: int) -> tuple[str, int]:
        return si_b2a(storage_index), share_number

    def create_incoming(self, storage_index: bytes, share_number: int) -> None:
        """Start an empty incomplete upload (in memory while it is small)."""
        self._uploads.create(self._key(storage_index, share_number))

    def write_incoming(
        self, storage_index: bytes, share_number: int, offset: int, data: bytes
    ) -> None:
        """Write bytes in place into an incomplete upload (no fsync until it completes)."""
        self._uploads.write(self._key(storage_index, share_number), offset, data)

    def read_incoming(
        self, storage_index: bytes, share_number: int, offset: int, length: int
    ) -> bytes:
        """Read back bytes of an incomplete upload."""
        return self._uploads.read(self._key(storage_index, share_number), offset, length)

    def finish_incoming(self, storage_index: bytes, share_number: int, size: int) -> Deferred[None]:
        """Make the upload a complete share, durably; the Deferred fires once it is.

        A small share (up to :data:`LOGGED_SHARE_BYTES`) goes through the redo log like a
        mutable one; a larger one is fsynced, renamed into place and its directory fsynced.
        Both are group-committed with the other completions (:mod:`storage.commit`).
        """
        key = self._key(storage_index, share_number)
        target = self._share_path(storage_index, share_number)
        if size <= LOGGED_SHARE_BYTES:
            data = self._uploads.take(key, size)
            record = {"op": "share", "si": storage_index, "n": share_number, "data": data}
            self._files.change(record, sync=False)  # applied once the group's flush is done
            # (no file: its bytes are in the record, applied to ``target`` once durable)
            share = CompletingShare(storage_index, share_number, size, target, target, True)
        else:
            source = self._uploads.hand_over(key)
            share = CompletingShare(storage_index, share_number, size, source, target)
        return self.commits.add(share)

    def publish(self, share: CompletingShare) -> list[Path]:
        """Put a share whose bytes are durable in place (:class:`storage.commit.Publisher`)."""
        files = self._files
        files.apply_durable()  # leases, and a small share itself: their records are durable
        if share.logged:
            return []
        files.settle_share(share.storage_index, share.share_number)  # a deletion logged first
        if share.storage_index in files.deleted:
            self.checkpoint()  # a replayed deletion must not remove this share after a crash
        directory = share.target.parent
        with files.locked():
            files.make_dirs(directory)
            os.replace(share.source, share.target)
            new = sorted(files.new_dirs & {directory, *directory.parents}, key=len_parts)
        return [*(path.parent for path in new), directory]

    def unpublish(self, share: CompletingShare) -> None:
        """A completion failed: throw its bytes away (:class:`storage.commit.Publisher`)."""
        if not share.logged:
            share.source.unlink(missing_ok=True)
            share.target.unlink(missing_ok=True)

    def discard_incoming(self, storage_index: bytes, share_number: int) -> None:
        """Throw away an incomplete upload."""
        self._uploads.discard(self._key(storage_index, share_number))

    def free_space(self) -> int | None:
        """Bytes free for an unprivileged user on the filesystem holding the shares."""
        return free_bytes(self._shares)

    def record_corruption(self, report: CorruptionReport) -> None:
        """Append the advisory as one JSON line to ``corruption-advisories.log``."""
        line = json.dumps(
            {
                "time": report.time,
                "kind": report.kind.value,
                "storage-index": si_b2a(report.storage_index),
                "share-number": report.share_number,
                "reason": report.reason,
            }
        )
        path = self.path / "corruption-advisories.log"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        try:
            if os.fstat(fd).st_size >= ADVISORIES_MAX_BYTES:
                # Bounded: whoever holds the NURL may file advisories without end, and
                # they do not count against reserved_space. One older file is kept.
                os.replace(path, path.with_name(path.name + ".1"))
                os.close(fd)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
            os.write(fd, (line + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
