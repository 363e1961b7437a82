"""A crash-safe share backend on the local filesystem, laid out like Tahoe-LAFS's.

Layout under the backend's directory::

    shares/<2-char prefix>/<base32 SI>/<shnum>          complete shares
    shares/<2-char prefix>/<base32 SI>/metadata.cbor    kind, leases, write enabler digest
    shares/incoming/<base32 SI>.<shnum>                 incomplete immutable uploads
    corruption-advisories.log                           one JSON object per line

    redo.log                                            changes not yet checkpointed

Mutable shares, metadata and deletions are first appended to the redo log
(:mod:`storage.redolog`, one ``fdatasync``), then applied to the files in
place without flushing. Opening a backend replays the log (every record is an
idempotent "this file now holds these bytes" or "this is gone"), so a crash at
any moment leaves each file as the last acknowledged change made it. A
checkpoint (when the log passes :data:`CHECKPOINT_BYTES`, at :meth:`close` and
at opening) fsyncs every file and directory changed since the previous one and
empties the log. That is one small flush per change instead of a temp file,
fsync, rename and directory fsync, which dominated directory operations.

Immutable shares are written under ``incoming`` and become visible only once
every byte is written: a small one through the redo log, a larger one by an
atomic rename, fsynced; ``incoming`` is emptied
whenever a backend is opened, so nothing a crash leaves behind is ever readable.
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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cbor2
from attrs import define, field
from zope.interface import implementer

from storage.backend import (
    CorruptionReport,
    IndexMetadata,
    IShareBackend,
    ShareKind,
    si_a2b,
    si_b2a,
)
from storage.errors import NoSuchShare, StorageError
from storage.leases import Lease
from storage.redolog import RedoLog, fsync_directory
from storage.space import free_bytes

_METADATA = "metadata.cbor"
_REDO_LOG = "redo.log"
_CACHE_ENTRIES = 65536
CHECKPOINT_BYTES = 8 * 1024 * 1024
"""Size of the redo log that triggers a checkpoint."""
LOGGED_SHARE_BYTES = 64 * 1024
"""Immutable shares up to this size are completed through the redo log."""
"""Storage indexes whose paths and metadata a backend keeps in memory (then it starts over)."""
_DIR_MODE = 0o700
_FILE_MODE = 0o600


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and any missing parents with mode 0700, durably."""
    if path.is_dir():
        return
    make_private_dirs(path.parent)
    try:
        path.mkdir(mode=_DIR_MODE)
    except FileExistsError:
        return
    fsync_directory(path.parent)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


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


def len_parts(path: Path) -> int:
    """How deep a path is (sort key: parents before children)."""
    return len(path.parts)


def _share_number(name: str) -> int | None:
    if name.isascii() and name.isdigit() and str(int(name)) == name and int(name) <= 255:
        return int(name)
    return None


@implementer(IShareBackend)
@define(eq=False)
class DiskBackend:
    """Shares under ``path``; opening it discards every incomplete upload left by a crash."""

    path: Path = field(converter=Path)
    _shares: Path = field(init=False)
    _incoming: Path = field(init=False)
    _dirs: dict[bytes, Path] = field(init=False, factory=dict)
    _metadata: dict[bytes, IndexMetadata | None] = field(init=False, factory=dict)
    _log: RedoLog = field(init=False)
    _dirty_files: set[Path] = field(init=False, factory=set)
    """Files changed in place since the last checkpoint."""
    _dirty_dirs: set[Path] = field(init=False, factory=set)
    """Directories whose entries changed since the last checkpoint."""
    _new_dirs: set[Path] = field(init=False, factory=set)
    """Directories created since the last checkpoint (their own entry not yet flushed)."""
    _deleted: set[bytes] = field(init=False, factory=set)
    """Storage indexes with a logged deletion since the last checkpoint."""

    def __attrs_post_init__(self) -> None:
        self._shares = self.path / "shares"
        self._incoming = self._shares / "incoming"
        make_private_dirs(self._shares)
        shutil.rmtree(self._incoming, ignore_errors=True)
        make_private_dirs(self._incoming)
        self._log = RedoLog(self.path / _REDO_LOG)
        for record in list(self._log.records()):
            self._apply(record)
        self.checkpoint()

    # -- the redo log --------------------------------------------------------

    def _change(self, record: dict[str, Any], sync: bool = True) -> None:
        """Make a change durable in the log (``sync``), then apply it in place."""
        self._log.append(record, sync)
        self._apply(record)
        if self._log.size >= CHECKPOINT_BYTES:
            self.checkpoint()

    def _apply(self, record: dict[str, Any]) -> None:
        """Apply one logged change to the files (idempotent; nothing is flushed)."""
        op, storage_index = record["op"], bytes(record["si"])
        directory = self._index_dir(storage_index)
        if op in ("share", "meta"):
            name = str(int(record["n"])) if op == "share" else _METADATA
            self._write_in_place(directory, name, bytes(record["data"]))
        elif op == "delete-share":
            self._unlink(directory / str(int(record["n"])))
        elif op == "delete-index":
            self._deleted.add(storage_index)
            for name in os.listdir(directory) if directory.is_dir() else ():
                if name == _METADATA or _share_number(name) is not None:
                    self._unlink(directory / name)
            for path in (directory, directory.parent):
                try:
                    path.rmdir()
                except OSError:
                    break
                self._dirty_dirs.add(path.parent)
                self._dirty_dirs.discard(path)
                self._new_dirs.discard(path)
        else:
            raise StorageError(f"unknown change {op!r} in {self._log.path}")

    def _write_in_place(self, directory: Path, name: str, data: bytes) -> None:
        self._make_dirs(directory)
        path = directory / name
        try:
            fd = os.open(path, os.O_WRONLY)
        except FileNotFoundError:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, _FILE_MODE)
            self._dirty_dirs.add(directory)
        try:
            _pwrite_all(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)
        self._dirty_files.add(path)

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        self._dirty_files.discard(path)
        self._dirty_dirs.add(path.parent)

    def _make_dirs(self, directory: Path) -> None:
        """Create ``directory`` and missing parents (0700); flushed at the next checkpoint."""
        if directory.is_dir():
            return
        self._make_dirs(directory.parent)
        try:
            directory.mkdir(mode=_DIR_MODE)
        except FileExistsError:
            return
        self._new_dirs.add(directory)
        self._dirty_dirs.add(directory.parent)

    def _make_durable_dirs(self, directory: Path) -> None:
        """Create ``directory`` durably, flushing any not yet durable parent's entry first."""
        for path in sorted(self._new_dirs & {directory, *directory.parents}, key=len_parts):
            fsync_directory(path.parent)
            self._new_dirs.discard(path)
        make_private_dirs(directory)

    def checkpoint(self) -> None:
        """Flush every file and directory changed since the last checkpoint; empty the log."""
        for path in self._dirty_files:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for path in sorted(self._dirty_dirs, key=len_parts, reverse=True):
            try:
                fsync_directory(path)
            except FileNotFoundError:
                continue
        if self._log.size:
            self._log.reset()
        self._dirty_files.clear()
        self._dirty_dirs.clear()
        self._new_dirs.clear()
        self._deleted.clear()

    def close(self) -> None:
        """Checkpoint and close the log (a backend not closed is replayed at its next opening)."""
        self.checkpoint()
        self._log.close()

    # -- shares and metadata -----------------------------------------------

    def _index_dir(self, storage_index: bytes) -> Path:
        path = self._dirs.get(storage_index)
        if path is None:
            if len(self._dirs) >= _CACHE_ENTRIES:
                self._dirs.clear()
            name = si_b2a(storage_index)
            path = self._dirs[storage_index] = self._shares / name[:2] / name
        return path

    def _share_path(self, storage_index: bytes, share_number: int) -> Path:
        return self._index_dir(storage_index) / str(share_number)

    def _incoming_path(self, storage_index: bytes, share_number: int) -> Path:
        # Flat: no directory to create and remove per upload (each costs a journal commit).
        return self._incoming / f"{si_b2a(storage_index)}.{share_number}"

    def list_shares(self, storage_index: bytes) -> frozenset[int]:
        """Numbers of the complete shares stored under the index."""
        try:
            names = os.listdir(self._index_dir(storage_index))
        except FileNotFoundError:
            return frozenset()
        return frozenset(n for n in map(_share_number, names) if n is not None)

    def share_length(self, storage_index: bytes, share_number: int) -> int:
        """Length of a complete share."""
        try:
            return self._share_path(storage_index, share_number).stat().st_size
        except FileNotFoundError:
            raise NoSuchShare(f"no share {share_number} stored for that storage index") from None

    def read_share(
        self, storage_index: bytes, share_number: int, offset: int, length: int
    ) -> bytes:
        """Read from a complete share, clamped at its end."""
        try:
            fd = os.open(self._share_path(storage_index, share_number), os.O_RDONLY)
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
        self._change({"op": "share", "si": storage_index, "n": share_number, "data": bytes(share)})

    def delete_share(self, storage_index: bytes, share_number: int) -> None:
        """Remove a complete share if it exists."""
        if self._share_path(storage_index, share_number).exists():
            self._change({"op": "delete-share", "si": storage_index, "n": share_number})
        else:
            self._log.sync()  # nothing to delete: still flush what the caller logged before

    def get_metadata(self, storage_index: bytes) -> IndexMetadata | None:
        """The index's metadata, or None."""
        if storage_index in self._metadata:
            return self._metadata[storage_index]
        path = self._index_dir(storage_index) / _METADATA
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
        self._change(record, sync=durable)
        self._remember_metadata(storage_index, metadata)

    def delete_index(self, storage_index: bytes) -> None:
        """Remove every complete share and the metadata, then the empty directories."""
        self._metadata.pop(storage_index, None)
        if self._index_dir(storage_index).is_dir():
            self._change({"op": "delete-index", "si": storage_index})

    def storage_indexes(self) -> Iterator[bytes]:
        """Every storage index with a directory under ``shares``."""
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

    def create_incoming(self, storage_index: bytes, share_number: int) -> None:
        """Start an empty incomplete upload file."""
        path = self._incoming_path(storage_index, share_number)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE))

    def write_incoming(
        self, storage_index: bytes, share_number: int, offset: int, data: bytes
    ) -> None:
        """Write bytes in place into an incomplete upload (no fsync until it completes)."""
        fd = os.open(self._incoming_path(storage_index, share_number), os.O_WRONLY)
        try:
            _pwrite_all(fd, data, offset)
        finally:
            os.close(fd)

    def read_incoming(
        self, storage_index: bytes, share_number: int, offset: int, length: int
    ) -> bytes:
        """Read back bytes of an incomplete upload."""
        fd = os.open(self._incoming_path(storage_index, share_number), os.O_RDONLY)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def finish_incoming(self, storage_index: bytes, share_number: int, size: int) -> None:
        """Make the upload a complete share, durably.

        A small share (up to :data:`LOGGED_SHARE_BYTES`) goes through the redo log like a
        mutable one: one flush. A larger one is fsynced, renamed into place and its
        directory fsynced.
        """
        source = self._incoming_path(storage_index, share_number)
        target = self._share_path(storage_index, share_number)
        if size <= LOGGED_SHARE_BYTES:
            with open(source, "rb") as incoming:
                data = incoming.read(size)
            data += bytes(size - len(data))
            self._change({"op": "share", "si": storage_index, "n": share_number, "data": data})
            source.unlink()
            return
        self._log.sync()  # the share's metadata first: never a share without its lease
        fd = os.open(source, os.O_RDWR)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)
        if storage_index in self._deleted:
            self.checkpoint()  # a replayed deletion must not remove this share after a crash
        self._make_durable_dirs(target.parent)
        os.replace(source, target)
        fsync_directory(target.parent)

    def discard_incoming(self, storage_index: bytes, share_number: int) -> None:
        """Throw away an incomplete upload."""
        path = self._incoming_path(storage_index, share_number)
        path.unlink(missing_ok=True)

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
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, _FILE_MODE)
        try:
            os.write(fd, (line + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
