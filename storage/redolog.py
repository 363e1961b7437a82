"""An append-only redo log: one flush makes a change durable before it is applied in place.

A record is ``magic (4) | payload length (u32) | BLAKE2b-128 of the payload
(16) | payload`` where the payload is a CBOR map describing one idempotent
change (its meaning is the caller's). :meth:`RedoLog.append` writes one record
and ``fdatasync``\\ s the log: one cheap flush of an append, instead of the
create + fsync + rename + directory fsync of an atomic file replacement.

A crash can leave a partly written last record; :meth:`RedoLog.records` stops
at the first record that is short or fails its checksum, and
:meth:`RedoLog.reset` (after the caller has made every change durable by
other means) empties the log.

Preallocated. The file is extended with zeros :data:`EXTEND_BYTES` at a time,
ahead of the records, and records are written over those zeros. An
``fdatasync`` of an append that grows the file commits the filesystem's
journal (the new size and blocks); one of a write inside the file flushes the
data alone: on ext4 here, 106 against 177 µs for an fsync's records, and no
journal commit for other threads' writes to wait behind. Zeros after the last
record are the log's free space, not damage: a record starts with its magic.

Recycled. Emptying the log (:meth:`RedoLog.reset`, after a checkpoint) keeps the
file and its blocks: it writes an empty record of a new *epoch* at its start,
and the records that follow are written over the old ones. Every record names
its epoch (8 random bytes, in its head and in its checksum), so the old records
after the new ones are free space too: reading stops at the first record of
another epoch. Truncating instead meant growing the file again after every
checkpoint, and every megabyte of zeros grown was written to the disk by the
next flush: an fsync stream on the embedded grid wrote more zeros than records
(the intent log is emptied every few fsyncs), and the flush after each growth
took three times as long. A record of the epoch that fails its checksum is
damage (a torn write), as before. The file keeps at most :data:`KEEP_BYTES` when
emptied. Records of the first format (magic ``GGRL``, no epoch) are still read;
a log holding them is appended to in that format until it is emptied or
rewritten. A clean :meth:`RedoLog.close` leaves the log in the first format (its
records rewritten, or the file emptied), which is what an older gateway reads:
it would take records of an epoch for damage and cut them off.

Buffered (the storage core's log). Records appended without a flush are kept in
memory and written together, with one ``pwrite``, when the log is flushed (or
past :data:`BUFFER_BYTES`): an fsync's objects and directory are half a dozen
records. The room they take is reserved (zeros written) when each is appended,
so writing them later cannot find the disk full.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2

from storage.logroom import ROOM

MAGIC = b"GGR2"
"""A record's start: ``magic (4) | epoch (8) | payload length (u32) | BLAKE2b-128 of the
epoch and payload (16) | payload``; a payload of no bytes marks an epoch's start."""
MAGIC_V1 = b"GGRL"
"""The first format's: ``magic (4) | payload length (u32) | BLAKE2b-128 (16) | payload``."""
_HEAD = struct.Struct(">4s8sI16s")
_HEAD_V1 = struct.Struct(">4sI16s")
EPOCH_BYTES = 8
EXTEND_BYTES = 1 << 20
"""How much the log file grows by when a record needs room: zeros, written."""
_ZEROS = bytes(EXTEND_BYTES)

ROOM_AHEAD = EXTEND_BYTES // 2
"""Free room below which a log made with ``grow_ahead`` has the room thread grow its file
(:mod:`storage.logroom`)."""

BUFFER_BYTES = 256 * 1024
"""Records a buffered log keeps in memory at most before writing them."""

KEEP_BYTES = 16 << 20
"""What an emptied log keeps of its file (room for the next records), at most."""


def fsync_directory(path: Path) -> None:
    """Make the entries of a directory (creations, renames, removals) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset``."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _digest(payload: bytes, epoch: bytes | None = None) -> bytes:
    if epoch is None:
        return hashlib.blake2b(payload, digest_size=16, person=b"gg:redo").digest()
    return hashlib.blake2b(payload, digest_size=16, person=b"gg:redo2", salt=epoch).digest()


def _encode_payload(payload: bytes, epoch: bytes | None) -> bytes:
    if epoch is None:
        return _HEAD_V1.pack(MAGIC_V1, len(payload), _digest(payload)) + payload
    return _HEAD.pack(MAGIC, epoch, len(payload), _digest(payload, epoch)) + payload


def _encode(record: dict[str, Any], epoch: bytes | None) -> bytes:
    return _encode_payload(cbor2.dumps(record), epoch)


def _new_epoch() -> bytes:
    return os.urandom(EPOCH_BYTES)


class RedoLog:
    """One log file, opened for appending (0600)."""

    _fd: int
    _closer: weakref.finalize[[int], RedoLog]

    def __init__(
        self,
        path: Path,
        repair: bool = True,
        fail_stop: bool = False,
        buffered: bool = False,
        grow_ahead: bool = False,
    ) -> None:
        """Open (creating) the log; find where its intact records end.

        With ``repair`` (the writer's opening) a damaged or torn tail is cut off,
        so new records follow the intact ones; ``damaged_bytes`` tells how much
        was there. With ``grow_ahead`` (a ``fail_stop`` log) the file grows in the
        room thread (:mod:`storage.logroom`) before the records reach its end.
        """
        assert fail_stop or not grow_ahead, "the room thread's flush must stop the log"
        self.path = path
        self._writer = repair
        #: Held while the file grows, shrinks or changes descriptor (the room thread
        #: writes zeros past :attr:`allocated` meanwhile; the records stay before it).
        self._room = threading.RLock()
        self._grow = grow_ahead and repair
        self._growing = False
        #: Set each time the room thread has looked at the log (for tests).
        self.grown = threading.Event()
        self.grown.set()
        flags = os.O_RDWR | os.O_CREAT if repair else os.O_RDONLY
        self._adopt(os.open(path, flags, 0o600))
        #: The file's length: the records, then free space (zeros, or an earlier epoch's
        #: records) up to it.
        self.allocated = os.fstat(self._fd).st_size
        #: The epoch of the records (None: the first format's).
        self.epoch: bytes | None = _new_epoch()
        #: Where the records end.
        self.size = 0
        #: Where the epoch's records start (after its empty first record, if any).
        self.start = 0
        damaged = False
        for end, payload, epoch, torn in self._scan():
            if end == 0:
                damaged = torn
                break
            if self.size == 0:
                self.epoch = epoch
                if not payload:
                    self.start = end
            self.size = end
        self.damaged_bytes = self.allocated - self.size if damaged else 0
        #: Bytes appended since opening (never goes back), and how many of them are durable.
        self.appended = 0
        self.durable = 0
        #: With ``fail_stop`` (the storage core's log), the error of a flush that failed.
        #: The log then flushes nothing more and says nothing more is durable until
        #: :meth:`rewrite` or :meth:`reset` replace its contents: the kernel may have
        #: dropped the pages it could not write, so a later flush that succeeds would
        #: prove nothing (the next opening replays the records that reached the disk, up
        #: to the first that did not). Without it a later flush that succeeds is trusted
        #: (the directory journal's entries are published from memory meanwhile).
        self.failed: OSError | None = None
        self.fail_stop = fail_stop
        self.buffered = buffered
        self._pending: list[bytes] = []
        self._pending_at = self._pending_bytes = 0
        if repair and (self.damaged_bytes or not self._zeros_after(self.size)):
            # Damage, or an earlier epoch's records: cut off, so that no record of this
            # epoch written beyond a torn one (a flush writes its pages in any order) is
            # ever found behind the records appended from now on.
            os.ftruncate(self._fd, self.size)
            os.fsync(self._fd)
            self.allocated = self.size

    @property
    def empty(self) -> bool:
        """Whether the log holds no record."""
        return self.size <= self.start

    def _zeros_after(self, offset: int) -> bool:
        """Whether the file holds only zeros from ``offset`` to its end."""
        while offset < self.allocated:
            data = os.pread(self._fd, min(EXTEND_BYTES, self.allocated - offset), offset)
            if not data:
                return True
            if data.count(0) != len(data):
                return False
            offset += len(data)
        return True

    def _scan(self) -> Iterator[tuple[int, bytes, bytes | None, bool]]:
        """Each intact record from the start, in order: where it ends, its payload and
        its epoch; then once ``(0, b"", None, damaged)``, where ``damaged`` tells whether
        what follows the last one is damage rather than free space."""
        offset = 0
        first = MAGIC_V1 if self.allocated and self._magic(0) == MAGIC_V1 else MAGIC
        epoch: bytes | None = None
        while True:
            if first == MAGIC:
                head = os.pread(self._fd, _HEAD.size, offset)
                if len(head) < _HEAD.size or head[:4] != MAGIC:
                    # Zeros are free space; so is anything else after records of an
                    # epoch (the earlier epochs' records, cut anywhere); before any, damage.
                    yield 0, b"", None, offset == 0 and not self._zeros_after(offset)
                    return
                _, its_epoch, length, digest = _HEAD.unpack(head)
                if epoch is not None and its_epoch != epoch:
                    yield 0, b"", None, False  # an earlier epoch's record: free space
                    return
                start = offset + _HEAD.size
            else:
                head = os.pread(self._fd, _HEAD_V1.size, offset)
                if len(head) < _HEAD_V1.size or head[:4] != MAGIC_V1:
                    yield 0, b"", None, not self._zeros_after(offset)
                    return
                _, length, digest = _HEAD_V1.unpack(head)
                its_epoch = None
                start = offset + _HEAD_V1.size
            payload = os.pread(self._fd, length, start)
            if len(payload) < length or _digest(payload, its_epoch) != digest:
                yield 0, b"", None, True  # a record of the epoch, torn
                return
            epoch = its_epoch
            offset = start + length
            yield offset, payload, its_epoch, False

    def _magic(self, offset: int) -> bytes:
        return os.pread(self._fd, 4, offset)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every complete, intact record from the start, in order (a damaged one ends it)."""
        for end, payload, _, _ in self._scan():
            if end == 0 or end > self.size:
                return
            if not payload:
                continue  # an epoch's start
            try:
                record = cbor2.loads(payload)
            except (ValueError, cbor2.CBORDecodeError):
                return
            if not isinstance(record, dict):
                return
            yield record

    def append(self, record: dict[str, Any], sync: bool = True) -> None:
        """Write one record and flush it to disk; it is durable once this returns.

        With ``sync=False`` it is not flushed yet: the next flushed append (or
        :meth:`sync`) makes it durable together with its own record.
        """
        data = _encode(record, self.epoch)
        end = self.size + len(data)
        if end > self.allocated:
            with self._room:  # (after the room thread, if it is growing the file now)
                if end > self.allocated:
                    self._extend(end)
        if self.buffered:
            if not self._pending:
                self._pending_at = self.size
            self._pending.append(data)
            self._pending_bytes += len(data)
            if self._pending_bytes >= BUFFER_BYTES:
                self._write_pending()
        else:
            pwrite_all(self._fd, data, self.size)
        self.size = end
        self.appended += len(data)
        if self._grow and not self._growing and self.allocated - end < ROOM_AHEAD:
            self._growing = True
            self.grown.clear()
            ROOM.ask(self)
        if sync:
            self.sync()

    def _write_pending(self) -> None:
        """Write the records kept in memory (buffered), with one ``pwrite``."""
        if self._pending:
            data = b"".join(self._pending)
            self._drop_pending()
            pwrite_all(self._fd, data, self._pending_at)

    def _drop_pending(self) -> None:
        self._pending.clear()
        self._pending_bytes = 0

    def _extend(self, end: int) -> None:
        """Grow the file with zeros past ``end`` (to the next multiple of the step)."""
        target = (end // EXTEND_BYTES + 1) * EXTEND_BYTES
        offset = self.allocated
        while offset < target:
            step = min(EXTEND_BYTES - offset % EXTEND_BYTES, target - offset)
            pwrite_all(self._fd, memoryview(_ZEROS)[:step], offset)
            offset += step
        self.allocated = target

    def grow_ahead(self) -> None:
        """In the room thread: grow the file by :data:`EXTEND_BYTES` if less than
        :data:`ROOM_AHEAD` is left after the records, and flush it, so that neither the
        zeros nor the new size wait for the writer's next flush. A failure to grow is left
        to the writer (it grows the file itself when it must, and meets the error then); a
        failed flush stops the log (:attr:`failed`), as one of the writer's would."""
        try:
            with self._room:
                if self._fd < 0 or self.allocated - self.size >= ROOM_AHEAD:
                    return
                try:
                    self._extend(self.allocated + ROOM_AHEAD)
                except OSError:
                    return  # (a full disk, say): met by the writer if it must grow
                try:
                    os.fdatasync(self._fd)
                except OSError as e:
                    self.flush_failed(e)
        finally:
            self._growing = False
            self.grown.set()

    @property
    def unsynced(self) -> bool:
        """Whether records were appended since the last flush."""
        return self.durable < self.appended

    def sync(self) -> None:
        """Flush every record appended so far (raises the OSError of this flush, or of
        an earlier one that failed: see :attr:`failed`)."""
        self._refuse_after_failure()
        self._write_pending()
        if self.unsynced:
            try:
                os.fdatasync(self._fd)
            except OSError as e:
                self.flush_failed(e)
                raise
            self.durable = self.appended

    def flush_failed(self, error: OSError) -> None:
        """A flush failed (here or of a :meth:`sync_point`, in another thread): see
        :attr:`failed`."""
        if self.fail_stop and self.failed is None:
            self.failed = error

    def _refuse_after_failure(self) -> None:
        if self.failed is not None:
            raise OSError(
                self.failed.errno,
                f"an earlier flush of {self.path.name} failed ({self.failed.strerror}); "
                "nothing written since is known durable until a restart",
            )

    def sync_point(self) -> tuple[int, int]:
        """For a flush in another thread: a duplicate of the log's descriptor and the
        :attr:`appended` count that flushing it makes durable.

        The thread ``fdatasync``\\ s and closes the duplicate, then the caller reports
        :meth:`synced`. The duplicate stays valid whatever the log does meanwhile (a
        :meth:`rewrite` makes everything durable by itself).
        Raises once a flush has failed (see :attr:`failed`).
        """
        self._refuse_after_failure()
        self._write_pending()
        return os.dup(self._fd), self.appended

    def synced(self, point: int) -> None:
        """A flush of a :meth:`sync_point` returned: records up to ``point`` are durable."""
        self.durable = max(self.durable, point)

    def rewrite(self, records: list[dict[str, Any]], first_format: bool = False) -> None:
        """Replace the whole log by ``records``, atomically and durably (compaction); with
        ``first_format``, records without an epoch (what an older gateway reads)."""
        self._drop_pending()  # (they are among ``records``, or obsolete)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        size = 0
        try:
            # A buffer's worth at a time: the records waiting can be tens of MiB (shares of
            # up to 128 KiB each), and joining all their encodings held them twice over.
            batch: list[bytes] = []
            held = 0
            epoch = None if first_format else _new_epoch()
            for record in records:
                batch.append(_encode(record, epoch))
                held += len(batch[-1])
                if held >= BUFFER_BYTES:
                    pwrite_all(fd, b"".join(batch), size)
                    size, held = size + held, 0
                    batch.clear()
            pwrite_all(fd, b"".join(batch), size)
            size += held
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        fsync_directory(self.path.parent)
        with self._room:
            self._release()
            self._adopt(os.open(self.path, os.O_RDWR, 0o600))
            self.size = self.allocated = size
        self.epoch, self.start = epoch, 0
        self.durable = self.appended  # the live records are all in the flushed new file
        self.failed = None

    def reset(self) -> None:
        """Empty the log, durably (every change it held must already be on disk).

        The file and its room are kept (up to :data:`KEEP_BYTES`): an empty record of a
        new epoch is written at its start, and what follows it is free space."""
        with self._room:
            self._drop_pending()
            epoch = _new_epoch()
            marker = _encode_payload(b"", epoch)
            if self.allocated < len(marker):
                os.ftruncate(self._fd, 0)
                os.fsync(self._fd)
                self.allocated = self.start = self.size = 0
            else:
                if self.allocated > KEEP_BYTES:
                    os.ftruncate(self._fd, KEEP_BYTES)
                    self.allocated = KEEP_BYTES
                pwrite_all(self._fd, marker, 0)
                os.fdatasync(self._fd)
                self.start = self.size = len(marker)
            self.epoch = epoch
            self.durable = self.appended
            self.failed = None

    def close(self) -> None:
        """Close the file (records stay for the next opening). A log this opening wrote
        records of an epoch in is left in the first format, which an older gateway reads
        (see "Recycled"; after a crash it stays as it was)."""
        with self._room:
            if self._fd >= 0:
                self._write_pending()
                if self._writer and self.epoch is not None and self.failed is None:
                    self._to_first_format()
                self._release()

    def _to_first_format(self) -> None:
        try:
            if not self.empty:
                self.rewrite(list(self.records()), first_format=True)
            elif self.allocated:
                os.ftruncate(self._fd, 0)
                os.fsync(self._fd)
        except OSError:
            pass  # (a full disk, say) left as it is: a gateway of this format reads it

    def _release(self) -> None:
        if self._fd >= 0:
            self._closer.detach()
            os.close(self._fd)
            self._fd = -1

    def _adopt(self, fd: int) -> None:
        """Use ``fd`` as the log's descriptor; a log dropped without :meth:`close` still
        gives it back when collected (records not written yet are lost, as at a crash)."""
        self._fd = fd
        self._closer = weakref.finalize(self, os.close, fd)
