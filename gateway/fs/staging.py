"""The staging area: local files that hold what clients write until it is in the grid.

Every file opened for writing gets a staged file here (mode 0600 in a 0700
directory), written at any offset with ``pwrite`` — never held whole in
memory. The area enforces a quota on the bytes it holds: a write that would
cross it fails with :class:`~gateway.fs.errors.NoSpace`, as does a full disk,
and neither damages anything already staged.

Flush-behind. A CLOSE is acknowledged only once the staged bytes are fsynced, and
Linux lets a whole gigabyte stay dirty in the page cache until that fsync, which
then takes about 0.4 s. So a staged file created with a thread runner starts the
flush-behind of every :data:`FLUSH_BEHIND_BYTES` written, in a thread
(``sync_file_range(SYNC_FILE_RANGE_WRITE)``: queue the writes, no wait, no cache
flush; ``fdatasync`` where that call is missing), and :meth:`StagedFile.presync`
fsyncs a file of :data:`PRESYNC_BYTES` or more in a thread before the CLOSE's own
fsync, which then has next to nothing left to write. The reactor never waits for
the disk for these. The final :meth:`StagedFile.fsync` stays what makes bytes
durable; an error a background call reports is kept and raised by it (a failed
flush-behind may not be reported again by a later fsync of the same descriptor). A
discard while a thread uses the descriptor closes it only once that call has
returned.

In memory first. Creating a file here and removing it after its upload cost the
kernel about 0.2 ms on ext4 (an inode, a directory entry, their journal), more than
the rest of a small file's CLOSE, and a thread making spare files ahead
(:mod:`gateway.fs.stagedir`) competed with the client on a small machine. So a new
staged file starts in a memfd and moves to a file here (:meth:`StagedFile.move_to_disk`)
once it holds more than its ``memory_limit`` (:data:`MEMORY_FILE_BYTES` for a file being
written: what a journal record holds inline), or when all files in memory together
would pass the area's ``memory_bytes``. A file in memory is closed durably by its
journal record, which holds its bytes and names the path it would have (reserved, not
created): a restart rebuilds it there. Anything that must fsync it moves it first.
"""

from __future__ import annotations

import errno
import os
import weakref
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Protocol

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.fs.descriptors import OpenFiles, restore_ranges, save_ranges
from gateway.fs.errors import FileTooLarge, NoSpace
from gateway.fs.flushing import start_flush
from gateway.fs.rangecopy import copy_ranges
from gateway.fs.sparse import Ranges
from gateway.fs.stagedcalls import BackgroundCalls
from gateway.fs.stagedir import StagingDirectory
from gateway.threads import Threads
from gateway.uploads.journal import INLINE_BYTES
from storage.redolog import fsync_directory

#: Bytes written to a staged file after which their flush-behind to the disk is started.
FLUSH_BEHIND_BYTES = 8 << 20

#: Smallest staged file :meth:`StagedFile.presync` fsyncs in a thread: below it the CLOSE's
#: own fsync is short (and a small file may not be fsynced at all: the journal can hold it).
PRESYNC_BYTES = 1 << 20

#: The largest file that can be staged (its size, holes included: a sparse file costs its
#: whole size when it is uploaded, so one small WRITE far out must not cost without bound).
MAX_FILE_SIZE = 1 << 40

#: Empty staged files kept made ahead (in a thread); more are made when half are used.
SPARE_FILES = 16

#: Most bytes a file being written holds in memory before it moves to the disk: what its
#: journal record can hold, so that a file closed in memory is durable by the record alone.
MEMORY_FILE_BYTES = INLINE_BYTES

#: Most bytes all staged files in memory hold together (memfd pages, outside the RSS).
MEMORY_BYTES = 32 << 20

_memfd_create: Callable[[str, int], int] | None = getattr(os, "memfd_create", None)

log = Logger()


TOO_LARGE_FOR_DISK = "the file would be larger than the gateway's disk allows"


class Follower(Protocol):
    """A reader with a descriptor of its own on a staged file in memory, told where the
    file's bytes are once it moves to the disk (:class:`gateway.fs.handles.StagedReader`)."""

    def follow(self, fd: int) -> None:
        """Read ``fd`` from now on."""


@define(eq=False)
class StagedFile:
    """One staged file: a sparse local file and its logical size.

    ``written`` holds the ranges written (what the quota counts: a file grown by a
    truncate, or staged over a grid version it has not copied, is a hole that costs
    nothing). With ``threads``, its flush-behind runs in the background as the module
    docstring says; without, the final :meth:`fsync` writes everything.
    """

    area: StagingArea
    path: Path
    _fd: int
    size: int = 0
    threads: Threads | None = None
    written: Ranges = field(factory=Ranges)
    #: In memory (a memfd), not in the directory: ``path`` names nothing (yet).
    in_memory: bool = False
    #: Most bytes it may hold while in memory (it moves to the disk past them).
    memory_limit: int = 0
    #: Readers of it in memory, moved with it to the disk (made for the first: a staged
    #: file waiting for the grid costs its memory, and few have any).
    _followers: weakref.WeakSet[Follower] | None = field(default=None, init=False)
    _closed: bool = field(default=False, init=False)
    #: Bytes written since the last flush-behind was started, and the range they lie in.
    _unsynced: int = field(default=0, init=False)
    _low: int = field(default=0, init=False)
    _high: int = field(default=0, init=False)
    #: Whether a background call is queued or running (at most one per file); who waits for it.
    _busy: bool = field(default=False, init=False)
    _waiters: list[Deferred[None]] = field(factory=list, init=False)
    _syncing: bool = field(default=False, init=False)
    #: The first error a background call reported; :meth:`fsync` raises it.
    _error: OSError | None = field(default=None, init=False)
    #: A file in memory whose descriptor was given back: its bytes (:meth:`park`).
    _saved: list[tuple[int, bytes]] | None = field(default=None, init=False, repr=False)

    def follow(self, reader: Follower) -> None:
        """Tell ``reader`` (reading it in memory) where its bytes go when it moves."""
        self._followers = self._followers or weakref.WeakSet()
        self._followers.add(reader)

    def __attrs_post_init__(self) -> None:
        self.area.open_files.opened(self)

    @property
    def fd(self) -> int:
        """Its descriptor, opened again if it was given back (-1 once discarded)."""
        if self._fd < 0 and not self._closed:
            if self.in_memory:
                self._fd = restore_ranges(self._saved or [], self.size)
                self._saved = None
            else:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            self.area.open_files.opened(self)
        return self._fd

    def park(self) -> bool:
        """Give its descriptor back unless a thread or a reader in memory uses it
        (:mod:`gateway.fs.descriptors`); whether it did."""
        if self._fd < 0 or self._closed or self._busy or (self.in_memory and self._followers):
            return False
        if self.in_memory:
            self._saved = save_ranges(self._fd, self.written)
        self._close_fd()
        return True

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self.area.open_files.closed(self)

    @property
    def discarded(self) -> bool:
        """Whether it was discarded (its descriptor closed, or about to be)."""
        return self._closed

    def read(self, offset: int, length: int) -> bytes:
        """Read what has been written (holes read as zeros), clamped at the size."""
        if offset >= self.size:
            return b""
        return os.pread(self.fd, min(length, self.size - offset), offset)

    def write(self, offset: int, data: bytes) -> None:
        """Write at ``offset``, growing the file (and the area's usage) as needed; writing no
        bytes changes nothing, even past the end (as a ``pwrite`` of none does). A write
        ending past the area's ``max_file_size`` raises :class:`FileTooLarge`."""
        if not data:
            return
        start = offset
        end = offset + len(data)
        self.area.check_size(end)
        if not self.written.within(start, end):
            grow = end - start - self.written.covered_in(start, end)
            if self.in_memory and not self.area.memory_fits(self, grow):
                self.move_to_disk()
            self.area.reserve(grow)
            try:
                self._pwrite(offset, data)
            except BaseException:
                self.area.release(grow)
                raise
            self.written.add(start, end)
            if self.in_memory:
                self.area.memory_used += grow
        else:
            self._pwrite(offset, data)  # over bytes written before: the quota is unchanged
        self.size = max(self.size, end)
        if self.threads is not None and not self.in_memory:
            self._written(start, end)

    def _pwrite(self, offset: int, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:
                written = os.pwrite(self.fd, view, offset)
                view = view[written:]
                offset += written
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace("the gateway's disk is full") from None
            if e.errno == errno.EFBIG:
                raise FileTooLarge(TOO_LARGE_FOR_DISK) from None
            raise

    def hold(self, ranges: Ranges, size: int) -> None:
        """Count ``ranges`` as written and make the file ``size`` bytes long, for bytes put
        there by another means (:func:`gateway.fs.rangecopy.copy_ranges`); raises
        :class:`NoSpace` over the quota. The file must be empty."""
        assert not self.written and self.size == 0
        self.truncate(size)
        self.fill(ranges)

    def fill(self, ranges: Ranges) -> None:
        """Count ``ranges`` (within the size, none of them written) as written, for bytes
        about to be put there by another means; raises :class:`NoSpace` over the quota."""
        if self.in_memory and not self.area.memory_fits(self, ranges.covered):
            self.move_to_disk()
        self.area.reserve(ranges.covered)
        for start, end in ranges:
            self.written.add(start, end)
        if self.in_memory:
            self.area.memory_used += ranges.covered

    def truncate(self, size: int) -> None:
        """Set the logical size (shrinking frees quota; growing makes a hole, read as zeros);
        past the area's ``max_file_size``, or what the disk allows, raises :class:`FileTooLarge`."""
        self.area.check_size(size)
        try:
            os.ftruncate(self.fd, size)
        except OSError as e:
            if e.errno in (errno.EFBIG, errno.EINVAL):
                raise FileTooLarge(TOO_LARGE_FOR_DISK) from None
            raise
        cut = self.written.cut(size)
        self.area.release(cut)
        if self.in_memory:
            self.area.memory_used -= cut
        self.size = size

    def move_to_disk(self) -> None:
        """Move it from memory to a file in the staging directory (its path from now on); a
        full disk raises :class:`NoSpace` and leaves it in memory, unchanged."""
        if not self.in_memory:
            return
        try:
            path, fd = self.area.files.take(self.threads)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace("the gateway's disk is full") from None
            raise
        try:
            copy_ranges(self.fd, fd, list(self.written), kernel=False)
            os.ftruncate(fd, self.size)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._close_fd()
        self._fd, self.path, self.in_memory = fd, path, False
        self.area.open_files.opened(self)
        self.area.memory_used -= self.written.covered
        for follower in list(self._followers or ()):
            follower.follow(fd)
        self._followers = None

    async def presync(self) -> None:
        """Fsync in a thread (after any flush-behind under way), so :meth:`fsync` has little left.

        The reactor serves others meanwhile. Never raises: an error is kept for
        :meth:`fsync`. Without threads, for a file under :data:`PRESYNC_BYTES`, or once
        discarded, returns at once.
        """
        if self.threads is None or self._closed or self.size < PRESYNC_BYTES or self.in_memory:
            return
        self._syncing = True  # no new flush-behind: the fsync covers everything
        try:
            while self._busy:
                await self._job_finished()
            if self._closed:
                return
            self._unsynced = 0
            finished = self._job_finished()
            self._start(os.fsync)
            await finished
        finally:
            self._syncing = False

    def fsync(self) -> None:
        """Make the staged bytes durable on the local disk (or raise why they are not); a
        file in memory moves to the disk first."""
        self.move_to_disk()
        if self._error is not None:
            error = self._error
            raise OSError(error.errno, f"writing the staged file failed: {error.strerror}")
        os.fsync(self.fd)

    def discard(self) -> None:
        """Delete the staged file and give its bytes back to the quota."""
        if self._closed:
            return
        self._closed = True
        self._saved = None
        if self.in_memory:
            self.area.memory_used -= self.written.covered
        else:
            self.path.unlink(missing_ok=True)
        self.area.release(self.written.covered)
        if not self._busy:
            self._close_fd()
        # Otherwise a thread may be using the descriptor: _finished closes it. (Cancelling the
        # job's Deferred would not stop the thread, so nothing is cancelled; a call that has
        # not started yet sees the file discarded and does nothing.)

    def close_kept(self) -> None:
        """Close it but leave it on disk, its bytes still counted: a kept copy
        (:mod:`gateway.fs.kept`), which deletes it and gives them back later."""
        assert not self.in_memory, "a file in memory is kept as bytes"
        if not self._closed:
            self._closed = True
            if not self._busy:
                self._close_fd()

    @property
    def background_busy(self) -> bool:
        """Whether a flush-behind or sync call of this file is queued or running."""
        return self._busy

    # -- background flush-behind ---------------------------------------------------------

    def _written(self, start: int, end: int) -> None:
        """Note bytes written; start their flush-behind once there are enough of them."""
        if self._unsynced:
            self._low, self._high = min(self._low, start), max(self._high, end)
        else:
            self._low, self._high = start, end
        self._unsynced += end - start
        if self._unsynced >= FLUSH_BEHIND_BYTES and not self._busy and not self._syncing:
            self._flush_behind()

    def _flush_behind(self) -> None:
        low, high = self._low, self._high
        self._unsynced = 0
        self._start(lambda fd: start_flush(fd, low, high - low))

    def _start(self, work: Callable[[int], None]) -> None:
        """Run ``work(fd)`` in a thread, as one of the area's background calls."""
        assert self.threads is not None and not self._busy
        self._busy = True
        self.area.background(self.threads, partial(self._in_thread, self.fd, work), self._finished)

    def _in_thread(self, fd: int, work: Callable[[int], None]) -> OSError | None:
        """In a thread: the call, unless the file was discarded before it started."""
        if self._closed:
            return None
        try:
            work(fd)
        except OSError as e:
            return e
        return None

    def _finished(self, result: OSError | Failure | None) -> None:
        """In the reactor, when a background call has returned (or could not be run)."""
        self._busy = False
        if isinstance(result, Failure):
            # Not run (the thread pool is stopping, say): the final fsync writes it all.
            log.failure("a staged file's flush-behind could not run", result)
        elif result is not None and self._error is None:
            self._error = result
        if self._closed:
            self._close_fd()
        elif self._unsynced >= FLUSH_BEHIND_BYTES and not self._syncing:
            self._flush_behind()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _job_finished(self) -> Deferred[None]:
        """Fires when the background call under way has returned."""
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        return waiter


class StagingArea(BackgroundCalls):
    """A directory of staged files with a byte quota (and files in memory, see above)."""

    def __init__(
        self,
        directory: Path,
        quota: int,
        spare_files: int = SPARE_FILES,
        max_file_size: int = MAX_FILE_SIZE,
        memory_bytes: int = MEMORY_BYTES,
        open_files: int | None = None,
    ):
        """``spare_files``: how many empty staged files to keep made ahead (0: none);
        ``memory_bytes``: how many bytes staged files may hold in memory together (0: none);
        ``open_files``: how many may keep a descriptor open (:mod:`gateway.fs.descriptors`)."""
        self.directory = directory
        self.quota = quota
        self.max_file_size = max_file_size
        self.used = 0
        self.memory_bytes = memory_bytes
        #: Bytes the staged files in memory hold (their ``written`` ranges).
        self.memory_used = 0
        #: Frees at least the given bytes if it can (drops kept copies), when full.
        self.make_room: Callable[[int], None] | None = None
        #: The staged files with a descriptor open.
        self.open_files = OpenFiles(open_files)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        super().__init__()
        self.files = StagingDirectory(directory, spare_files, self._started, self._ended)

    def check_size(self, size: int) -> None:
        """Raise :class:`FileTooLarge` for a file size over ``max_file_size``."""
        if size > self.max_file_size:
            raise FileTooLarge(f"a file can be at most {self.max_file_size} bytes")

    def reserve(self, amount: int) -> None:
        """Account for ``amount`` more bytes, or raise NoSpace past the quota."""
        if amount and self.used + amount > self.quota and self.make_room is not None:
            self.make_room(self.used + amount - self.quota)  # kept copies go first
        if amount and self.used + amount > self.quota:
            raise NoSpace(f"staging quota of {self.quota} bytes is full; uploads are still pending")
        self.used += amount

    def release(self, amount: int) -> None:
        """Give back bytes."""
        self.used = max(0, self.used - amount)

    def create(self, threads: Threads | None = None, memory_limit: int = 0) -> StagedFile:
        """A new, empty staged file; with ``threads``, written back in the background. With
        a ``memory_limit``, it starts in memory and moves to the disk once it holds more
        than that many bytes (or the area's files in memory, more than ``memory_bytes``)."""
        if memory_limit and _memfd_create is not None and self.memory_used < self.memory_bytes:
            try:
                fd = _memfd_create("gateway-staged", os.MFD_CLOEXEC)
            except OSError:  # out of memory or descriptors: on the disk, then
                pass
            else:
                path = self.files.reserve_name()
                return StagedFile(
                    self, path, fd, threads=threads, in_memory=True, memory_limit=memory_limit
                )
        path, fd = self.files.take(threads)
        return StagedFile(self, path, fd, threads=threads)

    def memory_fits(self, staged: StagedFile, amount: int) -> bool:
        """Whether ``staged`` (in memory) may hold ``amount`` more bytes there."""
        return (
            staged.written.covered + amount <= staged.memory_limit
            and self.memory_used + amount <= self.memory_bytes
        )

    def drop_spares(self) -> None:
        """Remove the spare files (and those being made now, once they are)."""
        self.files.drop_spares()

    @property
    def spares(self) -> int:
        """Empty staged files made ahead and not handed out yet."""
        return self.files.spares

    def reopen(self, path: Path, written: Ranges | None = None) -> StagedFile:
        """A staged file left by a previous run (its upload is journaled), whose
        ``written`` ranges hold its bytes (by default, all of them)."""
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        size = os.fstat(fd).st_size
        if written is None:
            written = Ranges([(0, size)])
        self.used += written.covered
        return StagedFile(self, path, fd, size, written=written)

    def sync_directory(self) -> None:
        """Make new staged files' names durable."""
        fsync_directory(self.directory)

    def leftovers(self, keep: set[str]) -> list[Path]:
        """Staged files no journal record refers to (abandoned by a crash before CLOSE)."""
        return [p for p in self.directory.glob("*.staged") if str(p) not in keep]
