"""A crash-safe share backend on the local filesystem, laid out like Tahoe-LAFS's.

Layout under the backend's directory::

    shares/<2-char prefix>/<base32 SI>/<shnum>          complete shares
    shares/<2-char prefix>/<base32 SI>/metadata.cbor    kind, leases, write enabler digest
    shares/incoming/<2-char prefix>/<base32 SI>/<shnum> incomplete immutable uploads
    shares/incoming/tmp/                                temporary files of atomic writes
    corruption-advisories.log                           one JSON object per line

Every replacement of a file goes temp file + fsync + rename + directory fsync,
so a crash leaves either the old or the new file. Incomplete uploads live under
``incoming`` and become visible only by an atomic rename once every byte is
written; ``incoming`` is emptied whenever a backend is opened, so nothing a
crash leaves behind is ever readable. Paths are built only from validated
storage indexes and share numbers. Directories are 0700, files 0600.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
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
from storage.space import free_bytes

_METADATA = "metadata.cbor"
_DIR_MODE = 0o700
_FILE_MODE = 0o600


def fsync_directory(path: Path) -> None:
    """Make the entries of a directory (creations, renames, removals) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def atomic_replace(target: Path, tmpdir: Path, fill: Callable[[int], None]) -> None:
    """Replace ``target`` by a file that ``fill`` writes through a descriptor, atomically."""
    fd, tmpname = tempfile.mkstemp(dir=tmpdir, prefix="tmp-")
    try:
        fill(fd)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmpname)
        raise
    os.close(fd)
    os.replace(tmpname, target)
    fsync_directory(target.parent)


def atomic_write(target: Path, tmpdir: Path, data: bytes) -> None:
    """Replace ``target`` by a file holding ``data``, atomically."""
    atomic_replace(target, tmpdir, lambda fd: _pwrite_all(fd, data, 0))


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
    _tmp: Path = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._shares = self.path / "shares"
        self._incoming = self._shares / "incoming"
        self._tmp = self._incoming / "tmp"
        make_private_dirs(self._shares)
        shutil.rmtree(self._incoming, ignore_errors=True)
        make_private_dirs(self._tmp)

    def _index_dir(self, storage_index: bytes) -> Path:
        name = si_b2a(storage_index)
        return self._shares / name[:2] / name

    def _share_path(self, storage_index: bytes, share_number: int) -> Path:
        return self._index_dir(storage_index) / str(share_number)

    def _incoming_path(self, storage_index: bytes, share_number: int) -> Path:
        name = si_b2a(storage_index)
        return self._incoming / name[:2] / name / str(share_number)

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
        """Create or change a share: copy, change the copy, rename it over the original."""
        target = self._share_path(storage_index, share_number)
        make_private_dirs(target.parent)

        def fill(fd: int) -> None:
            try:
                with open(target, "rb") as source, open(fd, "wb", closefd=False) as copy:
                    shutil.copyfileobj(source, copy, 1 << 20)
            except FileNotFoundError:
                pass
            length = os.fstat(fd).st_size
            for offset, data in writes:
                _pwrite_all(fd, data, offset)
                length = max(length, offset + len(data))
            # An empty write past the end still extends the share (as Tahoe-LAFS's does).
            os.ftruncate(fd, length if new_length is None else new_length)

        atomic_replace(target, self._tmp, fill)

    def delete_share(self, storage_index: bytes, share_number: int) -> None:
        """Remove a complete share if it exists."""
        path = self._share_path(storage_index, share_number)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_directory(path.parent)

    def get_metadata(self, storage_index: bytes) -> IndexMetadata | None:
        """The index's metadata, or None."""
        path = self._index_dir(storage_index) / _METADATA
        try:
            encoded = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return _decode_metadata(encoded)
        except (ValueError, KeyError, TypeError, cbor2.CBORDecodeError) as e:
            raise StorageError(f"unreadable metadata file {path}") from e

    def put_metadata(self, storage_index: bytes, metadata: IndexMetadata) -> None:
        """Store the index's metadata atomically."""
        directory = self._index_dir(storage_index)
        make_private_dirs(directory)
        atomic_write(directory / _METADATA, self._tmp, _encode_metadata(metadata))

    def delete_index(self, storage_index: bytes) -> None:
        """Remove every complete share and the metadata, then the empty directories."""
        directory = self._index_dir(storage_index)
        for share_number in self.list_shares(storage_index):
            (directory / str(share_number)).unlink(missing_ok=True)
        (directory / _METADATA).unlink(missing_ok=True)
        for path in (directory, directory.parent):
            try:
                path.rmdir()
            except OSError:
                break
            fsync_directory(path.parent)

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
        make_private_dirs(path.parent)
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
        """Fsync the upload and rename it into place, then fsync the share directory."""
        source = self._incoming_path(storage_index, share_number)
        target = self._share_path(storage_index, share_number)
        fd = os.open(source, os.O_RDWR)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)
        make_private_dirs(target.parent)
        os.replace(source, target)
        fsync_directory(target.parent)
        self._remove_empty_incoming_dirs(source.parent)

    def discard_incoming(self, storage_index: bytes, share_number: int) -> None:
        """Throw away an incomplete upload."""
        path = self._incoming_path(storage_index, share_number)
        path.unlink(missing_ok=True)
        self._remove_empty_incoming_dirs(path.parent)

    def _remove_empty_incoming_dirs(self, directory: Path) -> None:
        for path in (directory, directory.parent):
            try:
                path.rmdir()
            except OSError:
                return

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
