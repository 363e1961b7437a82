"""The staging area: local files that hold what clients write until it is in the grid.

Every file opened for writing gets a staged file here (mode 0600 in a 0700
directory), written at any offset with ``pwrite`` — never held whole in
memory. The area enforces a quota on the bytes it holds: a write that would
cross it fails with :class:`~gateway.fs.errors.NoSpace`, as does a full disk,
and neither damages anything already staged.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

from attrs import define, field

from gateway.fs.errors import NoSpace
from gateway.nodedir import fsync_dir


@define(eq=False)
class StagedFile:
    """One staged file: a sparse local file and its logical size."""

    area: StagingArea
    path: Path
    fd: int
    size: int = 0
    _closed: bool = field(default=False, init=False)

    def read(self, offset: int, length: int) -> bytes:
        """Read what has been written (holes read as zeros), clamped at the size."""
        if offset >= self.size:
            return b""
        return os.pread(self.fd, min(length, self.size - offset), offset)

    def write(self, offset: int, data: bytes) -> None:
        """Write at ``offset``, growing the file (and the area's usage) as needed."""
        end = offset + len(data)
        grow = max(0, end - self.size)
        self.area.reserve(grow)
        try:
            view = memoryview(data)
            while view:
                written = os.pwrite(self.fd, view, offset)
                view = view[written:]
                offset += written
        except OSError as e:
            self.area.release(grow)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace("the gateway's disk is full") from None
            raise
        self.size = max(self.size, end)

    def truncate(self, size: int) -> None:
        """Set the logical size (shrinking frees quota; growing reads as zeros)."""
        if size > self.size:
            self.area.reserve(size - self.size)
        else:
            self.area.release(self.size - size)
        os.ftruncate(self.fd, size)
        self.size = size

    def fsync(self) -> None:
        """Make the staged bytes durable on the local disk."""
        os.fsync(self.fd)

    def discard(self) -> None:
        """Delete the staged file and give its bytes back to the quota."""
        if self._closed:
            return
        self._closed = True
        os.close(self.fd)
        self.path.unlink(missing_ok=True)
        self.area.release(self.size)


class StagingArea:
    """A directory of staged files with a byte quota."""

    def __init__(self, directory: Path, quota: int):
        self.directory = directory
        self.quota = quota
        self.used = 0
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)

    def reserve(self, amount: int) -> None:
        """Account for ``amount`` more bytes, or raise NoSpace past the quota."""
        if amount and self.used + amount > self.quota:
            raise NoSpace(f"staging quota of {self.quota} bytes is full; uploads are still pending")
        self.used += amount

    def release(self, amount: int) -> None:
        """Give back bytes."""
        self.used = max(0, self.used - amount)

    def create(self) -> StagedFile:
        """A new, empty staged file."""
        path = self.directory / f"{secrets.token_hex(12)}.staged"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        return StagedFile(self, path, fd)

    def reopen(self, path: Path) -> StagedFile:
        """A staged file left by a previous run (its upload is journaled)."""
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        size = os.fstat(fd).st_size
        self.used += size
        return StagedFile(self, path, fd, size)

    def sync_directory(self) -> None:
        """Make new staged files' names durable."""
        fsync_dir(self.directory)

    def leftovers(self, keep: set[str]) -> list[Path]:
        """Staged files no journal record refers to (abandoned by a crash before CLOSE)."""
        return [p for p in self.directory.glob("*.staged") if str(p) not in keep]
