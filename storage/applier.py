"""Applying durable redo-log records to the share files in a thread of their own.

Once a change's record is flushed the change is acknowledged: what is left is to
write the files it names (:meth:`storage.inplace.LoggedFiles.apply`). For a new
object that means a directory and two files, and creating an inode is the one
step of a small upload whose cost the caller cannot bound: on a fresh ext4 it
costs tens of microseconds, on a filesystem whose block groups near the shares
are full (measured on this project's CI machine: ``/tmp`` after months of test
runs) half a millisecond each, paid in the kernel by whichever thread creates
it. :class:`BackgroundApplier` takes that step off the caller's path: records
are applied in log order by one thread, and a read of an index whose records
are still waiting waits for them (:meth:`BackgroundApplier.settle`), so every
answer is the one the files would give if the records had been applied at once.

A crash loses nothing: a record is handed over only once the log holding it is
durable, and opening a backend replays the log. A record that cannot be applied
(disk full while creating a file, an I/O error) stops the thread: reads of the
indexes it left behind and the next checkpoint raise :class:`StorageError` (the
log is then not emptied), and a restart replays the log.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

from twisted.logger import Logger

from storage.errors import StorageError

Record = dict[str, Any]


class BackgroundApplier:
    """Applies records handed to it, in order, in a daemon thread started on first use.

    ``apply`` is called in the thread with ``lock`` held, so the owner takes the same
    lock around anything else that touches the files.
    """

    log = Logger()

    def __init__(self, apply: Callable[[Record], None], lock: threading.RLock) -> None:
        self._apply = apply
        self._lock = lock
        self._cond = threading.Condition()
        self._queue: deque[Record] = deque()
        self._pending: Counter[bytes] = Counter()
        """Records waiting or being applied, per storage index."""
        self._failed: BaseException | None = None
        self._lost: set[bytes] = set()
        """Indexes with records a failure left unapplied."""
        self._thread: threading.Thread | None = None
        self._closing = False

    @property
    def waiting(self) -> int:
        """Records handed over and not yet applied."""
        return len(self._queue)

    def submit(self, records: Iterable[Record]) -> None:
        """Hand over durable records, in log order."""
        with self._cond:
            for record in records:
                storage_index = bytes(record["si"])
                if self._failed is not None:
                    self._lost.add(storage_index)
                    continue
                self._queue.append(record)
                self._pending[storage_index] += 1
            if self._queue and self._thread is None and not self._closing:
                self._thread = threading.Thread(target=self._run, name="apply", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def settle(self, storage_index: bytes) -> None:
        """Return once no record of the index waits; raise if a failure left one behind."""
        if storage_index not in self._pending and not self._lost:
            return  # the usual case: nothing of it waits, and nothing failed
        with self._cond:
            while storage_index in self._pending:
                self._cond.wait()
            if storage_index in self._lost:
                raise self._error()

    def drain(self) -> None:
        """Return once every record handed over is applied; raise if one could not be."""
        with self._cond:
            while self._queue and self._failed is None:
                self._cond.wait()
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

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                record = self._queue[0]
            try:
                with self._lock:
                    self._apply(record)
            except BaseException as e:  # kept for whoever reads next; the log replays it
                self.log.failure(
                    "logged changes can no longer be written to the share files; the "
                    "indexes they name answer errors until a restart replays the log"
                )
                with self._cond:
                    self._failed = e
                    self._lost.update(self._pending)
                    self._queue.clear()
                    self._pending.clear()
                    self._cond.notify_all()
                return
            with self._cond:
                self._queue.popleft()
                storage_index = bytes(record["si"])
                self._pending[storage_index] -= 1
                if not self._pending[storage_index]:
                    del self._pending[storage_index]
                self._cond.notify_all()
