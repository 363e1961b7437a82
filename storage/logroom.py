"""One thread that grows redo logs ahead of their records, off their writers' path.

A log is preallocated: its file grows by a megabyte of zeros at a time, and records
are written over them (:mod:`storage.redolog`, "Preallocated"). Growing it in the
writer's thread put that megabyte's write, and the flush that commits the new
size, in the middle of one client's request every few dozen fsyncs. In a gateway
that has written much, the write took about 10 ms (29 growths in 800 fsyncs of a
scratch stream on the embedded grid took 298 ms of the reactor thread, against
3-4 ms for a whole 4 KiB write+fsync), and it is the mean that sets a stream's
rate. A log made with ``grow_ahead`` asks this thread for more room once less than
:data:`~storage.redolog.ROOM_AHEAD` bytes of it are left; the writer only grows
the file itself when a record does not fit in what is there (a burst of records,
or this thread not done yet).

One daemon thread serves every log of the process; it is started on first use
(and again in a child process after a fork, where it does not exist).
"""

from __future__ import annotations

import threading
import weakref
from queue import SimpleQueue
from typing import Protocol


class Growing(Protocol):
    """A log this thread can make room in."""

    def grow_ahead(self) -> None:
        """Make room ahead of the records if little is left (in the room thread)."""


class RoomThread:
    """Runs :meth:`Growing.grow_ahead` of the logs that ask, one at a time, in order."""

    def __init__(self) -> None:
        self._asked: SimpleQueue[weakref.ref[Growing]] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    def ask(self, log: Growing) -> None:
        """Have ``log`` grow ahead soon (a log dropped meanwhile is skipped)."""
        with self._starting:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="redo-log-room", daemon=True)
                self._thread.start()
        self._asked.put(weakref.ref(log))

    def _run(self) -> None:
        while True:
            log = self._asked.get()()
            if log is not None:
                log.grow_ahead()
            del log  # (not kept alive while waiting for the next)


ROOM = RoomThread()
"""The process's room thread."""
