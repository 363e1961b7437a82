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

Spare files. Creating a file costs the filesystem a journaled inode and
directory entry (0.1 to 1 ms on ext4 under fsync load), and a client copying a
tree opens a new file for each of its files. So :meth:`StagingArea.create`
with a thread runner hands out one of up to :data:`SPARE_FILES` empty staged
files created beforehand in a thread, and creates more in a thread when they
run low. A spare is an ordinary empty staged file no journal record names: the
cleanup of leftovers at start removes any left by a stop or crash, and
:meth:`StagingArea.drop_spares` (called when no upload is pending and no file is
open for writing) removes them while the node runs, so an idle staging directory
is empty.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import cast

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredSemaphore, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.fs.errors import FileTooLarge, NoSpace
from gateway.fs.sparse import Ranges
from gateway.threads import Threads
from storage.redolog import fsync_directory

#: Bytes written to a staged file after which their flush-behind to the disk is started.
FLUSH_BEHIND_BYTES = 8 << 20

#: Smallest staged file :meth:`StagedFile.presync` fsyncs in a thread: below it the CLOSE's
#: own fsync is short (and a small file may not be fsynced at all: the journal can hold it).
PRESYNC_BYTES = 1 << 20

#: Flush-behind and sync calls of the whole staging area that may run in threads at once.
FLUSH_THREADS = 2

#: The largest file that can be staged (its size, holes included: a sparse file costs its
#: whole size when it is uploaded, so one small WRITE far out must not cost without bound).
MAX_FILE_SIZE = 1 << 40

#: Empty staged files kept made ahead (in a thread); more are made when half are used.
SPARE_FILES = 16

#: ``SYNC_FILE_RANGE_WRITE`` from ``<fcntl.h>``.
SYNC_FILE_RANGE_WRITE = 2

log = Logger()


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range``, where there is one (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], function)


_sync_file_range = _load_sync_file_range()
_fdatasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


def start_flush(fd: int, offset: int, length: int) -> None:
    """Start writing a range of a file's dirty pages to the disk (blocking: call in a thread).

    ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` queues the writes and returns; where it is
    missing or fails, ``fdatasync`` writes them and waits, and its error (which a later fsync
    of the descriptor may not report again) is the one raised. Neither makes anything
    durable: that is what the final fsync is for.
    """
    global _sync_file_range
    function = _sync_file_range
    if function is not None:
        if function(fd, offset, length, SYNC_FILE_RANGE_WRITE) == 0:
            return
        if ctypes.get_errno() in (errno.ENOSYS, errno.EINVAL, errno.ESPIPE, errno.EOPNOTSUPP):
            _sync_file_range = None  # not supported here: the fallback from now on
    _fdatasync(fd)


TOO_LARGE_FOR_DISK = "the file would be larger than the gateway's disk allows"


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
    fd: int
    size: int = 0
    threads: Threads | None = None
    written: Ranges = field(factory=Ranges)
    #: In memory (a memfd: :meth:`Contents.copy`), not in the directory: ``path`` names nothing.
    in_memory: bool = False
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
            grow = self.written.covered_in(start, end)
            self.area.reserve(end - start - grow)
            try:
                self._pwrite(offset, data)
            except BaseException:
                self.area.release(end - start - grow)
                raise
            self.written.add(start, end)
        else:
            self._pwrite(offset, data)  # over bytes written before: the quota is unchanged
        self.size = max(self.size, end)
        if self.threads is not None and end > start:
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
        self.area.reserve(ranges.covered)
        self.written = ranges.copy()

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
        self.area.release(self.written.cut(size))
        self.size = size

    async def presync(self) -> None:
        """Fsync in a thread (after any flush-behind under way), so :meth:`fsync` has little left.

        The reactor serves others meanwhile. Never raises: an error is kept for
        :meth:`fsync`. Without threads, for a file under :data:`PRESYNC_BYTES`, or once
        discarded, returns at once.
        """
        if self.threads is None or self._closed or self.size < PRESYNC_BYTES:
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
        """Make the staged bytes durable on the local disk (or raise why they are not)."""
        if self._error is not None:
            error = self._error
            raise OSError(error.errno, f"writing the staged file failed: {error.strerror}")
        os.fsync(self.fd)

    def discard(self) -> None:
        """Delete the staged file and give its bytes back to the quota."""
        if self._closed:
            return
        self._closed = True
        if not self.in_memory:
            self.path.unlink(missing_ok=True)
        self.area.release(self.written.covered)
        if not self._busy:
            os.close(self.fd)
        # Otherwise a thread may be using the descriptor: _finished closes it. (Cancelling the
        # job's Deferred would not stop the thread, so nothing is cancelled; a call that has
        # not started yet sees the file discarded and does nothing.)

    def close_kept(self) -> None:
        """Close it but leave it on disk, its bytes still counted: a kept copy
        (:mod:`gateway.fs.kept`), which deletes it and gives them back later."""
        if not self._closed:
            self._closed = True
            if not self._busy:
                os.close(self.fd)

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
            os.close(self.fd)
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


class StagingArea:
    """A directory of staged files with a byte quota."""

    def __init__(
        self,
        directory: Path,
        quota: int,
        spare_files: int = SPARE_FILES,
        max_file_size: int = MAX_FILE_SIZE,
    ):
        """``spare_files``: how many empty staged files to keep made ahead (0: none)."""
        self.directory = directory
        self.quota = quota
        self.max_file_size = max_file_size
        self.spare_files = spare_files
        self.used = 0
        #: Frees at least the given bytes if it can (drops kept copies), when full.
        self.make_room: Callable[[int], None] | None = None
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        self._slots = DeferredSemaphore(FLUSH_THREADS)
        self._background = 0
        self._idle_waiters: list[Deferred[None]] = []
        self._spares: list[tuple[Path, int]] = []
        self._making_spares = False
        self._drop_made = False  # spares being made when they were dropped: drop them too

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

    def create(self, threads: Threads | None = None) -> StagedFile:
        """A new, empty staged file; with ``threads``, written back in the background, and
        taken from the spares (which are made again in a thread when they run low)."""
        if threads is None:
            path, fd = _new_staged_file(self.directory)
            return StagedFile(self, path, fd)
        self._drop_made = False
        wanted = self.spare_files
        if wanted and len(self._spares) <= wanted // 2 and not self._making_spares:
            self._making_spares = True
            self._background += 1  # idle() waits for it too
            # As many as are missing: making ``wanted`` more, then removing what passed the
            # count on the reactor thread, cost a file created and one removed per file.
            missing = wanted - len(self._spares)
            made = threads(partial(_new_staged_files, self.directory, missing))
            made.addBoth(self._spares_made)
        if self._spares:
            path, fd = self._spares.pop()
        else:
            path, fd = _new_staged_file(self.directory)
        return StagedFile(self, path, fd, threads=threads)

    def _spares_made(self, result: list[tuple[Path, int]] | Failure) -> None:
        self._making_spares = False
        if isinstance(result, Failure):  # a full disk, say: create() makes its own and says so
            log.info("spare staged files could not be made: {why}", why=result.getErrorMessage())
        else:
            self._spares.extend(result)
            if self._drop_made:
                self.drop_spares()
            while len(self._spares) > self.spare_files:
                _remove_spare(*self._spares.pop(0))
        self._ended(None)

    def drop_spares(self) -> None:
        """Remove the spare files (and those being made now, once they are)."""
        self._drop_made = self._making_spares
        spares, self._spares = self._spares, []
        for path, fd in spares:
            _remove_spare(path, fd)

    @property
    def spares(self) -> int:
        """Empty staged files made ahead and not handed out yet."""
        return len(self._spares)

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

    def background(
        self,
        threads: Threads,
        call: Callable[[], OSError | None],
        done: Callable[[OSError | Failure | None], None],
    ) -> None:
        """Run a staged file's blocking call in a thread, a few at a time; then ``done``."""
        self._background += 1
        result = self._slots.run(threads, call)
        result.addBoth(done)
        result.addBoth(self._ended)

    def _ended(self, result: object) -> None:
        if isinstance(result, Failure):
            log.failure("a staged file's background call failed", result)
        self._background -= 1
        if not self._background:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    @property
    def background_calls(self) -> int:
        """Flush-behind and sync calls queued or running in threads."""
        return self._background

    def idle(self) -> Deferred[None]:
        """Fires once no background call is queued or running (at once if none is).

        A node that stops may await it; so do tests. Every descriptor a discarded
        file's call was using is closed by then.
        """
        if not self._background:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle_waiters.append(waiter)
        return waiter


def _new_staged_file(directory: Path) -> tuple[Path, int]:
    """Create an empty staged file (0600): its path and a read-write descriptor."""
    path = directory / f"{secrets.token_hex(12)}.staged"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    return path, fd


def _remove_spare(path: Path, fd: int) -> None:
    os.close(fd)
    path.unlink(missing_ok=True)


def _new_staged_files(directory: Path, count: int) -> list[tuple[Path, int]]:
    """In a thread: create ``count`` empty staged files (fewer if the disk refuses more)."""
    made: list[tuple[Path, int]] = []
    for _ in range(count):
        try:
            made.append(_new_staged_file(directory))
        except OSError:
            if not made:
                raise
            break
    return made
