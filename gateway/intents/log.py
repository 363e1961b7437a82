"""The intent log: what the gateway acknowledged to a client and has not yet done in the grid.

An *intent* is a keyed record — an upload to run, a group of directory changes
to publish — put in the log before the client is told its request is safe,
and marked done once the grid has it. After a crash or a restart the intents
without their "done" are the work to resume. Two users share this one engine:
the upload journal (:mod:`gateway.uploads.journal`) and directory write-back
(:mod:`gateway.objects.writeback`).

Records are CBOR in one log with the checksummed record format of
:mod:`storage.redolog` (a torn tail is cut off and reported), in a 0700
directory: intents hold capabilities, which are secrets.

Group commit. :meth:`IntentLog.put` appends without flushing; :meth:`flushed`
makes everything appended so far durable. The ``fdatasync`` runs in a thread
(the reactor serves other requests meanwhile), and every record appended while
one flush runs is covered by the next one, so requests acknowledged in quick
succession share flushes. Without threads (a test's clock) it flushes at once.

In place. A flush a client's reply waits for (a CLOSE's) runs in the reactor
thread instead, when no flush is under way and the log's flushes have lately
taken less than :data:`IN_PLACE_BELOW`: on a disk that flushes a small append in
a fraction of a millisecond, handing the flush to a thread and its answer back
cost about as much as the flush (a CLOSE's median went from 1.34-1.53 ms to
1.19-1.27 ms in place, paramiko against an embedded gateway; see
docs/performance.rst). Every flush is timed; once they are slow (a busy or remote
disk), they go to the thread again, so a slow disk holds the reactor for about one
flush. CLOSEs of several clients at once each flush in place then, one after the
other, where the thread would have shared one flush among them: a few hundred
microseconds each, less than the rest of a CLOSE's work.

An intent done before its put was flushed needs no flush: the grid has it. So
:meth:`flushed` fires at once when every intent put since the last flush is done
already (an fsync's directory change, published before the journal's delayed
flush comes round, costs no ``fdatasync`` of the journal, and no write to it
waits behind one).

Compaction. "Done" records are appended without a flush (an intent done again
after a crash changes nothing). When the log is past :data:`COMPACT_BYTES` and
mostly finished intents, it is rewritten with the live ones only; once no
intent is live, it is emptied.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from gateway.threads import Threads
from storage.redolog import RedoLog

COMPACT_BYTES = 4 * 1024 * 1024
"""Size of the log past which finished intents' records are dropped from it."""

RESET_BYTES = 256 * 1024
"""Size of the log past which it is emptied once no intent is live."""

IN_PLACE_BELOW = 0.002
"""Seconds: a flush someone waits for runs in the reactor thread while the log's recent
flushes took less than this on average (see the module docstring)."""

RECENT_WEIGHT = 0.5
"""The weight of the latest flush's time in the average of recent flushes."""

#: What an older record format means: ``("put", key, value)`` or ``("done", key, None)``.
Operation = tuple[str, str, Any]


class IntentLog:
    """The live intents of one journal, and the log that keeps them."""

    def __init__(
        self,
        path: Path,
        *,
        legacy: Callable[[dict[str, Any]], Iterable[Operation]] | None = None,
        value_size: Callable[[Any], int] = lambda value: len(value),
        compact_bytes: int | None = None,
        repair: bool = True,
        in_place_below: float = IN_PLACE_BELOW,
    ) -> None:
        """Open (or create) the log and replay it; ``legacy`` reads records of an older
        format, ``value_size`` measures a value for the compaction rule,
        ``compact_bytes`` overrides :data:`COMPACT_BYTES` and ``in_place_below``
        :data:`IN_PLACE_BELOW` (0: every flush in a thread)."""
        self.path = path
        self._log = RedoLog(path, repair=repair)
        self._value_size = value_size
        self._compact_bytes = compact_bytes
        self.damaged: list[str] = []
        #: Live intents by key, in the order they were first put.
        self.live: dict[str, Any] = {}
        #: Each live intent's size for the compaction rule: its record's bytes when put
        #: here, ``value_size`` of its value when replayed.
        self._sizes: dict[str, int] = {}
        self._live_bytes = 0
        self._flush_waiters: list[tuple[int, Deferred[None]]] = []
        #: Where the last "put" record ends in the log (what a flush must cover).
        self._put_end = 0
        #: Intents put since the last flush and not done: where each one's record ends.
        self._unflushed: dict[str, int] = {}
        self._flushing = False
        self._in_place_below = in_place_below
        #: The average time of the recent flushes (seconds; see :data:`RECENT_WEIGHT`).
        self.recent_flush = 0.0
        for record in self._log.records():
            operations: Iterable[Operation]
            if record.get("op") in ("put", "done") and isinstance(record.get("key"), str):
                operations = [(record["op"], record["key"], record.get("value"))]
            elif legacy is not None:
                operations = legacy(record)
            else:
                operations = ()
            for op, key, value in operations:
                if op == "put":
                    self._remember(key, value)
                else:
                    self._forget(key)
        if self._log.damaged_bytes:
            self.damaged.append(
                f"{path.name}: {self._log.damaged_bytes} bytes after the last intact record"
            )

    @property
    def size(self) -> int:
        """The log's size in bytes."""
        return self._log.size

    def put(self, key: str, value: Any) -> None:
        """Record (or replace) an intent; durable once :meth:`flushed` fires.

        Raises the OSError of a write that fails (a full disk): the intent is not live.
        """
        before = self._log.appended
        self._log.append({"op": "put", "key": key, "value": value}, sync=False)
        self._put_end = self._log.appended
        self._unflushed[key] = self._put_end
        self._remember(key, value, self._put_end - before)

    def done(self, key: str) -> None:
        """An intent is carried out: forget it (not flushed; see the module docstring)."""
        if key not in self.live:
            return
        self._log.append({"op": "done", "key": key}, sync=False)
        self._unflushed.pop(key, None)
        self._forget(key)
        self._compact()

    def sync(self) -> None:
        """Make everything appended so far durable now, in this thread (raises its OSError)."""
        if self._log.durable < self._log.appended:
            self._log.sync()
        self._unflushed.clear()

    def flushed(self, threads: Threads | None, in_place: bool = False) -> Deferred[None]:
        """Fires once every intent put so far is durable (errback: the flush's OSError).

        The flush runs in a thread; while one runs, the records appended meanwhile wait for
        the next, which covers them all. With no ``threads`` it runs now, and so it does
        ``in_place`` (someone waits for it) while no flush runs and recent ones were fast
        (see the module docstring). "Done" records appended since the last put need no
        flush: this fires at once for them.
        """
        log = self._log
        point = self._put_end
        if log.durable >= point or not self._unflushed:
            return succeed(None)
        if threads is None or (
            in_place and not self._flushing and self.recent_flush < self._in_place_below
        ):
            started = time.perf_counter()
            try:
                self.sync()
            except OSError as e:
                return fail(e)
            finally:
                self._timed(time.perf_counter() - started)
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._flush_waiters.append((point, waiter))
        if not self._flushing:
            self._flush(threads)
        return waiter

    def close(self) -> None:
        """Close the log (pending flushes are not waited for)."""
        self._log.close()

    # -- internals -------------------------------------------------------------------

    def _remember(self, key: str, value: Any, size: int | None = None) -> None:
        size = self._value_size(value) if size is None else size
        self._live_bytes += size - self._sizes.get(key, 0)
        self._sizes[key] = size
        self.live[key] = value

    def _forget(self, key: str) -> None:
        if key in self.live:
            del self.live[key]
            self._live_bytes -= self._sizes.pop(key)

    def _compact(self) -> None:
        log = self._log
        if not self.live:
            if log.size > RESET_BYTES:
                log.reset()
                self._live_bytes = 0
                self._unflushed.clear()
        elif log.size > (self._compact_bytes or COMPACT_BYTES) and log.size > 2 * self._live_bytes:
            log.rewrite(
                [{"op": "put", "key": key, "value": value} for key, value in self.live.items()]
            )
            self._unflushed.clear()  # (the rewrite is durable)

    def _flush(self, threads: Threads) -> None:
        fd, point = self._log.sync_point()
        self._flushing = True
        threads(partial(_fdatasync_and_close, fd)).addBoth(self._flush_done, threads, point)

    def _timed(self, seconds: float) -> None:
        self.recent_flush += RECENT_WEIGHT * (seconds - self.recent_flush)

    def _flush_done(self, result: Failure | float, threads: Threads, point: int) -> None:
        self._flushing = False
        log = self._log
        error: BaseException | None = None
        if not isinstance(result, Failure):
            self._timed(result)
        else:
            error = result.value
            if not isinstance(error, OSError):
                # Not run (a stopping thread pool, say): flush here instead.
                try:
                    log.sync()
                    error = None
                except OSError as e:
                    error = e
        if error is None:
            log.synced(point)
            self._unflushed = {k: end for k, end in self._unflushed.items() if end > point}
        waiters, self._flush_waiters = self._flush_waiters, []
        done = [waiter for wanted, waiter in waiters if wanted <= log.durable]
        failed = (
            [] if error is None else [w for wanted, w in waiters if log.durable < wanted <= point]
        )
        self._flush_waiters = [
            (wanted, w) for wanted, w in waiters if wanted > max(log.durable, point)
        ]
        if self._flush_waiters:
            self._flush(threads)
        # Last: a waiter's callbacks may append records and ask for flushes of their own.
        for waiter in done:
            waiter.callback(None)
        for waiter in failed:
            waiter.errback(error)


def _fdatasync_and_close(fd: int) -> float:
    """In a thread: flush a duplicate of the log's descriptor, then close it; the seconds
    the flush took."""
    try:
        started = time.perf_counter()
        os.fdatasync(fd)
        return time.perf_counter() - started
    finally:
        os.close(fd)
