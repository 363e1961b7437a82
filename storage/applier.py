"""Applying durable redo-log records to the share files in a thread of their own.

Once a change's record is flushed the change is acknowledged: what is left is to
write the files it names (:meth:`storage.inplace.LoggedFiles.apply`). For a new
object that means a directory and two files, and creating an inode is the one
step of a small upload whose cost the caller cannot bound: on a fresh ext4 it
costs tens of microseconds, on a filesystem whose block groups near the shares
are full (measured on this project's CI machine: ``/tmp`` after months of test
runs) half a millisecond each, paid in the kernel by whichever thread creates
it. :class:`BackgroundApplier` takes that step off the caller's path: records
are applied in log order by one thread; a read of an index whose records are
still waiting applies them itself (:meth:`BackgroundApplier.settle`), and a
listing lays them over what the directory holds
(:meth:`BackgroundApplier.pending`), so every answer is the one the files
would give if the records had been applied at once.

A crash loses nothing: a record is handed over only once the log holding it is
durable, and opening a backend replays the log. A record that cannot be applied
(disk full while creating a file, an I/O error) stops the thread: reads of the
indexes it left behind and the next checkpoint raise :class:`StorageError` (the
log is then not emptied), and a restart replays the log.

Its owner may hold the thread back (``hold``: the embedded grid does while the
gateway's clients are busy, issue #17's "foreground first"): records then wait,
up to :data:`APPLY_BACKLOG` of them holding :data:`APPLY_BACKLOG_BYTES`, and are
applied once the hold ends, or down to half that when they pass it (past
:data:`APPLY_LIMIT` times the bytes, whoever hands more over waits), or before a
checkpoint falls due (:meth:`BackgroundApplier.caught_up`; the checkpoint keeps
in the log what is still waiting then,
:meth:`BackgroundApplier.waiting_records`). Applying costs the same later as
now, but not while a client waits: on two cores, the thread creating an object's
directory and files competed with the reactor thread and the client for every
fsync (``docs/performance.rst``). Reads stay exact meanwhile (above), and cost
no more: the records waiting are indexed by storage index. A record whose file a
later record of the index writes again whole (or removes) stops waiting when that
one comes, and is never applied: a directory's slot rewritten by every change to
it, while held back, is written once, and listed without walking hundreds.
"""

from __future__ import annotations

import os
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from storage.errors import StorageError

Record = dict[str, Any]

APPLY_BACKLOG = 4096
"""Records that may wait while the owner holds the thread back (past it, or past
:data:`APPLY_BACKLOG_BYTES`, the oldest are applied until half as many wait)."""

APPLY_BACKLOG_BYTES = 8 << 20
"""Bytes of shares those records may hold (records are kept in memory until applied; a
small share's record holds up to 128 KiB)."""

APPLY_NICE = 10
"""How much nicer the applying thread is than the process (Linux gives each thread its own
nice value): when it competes for a core with the reactor thread or a client, it gets
about a tenth of the time they do. Its records are durable already; only reads of their
indexes wait for them, and those apply them themselves (:meth:`BackgroundApplier.settle`)."""

APPLY_LIMIT = 4
"""Times :data:`APPLY_BACKLOG_BYTES` the records waiting may hold before a submitter waits
for the thread: under a stream of fsyncs the thread, nicer than the rest and sharing two
cores with them, fell behind until the log's size bound (up to 64 MiB), each waiting
record holding its share in memory. Twice the backlog was measured too: the submitter then
waited for file creations from the 400th fsync on (a mean of 2.8-3.3 ms over 1,000
against 1.8-2.2 ms)."""

HOLD_RECHECK = 0.05
"""Seconds between two looks at whether a hold has ended, while records wait."""


def _never() -> bool:
    return False


class BackgroundApplier:
    """Applies records handed to it, in order, in a daemon thread started on first use.

    ``apply`` is called in the thread with ``lock`` held, so the owner takes the same
    lock around anything else that touches the files. ``hold`` is asked, in the thread,
    whether records may wait for now (see the module).
    """

    log = Logger()

    def __init__(
        self,
        apply: Callable[[Record], None],
        lock: threading.RLock,
        hold: Callable[[], bool] = _never,
        backlog: int = APPLY_BACKLOG,
        backlog_bytes: int = APPLY_BACKLOG_BYTES,
    ) -> None:
        self._apply = apply
        self._lock = lock
        self.hold = hold
        self._backlog = backlog
        self._backlog_bytes = backlog_bytes
        self._queued_bytes = 0
        """Bytes of shares the records in the queue hold, but for those taken."""
        self._catching_up = False
        self._holding = False
        """The thread waits for a hold to end (a new record need not wake it)."""
        self._draining = 0
        """Threads waiting for records done (drain, a relieved submitter): whom _done wakes."""
        self._callers = 0
        """Other threads waiting for the files' lock (see :meth:`locked`)."""
        self._cond = threading.Condition()
        self._queue: deque[Record] = deque()
        self._queued: dict[bytes, deque[Record]] = {}
        """The records in the queue, per storage index, in order."""
        self._taken: set[int] = set()
        """Records left in the queue that a reader applied itself (by ``id``)."""
        self._caught_up: list[tuple[int, Callable[[], None]]] = []
        """Called once so many records are done (see :meth:`caught_up`)."""
        self._submitted = self._finished = 0
        """Records handed over, and records done (applied, by whoever, or passed over)."""
        self._pending: Counter[bytes] = Counter()
        """Records waiting or being applied, per storage index."""
        self._failed: BaseException | None = None
        self._lost: set[bytes] = set()
        """Indexes with records a failure left unapplied."""
        self._thread: threading.Thread | None = None
        self._closing = False
        self._current: Record | None = None
        """The record the thread took from the queue and is applying (or about to)."""

    @property
    def waiting(self) -> int:
        """Records handed over and not yet applied."""
        return self._in_queue + (self._current is not None)

    @property
    def _in_queue(self) -> int:
        """Records in the queue, but for those a reader took."""
        return len(self._queue) - len(self._taken)

    def submit(self, records: Iterable[Record]) -> None:
        """Hand over durable records, in log order."""
        with self._cond:
            for record in records:
                storage_index = bytes(record["si"])
                if self._failed is not None:
                    self._lost.add(storage_index)
                    continue
                self._queue.append(record)
                self._submitted += 1
                queued = self._queued.setdefault(storage_index, deque())
                if queued:
                    self._pass_over(storage_index, queued, record)
                queued.append(record)
                self._queued_bytes += _size(record)
                self._pending[storage_index] += 1
            if self._queue and self._thread is None and not self._closing:
                self._thread = threading.Thread(target=self._run, name="apply", daemon=True)
                self._thread.start()
            if not self._holding or self._over_backlog():
                self._cond.notify_all()
            if self._queued_bytes > APPLY_LIMIT * self._backlog_bytes:
                self._relieve()

    def _pass_over(self, storage_index: bytes, queued: deque[Record], record: Record) -> None:
        """Take the records ``record`` undoes (it writes their file whole, or removes it) out
        of ``queued``, the index's waiting ones, as done (the condition is held): a slot held
        back kept hundreds, walked by every test-and-write's listing."""
        kept: deque[Record] = deque()
        for earlier in queued:
            if _superseded(earlier, (record,)):
                self._taken.add(id(earlier))  # the thread passes over it
                self._queued_bytes -= _size(earlier)
                earlier.pop("data", None)  # (it waits in the queue for that; its share need not)
            else:
                kept.append(earlier)
        if dropped := len(queued) - len(kept):
            queued.clear()
            queued.extend(kept)
            self._done(storage_index, dropped)

    def _relieve(self) -> None:
        """Wait until the thread has taken the records waiting back under the limit (the
        condition is held): the submitter pays with time what it would hold in memory,
        each about what it added, rather than one in a while a long wait. Not where it
        cannot work: no thread, closing, failed, or the caller holds the files' lock
        (the thread would wait for it)."""
        owned = getattr(self._lock, "_is_owned", None)
        if self._thread is None or self._closing or (owned is not None and owned()):
            return
        self._draining += 1  # no holding back meanwhile
        self._cond.notify_all()
        try:
            while (
                self._queued_bytes > APPLY_LIMIT * self._backlog_bytes
                and self._failed is None
                and not self._closing
            ):
                self._cond.wait()
        finally:
            self._draining -= 1

    def caught_up(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once as many records are done as were handed over until now
        (in the applying thread, or here and now), holding nothing back meanwhile: before a
        checkpoint, which must find the files holding every durable change, the records
        are applied here, alongside the owner's work, rather than in the checkpoint,
        holding it up. (Not "once none waits": records keep coming while clients work; the
        checkpoint keeps those in the log.)
        Called too if the thread stops on a failure (the checkpoint then reports it)."""
        with self._cond:
            if self._finished < self._submitted and self._failed is None:
                self._caught_up.append((self._submitted, callback))
                self._cond.notify_all()
                return
        callback()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the files' lock, ahead of the thread: it takes no next record while another
        thread waits for the lock. (A lock is not fair: the thread, taking it again right
        after each record, kept a reader of an index waiting behind hundreds of slow
        creates, up to 584 ms in an fsync loop.)"""
        with self._cond:
            self._callers += 1
        try:
            with self._lock:
                yield
        finally:
            with self._cond:
                self._callers -= 1
                self._cond.notify_all()

    def settle(self, storage_index: bytes) -> None:
        """Return once no record of the index waits; raise if a failure left one behind.

        The index's waiting records are taken out of the queue and applied here, in their
        order, rather than waited for behind every record handed over before them (after a
        large upload, hundreds): records of different indexes name different files, so
        their order does not matter, and a record's own index keeps its order.
        """
        if storage_index not in self._pending and not self._lost:
            return  # the usual case: nothing of it waits, and nothing failed
        with self.locked():  # the thread applies nothing meanwhile
            with self._cond:
                mine = self._records_of(storage_index)
                if mine and mine[0] is self._current:
                    self._current = None  # taken before the thread could apply it
                for record in self._queued.pop(storage_index, ()):
                    self._taken.add(id(record))  # the thread passes over it
                    self._queued_bytes -= _size(record)
            try:
                for at, record in enumerate(mine):
                    if not _superseded(record, mine[at + 1 :]):
                        self._apply(record)
            except BaseException as e:
                self._stop(e)
                raise self._error() from e
        with self._cond:
            self._done(storage_index, len(mine))
            if storage_index in self._lost:
                raise self._error()

    def pending(self, storage_index: bytes) -> list[Record] | None:
        """The index's records not yet known to be applied, in order (the one being
        applied included), without waiting for the thread; None when a failure left some
        of them unapplied (:meth:`settle` raises for it).

        A caller that reads the files *after* this call and lays these records over what it
        read sees what the files will hold: the thread applies a suffix of them meanwhile,
        at most, and each record's effect is the same applied once or again.
        """
        if storage_index not in self._pending and not self._lost:
            return []
        with self._cond:
            return None if storage_index in self._lost else self._records_of(storage_index)

    @property
    def far_behind(self) -> bool:
        """Whether four times the backlog waits: a checkpoint then waits for the thread
        (the producer with it: the records waiting are held in memory)."""
        with self._cond:
            return self._over_backlog(4)

    def waiting_records(self) -> list[Record]:
        """Every record not yet known to be applied, in log order (the one being applied
        included): what a checkpoint that does not wait for the thread keeps in the log."""
        with self._cond:
            current = [] if self._current is None else [self._current]
            return current + [r for r in self._queue if id(r) not in self._taken]

    def _records_of(self, storage_index: bytes) -> list[Record]:
        """The index's record being applied (if any), then its waiting ones, in order (the
        condition is held)."""
        current = self._current
        records = [] if current is None or bytes(current["si"]) != storage_index else [current]
        records.extend(self._queued.get(storage_index, ()))
        return records

    def drain(self) -> None:
        """Return once every record handed over is applied; raise if one could not be."""
        with self._cond:
            self._draining += 1  # no holding back meanwhile
            self._cond.notify_all()
            try:
                while self.waiting and self._failed is None:
                    self._cond.wait()
            finally:
                self._draining -= 1
            if self._failed is not None:
                raise self._error()

    def close(self) -> None:
        """Apply what waits, then end the thread (records handed over later are applied
        in the caller's thread, at once)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
            self._thread = None
        if self._failed is not None:
            raise self._error()

    def _error(self) -> StorageError:
        error = StorageError(
            f"logged changes could not be written to the share files: {self._failed}"
        )
        error.__cause__ = self._failed
        return error

    def _done(self, storage_index: bytes, count: int) -> None:
        """``count`` records of the index are applied (the condition is held)."""
        if count and storage_index in self._pending:
            self._pending[storage_index] -= count
            if self._pending[storage_index] <= 0:
                del self._pending[storage_index]
        self._finished += count
        if self._draining:  # (not the thread at every record an fsync's slot passes over)
            self._cond.notify_all()
        if self._caught_up:
            self._call_caught_up()

    def _call_caught_up(self, everyone: bool = False) -> None:
        """Call the :meth:`caught_up` callbacks whose records are done (``everyone``: all
        of them); the condition is held: they only hand work to another thread."""
        due = [c for target, c in self._caught_up if everyone or target <= self._finished]
        self._caught_up = [
            (t, c) for t, c in self._caught_up if not (everyone or t <= self._finished)
        ]
        for callback in due:
            try:
                callback()
            except Exception:
                self.log.failure("a callback waiting for the files to catch up failed")

    def _stop(self, error: BaseException) -> None:
        """A record could not be applied: keep the error for whoever reads next (the log
        replays the record at the next start) and give up on what waits."""
        self.log.failure(
            "logged changes can no longer be written to the share files; the "
            "indexes they name answer errors until a restart replays the log",
            failure=Failure(error),
        )
        with self._cond:
            self._failed = error
            self._lost.update(self._pending)
            self._queue.clear()
            self._queued.clear()
            self._taken.clear()
            self._queued_bytes = 0
            self._pending.clear()
            self._current = None
            self._cond.notify_all()
            self._call_caught_up(everyone=True)

    def _held(self) -> bool:
        """Whether the records waiting may wait longer (the condition is held)."""
        if self._closing or self._draining or self._caught_up:
            return False
        if self._over_backlog():
            self._catching_up = True
        elif 2 * self._in_queue <= self._backlog and 2 * self._queued_bytes <= self._backlog_bytes:
            self._catching_up = False
        return not self._catching_up and self.hold()

    def _over_backlog(self, times: int = 1) -> bool:
        """Whether more records wait than ``times`` the backlog (the condition is held)."""
        return (
            self._in_queue > times * self._backlog
            or self._queued_bytes > times * self._backlog_bytes
        )

    def _next(self) -> Record | None:
        """The next record to apply, once it may be; None once closing has nothing left
        (the condition is held)."""
        while True:
            while self._queue and id(self._queue[0]) in self._taken:
                self._taken.discard(id(self._queue.popleft()))
            if not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            elif self._callers:
                self._cond.wait()  # another thread waits for the files: it goes first
            elif self._held():
                self._holding = True
                self._cond.wait(HOLD_RECHECK)
                self._holding = False
            else:
                record = self._queue.popleft()
                self._queued_bytes -= _size(record)
                storage_index = bytes(record["si"])
                queued = self._queued[storage_index]
                queued.popleft()
                if not queued:
                    del self._queued[storage_index]
                return record  # (none it undoes waits: see _pass_over)

    def _run(self) -> None:
        _lower_priority()
        while True:
            with self._cond:
                record = self._current = self._next()
                if record is None:
                    return
            with self._lock:
                with self._cond:
                    if self._current is not record:
                        continue  # a reader took it and applied it itself
                try:
                    self._apply(record)
                except BaseException as e:
                    # Still under the lock: a reader waiting for it must find the failure,
                    # not the record, or it applies (and reports) the record a second time.
                    self._stop(e)
                    return
                with self._cond:  # still under the lock: no reader sees it twice
                    self._current = None
                    self._done(bytes(record["si"]), 1)


def _lower_priority() -> None:
    """Make the calling thread :data:`APPLY_NICE` nicer than it is (at most 19; best effort:
    where threads have no priority of their own, nothing changes)."""
    try:
        thread = threading.get_native_id()
        nice = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, nice + APPLY_NICE))
    except (AttributeError, OSError):
        pass


def _target(record: Record) -> tuple[str, int] | None:
    """The file a record writes whole: ("share", n) or ("meta", 0); None for a removal."""
    op = record["op"]
    if op == "share":
        return ("share", int(record["n"]))
    return ("meta", 0) if op == "meta" else None


def _superseded(record: Record, later: Iterable[Record]) -> bool:
    """Whether a record's write is undone by one of ``later`` (records of the same index,
    in log order): a whole write of the same file, its removal, or the index's."""
    target = _target(record)
    if target is None:
        return False
    for other in later:
        op = other["op"]
        if op == "delete-index" or _target(other) == target:
            return True
        if op == "delete-share" and target == ("share", int(other["n"])):
            return True
    return False


def _size(record: Record) -> int:
    """Bytes of share data a record holds (a small share's, a slot's)."""
    data = record.get("data")
    return len(data) if isinstance(data, (bytes, bytearray)) else 0


def lay_over_listing(numbers: set[int], records: Sequence[Record]) -> None:
    """Change the share numbers a listing found into what they are once ``records`` (of
    one index, in log order) are applied."""
    for record in records:
        if record["op"] == "share":
            numbers.add(int(record["n"]))
        elif record["op"] == "delete-share":
            numbers.discard(int(record["n"]))
        elif record["op"] == "delete-index":
            numbers.clear()
