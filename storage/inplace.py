"""Share files changed through the redo log: logged, then applied in place, checkpointed.

Mutable shares, metadata, deletions and small immutable shares are first
appended to the redo log (:mod:`storage.redolog`), then applied to the files in
place without flushing. A record is applied only once it is durable: at once
after its own ``fdatasync``, or, appended without one (a lease written just
before a share completes, a small share being completed), as soon as a later
flush covers it (:meth:`LoggedFiles.apply_durable`). So a crash at any moment
leaves each file as the last acknowledged change made it, or as a change the
log replays whole. Opening a backend replays the log (every record is an
idempotent "this file now holds these bytes" or "this is gone"). A checkpoint
(when the log passes :data:`CHECKPOINT_BYTES`, or once clients pause, at closing
and at opening)
fsyncs every file and directory changed since the previous one and empties the
log (by one ``syncfs`` when there are many). That is one small flush per change
instead of a temp file, fsync, rename and directory fsync, which dominated
directory operations.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from attrs import define, field

from storage.applier import BackgroundApplier
from storage.errors import StorageError
from storage.redolog import RedoLog, fsync_directory, pwrite_all

METADATA = "metadata.cbor"
CHECKPOINT_BYTES = 8 * 1024 * 1024
"""Size of the redo log that triggers a checkpoint."""
CHECKPOINT_WHILE_BUSY = 4
"""How many times :data:`CHECKPOINT_BYTES` the log may grow to before a checkpoint is asked
for while the applying thread is held back (clients busy): a checkpoint holds up every
request to the storage for tens of milliseconds (a filesystem flush, the waiting records
rewritten), so it waits for clients to pause (:meth:`LoggedFiles.ask_checkpoint`)."""
CHECKPOINT_LIMIT = 8
"""How many times :data:`CHECKPOINT_BYTES` the log may grow to while a checkpoint asked
for (:attr:`LoggedFiles.checkpoint_due`) has not run yet."""
SYNCFS_AT = 64
"""Files and directories to flush from which a checkpoint flushes their filesystem instead."""


def _libc_syncfs() -> Callable[[int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):  # not Linux: each file is flushed on its own
        return None
    function.argtypes = (ctypes.c_int,)
    function.restype = ctypes.c_int
    return cast(Callable[[int], int], function)


_syncfs = _libc_syncfs()


def sync_filesystem(path: Path) -> bool:
    """Make everything written to the filesystem holding ``path`` durable (``syncfs``, which
    reports write-back errors since Linux 5.8); False where the system has no ``syncfs``."""
    if _syncfs is None:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(path))
    finally:
        os.close(fd)
    return True


DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and any missing parents with mode 0700, durably."""
    if path.is_dir():
        return
    make_private_dirs(path.parent)
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        return
    fsync_directory(path.parent)


def len_parts(path: Path) -> int:
    """How deep a path is (sort key: parents before children)."""
    return len(path.parts)


def share_number(name: str) -> int | None:
    """The share number a file name stands for, or None."""
    if name.isascii() and name.isdigit() and str(int(name)) == name and int(name) <= 255:
        return int(name)
    return None


@define(eq=False)
class LoggedFiles:
    """The redo log and the files it changes, with what the next checkpoint must flush."""

    log: RedoLog
    index_dir: Callable[[bytes], Path]
    """Where a storage index's files live."""
    checkpoint_due: Callable[[], None] | None = None
    """Asked (once) to have :meth:`checkpoint` run soon when the log has grown past
    :data:`CHECKPOINT_BYTES` (and the applying thread, if any, has caught up: it asks, in
    that thread), instead of running it in the caller's thread: the embedded
    grid's owner runs it in its storage thread, off the reactor. Past
    ``CHECKPOINT_LIMIT`` times that size it runs here all the same."""
    before_flush: Callable[[], None] | None = None
    """Called before the log is flushed for a change (:meth:`sync`): the disk backend
    completes the shares queued before it that the log does not hold."""
    _checkpoint_asked: bool = field(init=False, default=False)
    dirty_files: set[Path] = field(init=False, factory=set)
    """Files changed in place since the last checkpoint."""
    dirty_dirs: set[Path] = field(init=False, factory=set)
    """Directories whose entries changed since the last checkpoint."""
    new_dirs: set[Path] = field(init=False, factory=set)
    """Directories created since the last checkpoint (their own entry not yet flushed)."""
    deleted: set[bytes] = field(init=False, factory=set)
    """Storage indexes with a logged deletion since the last checkpoint."""
    _unapplied: deque[tuple[int, dict[str, Any]]] = field(init=False, factory=deque)
    """Records appended without a flush, with the log position that makes each durable."""
    lock: threading.RLock = field(init=False, factory=threading.RLock)
    """Held while the files or the sets above change (:meth:`apply_in_background`)."""
    applier: BackgroundApplier | None = field(init=False, default=None)

    def apply_in_background(self) -> None:
        """From now on durable records are applied by a thread of their own; a read of an
        index must :meth:`settle` it first."""
        if self.applier is None:
            self.applier = BackgroundApplier(self.apply, self.lock)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold :attr:`lock`, ahead of the applying thread's next record."""
        if self.applier is None:
            with self.lock:
                yield
        else:
            with self.applier.locked():
                yield

    def settle(self, storage_index: bytes) -> None:
        """Return once the index's files hold every durable change to them."""
        if self.applier is not None:
            self.applier.settle(storage_index)

    def settle_share(self, storage_index: bytes, share_number: int) -> None:
        """Before a share's file is read: apply the index's waiting records that change
        that file. Not those of its metadata (a lease, a share's first record): written
        while clients were busy, they would make the first read of each object of a
        file just uploaded create a file on the reader's thread."""
        records = self.pending(storage_index)
        if records is None or any(_changes_share(r, share_number) for r in records):
            self.settle(storage_index)  # (raises what left records unapplied)

    def logged_share(self, storage_index: bytes, share_number: int) -> bytes | None:
        """The share's bytes, when the newest waiting record that changes it writes it whole
        (its file is not touched); else None, once the files hold every change to it (as
        after :meth:`settle_share`)."""
        records = self.pending(storage_index)
        changes = [r for r in records or () if _changes_share(r, share_number)]
        if records is not None and changes and changes[-1]["op"] == "share":
            return bytes(changes[-1]["data"])
        if records is None or changes:
            self.settle(storage_index)  # (raises what left records unapplied)
        return None

    def pending(self, storage_index: bytes) -> list[dict[str, Any]] | None:
        """The index's durable records the files may not hold yet, in log order (see
        :meth:`storage.applier.BackgroundApplier.pending`); None: :meth:`settle` first."""
        if self.applier is None:
            return []
        return self.applier.pending(storage_index)

    def settle_all(self) -> None:
        """Return once the files hold every durable change."""
        if self.applier is not None:
            self.applier.drain()

    def close(self) -> None:
        """Apply what waits and end the applying thread, if there is one."""
        if self.applier is not None:
            applier, self.applier = self.applier, None
            applier.close()

    def change(self, record: dict[str, Any], sync: bool = True) -> None:
        """Log a change; apply it in place once durable (now with ``sync``, else at the
        next flush that covers it)."""
        if sync and self.before_flush is not None:
            self.before_flush()  # first: a change it refuses leaves no record behind
        self.log.append(record, sync=False)
        self._unapplied.append((self.log.appended, record))
        if sync:
            self._flush()
        if self.log.size >= CHECKPOINT_BYTES:
            if self.checkpoint_due is None or self.log.size >= CHECKPOINT_LIMIT * CHECKPOINT_BYTES:
                self.checkpoint(everything=False)
            else:
                self.ask_checkpoint()

    @property
    def checkpoint_wanted(self) -> bool:
        """Whether a checkpoint is due and not asked for yet (safe to read from another
        thread: two numbers; :meth:`ask_checkpoint` decides)."""
        return self.log.size >= CHECKPOINT_BYTES and not self._checkpoint_asked

    def ask_checkpoint(self) -> None:
        """Ask ``checkpoint_due`` (once) for the checkpoint due, unless it may wait: while
        the applying thread is held back (clients busy) and the log is under
        CHECKPOINT_WHILE_BUSY times the size. The owner asks again once they pause."""
        if not self.checkpoint_wanted or self.checkpoint_due is None:
            return
        applier = self.applier
        if applier is not None and self.log.size < CHECKPOINT_WHILE_BUSY * CHECKPOINT_BYTES:
            if applier.hold():
                return
        self._checkpoint_asked = True
        if applier is not None:
            # Once the files have caught up, in the applying thread, where it holds up
            # nobody: the checkpoint then has little left to wait for.
            applier.caught_up(self.checkpoint_due)
        else:
            self.checkpoint_due()

    def sync(self) -> None:
        """Flush the log here and now, then apply what it made durable."""
        if self.before_flush is not None:
            self.before_flush()
        self._flush()

    def _flush(self) -> None:
        self.log.sync()
        self.apply_durable()

    def apply_durable(self) -> None:
        """Apply, in order, the records that a flush of the log made durable (or hand them
        to the applying thread)."""
        durable = []
        while self._unapplied and self._unapplied[0][0] <= self.log.durable:
            durable.append(self._unapplied.popleft()[1])
        if self.applier is not None:
            self.applier.submit(durable)
        else:
            for record in durable:
                self.apply(record)

    def apply(self, record: dict[str, Any]) -> None:
        """Apply one logged change to the files (idempotent; nothing is flushed)."""
        with self.lock:
            self._apply(record)

    def _apply(self, record: dict[str, Any]) -> None:
        op, storage_index = record["op"], bytes(record["si"])
        directory = self.index_dir(storage_index)
        if op in ("share", "meta"):
            name = str(int(record["n"])) if op == "share" else METADATA
            self._write_in_place(directory, name, bytes(record["data"]))
        elif op == "delete-share":
            self._unlink(directory / str(int(record["n"])))
        elif op == "delete-index":
            self.deleted.add(storage_index)
            for name in os.listdir(directory) if directory.is_dir() else ():
                if name == METADATA or share_number(name) is not None:
                    self._unlink(directory / name)
            for path in (directory, directory.parent):
                try:
                    path.rmdir()
                except OSError:
                    break
                self.dirty_dirs.add(path.parent)
                self.dirty_dirs.discard(path)
                self.new_dirs.discard(path)
        else:
            raise StorageError(f"unknown change {op!r} in {self.log.path}")

    def _write_in_place(self, directory: Path, name: str, data: bytes) -> None:
        self.make_dirs(directory)
        path = directory / name
        if directory in self.new_dirs:
            # In a directory made since the checkpoint, a file is new or was created since:
            # one call creates or opens it (the directory is flushed for its entries at
            # the checkpoint, as when a file is created elsewhere).
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
            self.dirty_dirs.add(directory)
        else:
            try:
                fd = os.open(path, os.O_WRONLY)
            except FileNotFoundError:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
                self.dirty_dirs.add(directory)
        try:
            pwrite_all(fd, data, 0)
            if os.fstat(fd).st_size > len(data):
                # Only a shorter file is cut: a truncate to the same length is no cheaper
                # than a write on ext4 (it stamps the inode), and most files here are new
                # or rewritten at the same length.
                os.ftruncate(fd, len(data))
        finally:
            os.close(fd)
        self.dirty_files.add(path)

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        self.dirty_files.discard(path)
        self.dirty_dirs.add(path.parent)

    def make_dirs(self, directory: Path) -> None:
        """Create ``directory`` and missing parents (0700); flushed at the next checkpoint.

        The directory is made first and its parent only if that fails for want of it: a
        new index directory under an existing prefix costs one call, an existing one one
        failed call (no more than the check it replaces)."""
        if directory in self.new_dirs:
            return
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            return
        except FileNotFoundError:
            self.make_dirs(directory.parent)
            try:
                os.mkdir(directory, DIR_MODE)
            except FileExistsError:
                return
        self.new_dirs.add(directory)
        self.dirty_dirs.add(directory.parent)

    def checkpoint(self, everything: bool = True) -> None:
        """Flush every file and directory changed since the last checkpoint; empty the log.

        Many of them (hundreds, after a burst of small objects) are flushed by one
        ``syncfs`` of their filesystem where the system has it: one journal commit instead
        of one flush per file (0.4 s for 2,100 paths against 17 ms, measured on ext4).

        Without ``everything`` (a checkpoint falling due while clients work) it does not
        wait for the applying thread: the records it has not applied yet stay, alone, in
        a log rewritten atomically. Where creating files is slow and clients keep it
        busy, that thread can be seconds behind (1.6 s measured in an fsync loop), and
        the checkpoint held up every request to the storage meanwhile."""
        self._checkpoint_asked = False
        if self._unapplied:
            self.sync()
        if self.applier is not None and (everything or self.applier.far_behind):
            self.applier.drain()
        with self.locked():
            waiting = [] if self.applier is None else self.applier.waiting_records()
            many = len(self.dirty_files) + len(self.dirty_dirs) >= SYNCFS_AT
            if not (many and sync_filesystem(self.log.path.parent)):
                self._flush_each()
            if waiting:
                self.log.rewrite(waiting)  # the files may not hold these yet
            elif not self.log.empty:
                self.log.reset()
            self.dirty_files.clear()
            self.dirty_dirs.clear()
            self.new_dirs.clear()
            self.deleted.clear()

    def _flush_each(self) -> None:
        for path in self.dirty_files:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for path in sorted(self.dirty_dirs, key=len_parts, reverse=True):
            try:
                fsync_directory(path)
            except FileNotFoundError:
                continue


def _changes_share(record: dict[str, Any], share_number: int) -> bool:
    """Whether a logged change touches that share's file."""
    op = record["op"]
    if op == "delete-index":
        return True
    return op in ("share", "delete-share") and int(record["n"]) == share_number
