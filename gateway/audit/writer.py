"""The audit log file: JSON lines appended with one write each, rotated by size.

Each event is scrubbed (:class:`gateway.logfile.Scrubber`: the second line of
defence against a capability reaching the file) and written with one
``os.write`` to a file opened ``O_APPEND`` with mode 0600. Nothing waits in a
user-space buffer: an event recorded is in the file even if the process is
killed at once (on disk after a power loss only once the OS has flushed it:
there is no fsync per event). A write costs a few microseconds on the reactor
thread (``misc/bench_audit.py``).

Rotation: when a line would take the file past ``max_size``, ``PATH.(keep-1)``
becomes ``PATH.keep`` (the oldest is replaced), …, ``PATH`` becomes ``PATH.1``,
and a new ``PATH`` is started; ``keep`` 0 keeps no old file. ``max_size`` 0
never rotates (for logrotate's ``copytruncate``: every write goes to the end of
the file, wherever that is).

When the file cannot be written (disk full, its directory gone, permissions),
the operation being audited goes on as if nothing happened: the event is
counted as lost, the node log says so once (an error naming the path and the
cause), and every later event tries again. The first one that is written is
preceded by an ``audit_lost`` event giving how many were lost and since when,
and the node log says the file is writable again. A line cut short by a full
disk is taken back off the file, so every line of it stays whole JSON.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from gateway.audit.events import Client, IAuditLog, event_line
from gateway.logfile import utc_timestamp

__all__ = ["AuditFile"]

#: Read too: the last byte of an existing file is checked.
_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


def _unchanged(text: str) -> str:
    return text


@implementer(IAuditLog)
class AuditFile:
    """An audit log at ``path``, rotated past ``max_size`` bytes with ``keep`` old files."""

    log = Logger()

    def __init__(
        self,
        path: Path,
        *,
        max_size: int,
        keep: int,
        clock: IReactorTime,
        scrub: Callable[[str], str] = _unchanged,
    ) -> None:
        self.path = path
        self.max_size = max_size
        self.keep = keep
        self._clock = clock
        self._scrub = scrub
        self._fd: int | None = None
        self._size = 0
        #: Events not written since the file last failed (0 while it works).
        self.lost = 0
        self._failed_since = 0.0

    @property
    def size(self) -> int:
        """Bytes in the current file, as far as this writer knows."""
        return self._size

    def rotated(self, number: int) -> Path:
        """The path of the ``number``-th newest old file (``PATH.1``, ``PATH.2``…)."""
        return self.path.with_name(f"{self.path.name}.{number}")

    def open(self) -> None:
        """Open (or create) the file now; OSError when it cannot be."""
        if self._fd is None:
            self._open()

    def close(self) -> None:
        """Close the file; a later event opens it again."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def record(self, event: str, client: Client, **fields: Any) -> None:
        """Append one event; when the file cannot be written, count it as lost."""
        now = float(self._clock.seconds())
        line = event_line(now, event, client, fields)
        try:
            if self.lost:
                self._recover(now)
            self._write(self._scrub(line))
        except OSError as e:
            self._failed(now, e)

    def _recover(self, now: float) -> None:
        notice = event_line(
            now,
            "audit_lost",
            Client(),
            {"events": self.lost, "since": utc_timestamp(self._failed_since)},
        )
        self._write(notice)
        self.log.info(
            "audit log {path} is writable again; {count} events were lost",
            path=str(self.path),
            count=self.lost,
        )
        self.lost = 0

    def _failed(self, now: float, error: OSError) -> None:
        if not self.lost:
            self._failed_since = now
            self.log.error(
                "audit log {path} cannot be written ({error}): audit events are lost until it"
                " can; operations go on",
                path=str(self.path),
                error=error.strerror or str(error),
            )
        self.lost += 1
        try:
            self.close()
        except OSError:
            self._fd = None

    def _write(self, line: str) -> None:
        data = line.encode("utf-8", "backslashreplace")
        if self._fd is None:
            self._open()
        if self.max_size and self._size and self._size + len(data) > self.max_size:
            self._rotate()
        assert self._fd is not None
        written = os.write(self._fd, data)
        if written != len(data):
            os.ftruncate(self._fd, self._size)  # take the torn line back off
            raise OSError(errno.ENOSPC, "No space left on device (a short write)")
        self._size += written

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, _FLAGS, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # The end of a line cut short (a crash, a full disk): end it, so the next
                # line is whole JSON.
                size += os.write(fd, b"\n")
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._size = size

    def _rotate(self) -> None:
        self.close()
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            for number in range(self.keep - 1, 0, -1):
                older = self.rotated(number)
                if older.exists():
                    os.replace(older, self.rotated(number + 1))
            os.replace(self.path, self.rotated(1))
        self._open()
