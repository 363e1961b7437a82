"""Group commit of immutable share completions: the shares completed while a sync runs share
the next one, and the syncs run in threads, off the reactor.

Completing a share durably needs flushes that cost a journal commit each when they
come one at a time: the redo log (the share's lease), the share's bytes, and the
directory entries of its new path. :class:`GroupCommit` queues completions and
runs one *group* at a time; whatever is completed meanwhile forms the next group.
A group goes through three steps::

    thread    fdatasync the redo log (leases and small shares' records, as of now);
              start writeback of every large share (sync_file_range, a hint), then
              fdatasync each: the journal commits their allocations once, not per file
    reactor   apply small shares' logged records in place; create the index
              directories and rename each large share into place (no flush)
    thread    fsync each new directory's parent and each share's directory, once
              per directory: the first commits every entry of the group
    reactor   the shares become visible; their completions fire

A group of small shares only names no directory to flush: its completions fire once the
log is flushed, without the second trip to a thread.

The contract of :mod:`storage.disk` is kept: a share is renamed into place only
once its bytes are durable (a crash leaves it complete or in ``incoming``, which
is emptied at opening), a small share's bytes are applied only once its record is
durable (replay repairs a torn write), and a completion fires only once its
directory entries are durable too. Between its rename and that moment the share
is hidden (:meth:`GroupCommit.hides`): nobody sees a share that a crash could
still take away.

Without a thread runner (a test's ``Clock``) each completion runs all of this at
once, synchronously, before ``finish_incoming`` returns. A *batched* commit (a
backend that a thread of its own runs, request after request) only
queues completions: its owner calls :meth:`GroupCommit.drain` after each batch
of requests, and the whole batch shares one group, synchronously, in that
thread.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Protocol, TypeVar

from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from storage.redolog import RedoLog, fsync_directory

T = TypeVar("T")


class Threads(Protocol):
    """Runs a blocking call in a thread; the Deferred fires (in the reactor) with its result.

    The same shape as the gateway's ``gateway.threads.Threads``, which the nodes pass in.
    """

    def __call__(self, call: Callable[[], T], /) -> Deferred[T]:
        """Start ``call`` in a thread."""


class Publisher(Protocol):
    """What the backend does on the reactor thread between a group's two syncs."""

    def publish(self, share: CompletingShare) -> list[Path]:
        """Put a share whose bytes (or record) are durable in place, with the log's records
        that are durable now; answer the directories whose fsync makes its path durable,
        parents first."""

    def unpublish(self, share: CompletingShare) -> None:
        """Undo a failed completion as far as possible (the upload is lost)."""


@define(eq=False)
class CompletingShare:
    """One share being completed: where its bytes are, where they go, who waits."""

    storage_index: bytes
    share_number: int
    size: int
    source: Path
    target: Path
    logged: bool = False
    """A small share, completed through the redo log (else renamed into place)."""
    done: Deferred[None] = field(factory=Deferred)

    @property
    def key(self) -> tuple[bytes, int]:
        """Storage index and share number."""
        return self.storage_index, self.share_number


def _libc_sync_file_range() -> Callable[[int], None]:
    """``sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)``: start writeback, wait for
    nothing (a hint: the fdatasync after it is what makes the bytes durable)."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux: the fdatasyncs alone still do the job
        return lambda fd: None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)

    def start_writeback(fd: int) -> None:
        function(fd, 0, 0, 2)  # errors show in the fdatasync that follows

    return start_writeback


_start_writeback = _libc_sync_file_range()


class LogFlushFailed(OSError):
    """The redo log's flush failed (not a share file's): the log refuses to flush from
    then on (:attr:`storage.redolog.RedoLog.failed`)."""


def sync_shares(log_fd: int | None, files: Iterable[tuple[Path, int]]) -> None:
    """In a thread: flush the log's duplicate descriptor (and close it; None: the log is
    durable that far already), then cut each incoming file to its size and make its bytes
    durable."""
    if log_fd is not None:
        try:
            os.fdatasync(log_fd)
        except OSError as e:
            raise LogFlushFailed(e.errno, e.strerror) from e
        finally:
            os.close(log_fd)
    fds: list[int] = []
    try:
        for path, size in files:
            fd = os.open(path, os.O_RDWR)
            fds.append(fd)
            os.ftruncate(fd, size)
            _start_writeback(fd)
        for fd in fds:
            os.fdatasync(fd)
    finally:
        for fd in fds:
            os.close(fd)


def sync_directories(directories: Iterable[Path]) -> None:
    """In a thread: fsync each directory once, in the order given."""
    for path in dict.fromkeys(directories):
        fsync_directory(path)


@define(eq=False)
class GroupCommit:
    """The queue of share completions of one backend and the group being synced."""

    log: RedoLog
    publisher: Publisher
    threads: Threads | None = None
    batched: bool = False
    """Completions wait for :meth:`drain` (synchronous: no ``threads``)."""
    _queue: list[CompletingShare] = field(factory=list, init=False)
    _group: list[CompletingShare] = field(factory=list, init=False)
    _hidden: set[tuple[bytes, int]] = field(factory=set, init=False)
    _idle: list[Deferred[None]] = field(factory=list, init=False)
    groups: int = field(default=0, init=False)
    """How many groups were synced (a figure for tests and benchmarks)."""
    failures: int = field(default=0, init=False)
    """How many groups failed."""

    def add(self, share: CompletingShare) -> Deferred[None]:
        """Queue a completion; the Deferred fires once the share is durable and visible."""
        self._hidden.add(share.key)
        self._queue.append(share)
        if not self._group and not self.batched:
            self._next()
        return share.done

    def hides(self, storage_index: bytes, share_number: int) -> bool:
        """Whether that share is being completed (not to be listed or read yet)."""
        return (storage_index, share_number) in self._hidden

    def pending(self) -> list[CompletingShare]:
        """The completions queued or under way."""
        return [*self._group, *self._queue]

    def idle(self) -> Deferred[None]:
        """Fires once no completion is queued or under way (before closing the backend)."""
        if not self._group and not self._queue:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle.append(waiter)
        return waiter

    def drain(self) -> None:
        """Complete every queued share here and now (at closing, or after a batch; a group
        under way in a thread finishes by itself)."""
        if self._group:
            return
        saved, self.threads = self.threads, None
        try:
            self._next()
        finally:
            self.threads = saved

    # -- one group ---------------------------------------------------------------

    def _run(self, call: Callable[[], None]) -> Deferred[None]:
        if self.threads is None:
            try:
                call()
            except Exception:
                return fail()
            return succeed(None)
        return self.threads(call)

    def _next(self) -> None:
        if not self._queue and not self._group:
            waiters, self._idle = self._idle, []
            for waiter in waiters:
                waiter.callback(None)
        while self._queue and not self._group:
            self._group, self._queue = self._queue, []
            self.groups += 1
            try:
                fd, point = self.log.sync_point()
            except OSError:  # an earlier flush failed: nothing is known durable
                self._failed(Failure())
                continue
            log_fd: int | None = fd
            if self.log.durable >= point:
                # A flush since the group's records were written (a slot's write, which
                # flushes by itself, right after an fsync's objects) covered them.
                os.close(fd)
                log_fd = None
            files = [(s.source, s.size) for s in self._group if not s.logged]
            self._run(partial(sync_shares, log_fd, files)).addCallbacks(
                self._durable_bytes, self._failed, callbackArgs=(point,)
            )

    def _durable_bytes(self, _: None, point: int) -> None:
        self.log.synced(point)
        directories: list[Path] = []
        try:
            for share in self._group:
                directories += self.publisher.publish(share)
        except Exception:  # an I/O error; never a group stuck for good
            self._failed(Failure())
            return
        if not directories:  # only small shares, applied from the log: no entry to flush
            self._durable_entries(None)
            return
        self._run(partial(sync_directories, directories)).addCallbacks(
            self._durable_entries, self._failed
        )

    def _durable_entries(self, _: None) -> None:
        group, self._group = self._group, []
        for share in group:
            self._hidden.discard(share.key)
        for share in group:
            share.done.callback(None)
        self._next()

    def _failed(self, failure: Failure) -> None:
        self.failures += 1
        if isinstance(failure.value, LogFlushFailed):
            self.log.flush_failed(failure.value)
        group, self._group = self._group, []
        for share in group:
            self._hidden.discard(share.key)
            try:
                self.publisher.unpublish(share)
            except OSError:
                pass
        for share in group:
            share.done.errback(failure)
        self._next()
