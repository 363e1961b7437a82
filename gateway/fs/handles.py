"""Open handles: a writer on a path's shared staged file, or a reader of a file's bytes."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from attrs import define, field
from zope.interface import implementer

from gateway.fs.boundary import grid_boundary
from gateway.fs.errors import PermissionDenied
from gateway.fs.interfaces import FileAttributes, IOpenFile, SetAttributes
from gateway.fs.localfile import LocalFile
from gateway.fs.paths import join
from gateway.fs.staging import StagedFile

if TYPE_CHECKING:
    from gateway.fs.writing import Writers


@implementer(IOpenFile)
@define(eq=False)
class WriteHandle:
    """A handle on a path open for writing; all such handles share the path's LocalFile."""

    writers: Writers
    state: LocalFile
    readable: bool
    append: bool
    closed: bool = False

    @property
    def path(self) -> str:
        """Where the file is now (renames re-target it)."""
        return join(self.state.path)

    def _staged(self) -> StagedFile:
        assert self.state.staged is not None, "state not ready"
        return self.state.staged

    @grid_boundary
    async def read(self, offset: int, length: int) -> bytes:
        """Read what has been written so far."""
        if not self.readable:
            raise PermissionDenied("file was not opened for reading")
        if self.state.clone is not None:  # not changed yet: the grid file's bytes
            return await self.writers.read_clone(self.state.clone, offset, length)
        return self._staged().read(offset, length)

    @grid_boundary
    async def write(self, offset: int, data: bytes) -> None:
        """Write into the staged file (at the end, for an appending handle)."""
        if self.state.clone is not None:
            await self.writers.materialize(self.state)
        staged = self._staged()
        staged.write(staged.size if self.append else offset, data)
        self.state.dirty = True
        self.state.meta.mtime = self.writers.now()  # as a write(2) sets it

    @grid_boundary
    async def stat(self) -> FileAttributes:
        """The file as written so far."""
        return self.state.attributes(self.writers.now())

    @grid_boundary
    async def setattr(self, changes: SetAttributes) -> None:
        """Truncate/extend, or set mode and times, on the open file."""
        await self.writers.apply_local(self.state, changes)

    @grid_boundary
    async def fsync(self) -> None:
        """Return once these contents are durable in the grid."""
        await self.writers.fsync(self.state)

    @grid_boundary
    async def close(self) -> None:
        """Close; the last handle's close publishes the file."""
        if self.closed:
            return
        self.closed = True
        await self.writers.close(self.state)

    @grid_boundary
    async def abort(self) -> None:
        """The client went away without closing: this handle's writes alone publish nothing."""
        if self.closed:
            return
        self.closed = True
        await self.writers.abort(self.state)


@define(eq=False)
class StagedReader:
    """Reads a staged file through its own descriptor, so it outlives the staged file's removal."""

    fd: int

    @classmethod
    def of(cls, staged: StagedFile) -> StagedReader:
        """A reader sharing the staged file's bytes (later writes included)."""
        return cls(os.dup(staged.fd))

    async def read(self, offset: int, length: int) -> bytes:
        """Bytes at offset, clamped at the file's current end."""
        return os.pread(self.fd, length, offset)

    def close(self) -> None:
        """Release the descriptor."""
        os.close(self.fd)


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

    async def read(self, offset: int, length: int) -> bytes:
        """Read a range."""
        return await self.read_range(offset, length)

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
