"""Open handles: a writer on a path's shared staged file, or a reader of a file's bytes."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from attrs import define, field
from zope.interface import implementer

from gateway.fs.errors import PermissionDenied
from gateway.fs.interfaces import FileAttributes, IOpenFile, SetAttributes
from gateway.fs.staging import StagedFile

#: The last offset ``pread`` takes (a signed 64-bit file offset); no file reaches it.
_LAST_OFFSET = (1 << 63) - 1


def _pread(fd: int, length: int, offset: int) -> bytes:
    """``pread``, with offsets past any file's end (where it raises EINVAL) read as the end."""
    if offset >= _LAST_OFFSET:
        return b""
    return os.pread(fd, min(length, _LAST_OFFSET - offset), offset)


@define(eq=False)
class StagedReader:
    """Reads a staged file through its own descriptor, so it outlives the staged file's
    removal; a reader of a file in memory follows it to the disk
    (:meth:`StagedFile.move_to_disk`)."""

    fd: int

    @classmethod
    def of(cls, staged: StagedFile) -> StagedReader:
        """A reader sharing the staged file's bytes (later writes included)."""
        reader = cls(os.dup(staged.fd))
        if staged.in_memory:
            staged.follow(reader)
        return reader

    async def read(self, offset: int, length: int) -> bytes:
        """Bytes at offset, clamped at the file's current end."""
        return _pread(self.fd, length, offset)

    def read_now(self, offset: int, length: int) -> bytes:
        """The same, without waiting (for a merged read of changes over a grid version)."""
        return _pread(self.fd, length, offset)

    def follow(self, fd: int) -> None:
        """The file moved to ``fd``: read a descriptor of its own on that (unless closed)."""
        if self.fd >= 0:
            moved = os.dup(fd)
            os.close(self.fd)
            self.fd = moved

    def close(self) -> None:
        """Release the descriptor."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@define(eq=False)
class MemoryReader:
    """Reads a file's bytes held in memory (the kept copy of a small file,
    :mod:`gateway.fs.kept`), as :class:`StagedReader` reads a staged file."""

    data: bytes

    async def read(self, offset: int, length: int) -> bytes:
        """Bytes at offset, clamped at the end."""
        return self.data[offset : offset + length]

    def read_now(self, offset: int, length: int) -> bytes:
        """The same, without waiting."""
        return self.data[offset : offset + length]

    def close(self) -> None:
        """Nothing to release."""


@implementer(IOpenFile)
@define(eq=False)
class ReadHandle:
    """A read-only handle on a file's bytes (grid object, or a file still being uploaded)."""

    path: str
    read_range: Callable[[int, int], Awaitable[bytes]]
    attributes: FileAttributes
    on_close: Callable[[], None] = field(default=lambda: None)
    closed: bool = False
    #: The immutable grid file read, when it is one: a copy of it all is a link to it.
    cap: object = field(default=None, repr=False)
    #: The same reads without waiting, when the bytes are all in a local file.
    read_local: Callable[[int, int], bytes] | None = field(default=None, repr=False)

    @classmethod
    def local(
        cls,
        path: str,
        reader: StagedReader | MemoryReader,
        attributes: FileAttributes,
        cap: object = None,
    ) -> ReadHandle:
        """A handle reading a local file's bytes (its whole contents), closing ``reader``."""
        return cls(path, reader.read, attributes, reader.close, cap=cap, read_local=reader.read_now)

    async def read(self, offset: int, length: int) -> bytes:
        """Read a range."""
        return await self.read_range(offset, length)

    def read_ready(self, offset: int, length: int) -> bytes | None:
        """A range read from the local file, when the handle reads one."""
        return None if self.read_local is None else self.read_local(offset, length)

    async def write(self, offset: int, data: bytes) -> None:
        """Refused: the handle is read-only."""
        raise PermissionDenied("file was not opened for writing")

    async def stat(self) -> FileAttributes:
        """The attributes the file had when opened."""
        return self.attributes

    async def setattr(self, changes: SetAttributes) -> None:
        """Refused: the handle is read-only."""
        raise PermissionDenied("file was not opened for writing")

    async def fsync(self) -> None:
        """Nothing to sync on a read-only handle."""

    async def close(self) -> None:
        """Close."""
        if not self.closed:
            self.closed = True
            self.on_close()

    async def abort(self) -> None:
        """Same as close: a reader changes nothing."""
        await self.close()


def bytes_reader(data: bytes) -> Callable[[int, int], Awaitable[bytes]]:
    """A read function over bytes in memory (a mutable file's contents)."""

    async def read(offset: int, length: int) -> bytes:
        return data[offset : offset + length]

    return read
