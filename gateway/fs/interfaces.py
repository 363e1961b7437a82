"""The filesystem a frontend sees: one :class:`IFilesystem` per user session.

Paths are absolute, '/'-separated text paths inside the account's root (the
root is '/'); the filesystem normalizes them (NFC, '.' and '..' resolved,
never escaping the root). Every method is a coroutine and raises the errors of
:mod:`gateway.fs.errors`.
"""

from __future__ import annotations

import stat as stat_module
from collections.abc import Mapping

from attrs import frozen
from zope.interface import Attribute, Interface

_KIND_BITS = {
    "file": stat_module.S_IFREG,
    "dir": stat_module.S_IFDIR,
    "symlink": stat_module.S_IFLNK,
}


@frozen
class FileAttributes:
    """What stat reports about a file, directory or symlink."""

    kind: str  # "file", "dir" or "symlink"
    size: int
    mode: int  # permission bits only (0o7777); the type bits follow from kind
    mtime: float
    atime: float
    ctime: float = 0.0
    nlink: int = 1

    @property
    def st_mode(self) -> int:
        """Type and permission bits, as in st_mode."""
        return _KIND_BITS[self.kind] | (self.mode & 0o7777)


@frozen
class SetAttributes:
    """Attribute changes a client asks for; None leaves a field alone."""

    size: int | None = None
    mode: int | None = None
    mtime: float | None = None
    atime: float | None = None


@frozen
class OpenFlags:
    """How a file is opened (the POSIX/SFTP flags)."""

    read: bool = False
    write: bool = False
    append: bool = False
    create: bool = False
    truncate: bool = False
    exclusive: bool = False


@frozen
class FilesystemStats:
    """statvfs figures: real grid capacity as the gateway knows it."""

    block_size: int
    total_blocks: int
    free_blocks: int
    available_blocks: int
    total_files: int
    free_files: int
    max_name_length: int = 255


class IOpenFile(Interface):
    """One open handle."""

    path = Attribute("str: the path the handle is open on (follows renames).")

    async def read(offset: int, length: int) -> bytes:
        """Read up to ``length`` bytes at ``offset``; b'' at end of file."""

    def read_ready(offset: int, length: int) -> bytes | None:
        """What :meth:`read` would answer, when that needs no waiting (the bytes are in a
        local file); None otherwise, and for anything :meth:`read` would refuse."""

    async def write(offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` (appending handles write at the end)."""

    async def stat() -> FileAttributes:
        """The file's attributes as this handle sees them (including unflushed writes)."""

    async def setattr(changes: SetAttributes) -> None:
        """Change size (truncate or extend), mode or times through the handle."""

    async def fsync() -> None:
        """Return once this handle's contents are durable in the grid."""

    async def close() -> None:
        """Close the handle; the last close of a written file publishes it."""

    async def abort() -> None:
        """The client vanished without closing: drop this handle, publishing nothing of its own."""


class IFilesystem(Interface):
    """A user's view of their root directory."""

    read_only = Attribute("bool: whether the session may change anything.")

    async def realpath(path: str) -> str:
        """The canonical absolute form of ``path``, symbolic links resolved (its last
        component need not exist)."""

    async def stat(path: str, follow_symlinks: bool = True) -> FileAttributes:
        """Attributes of the object at ``path``."""

    async def list(path: str) -> list[tuple[str, FileAttributes]]:
        """A directory's entries with their attributes."""

    async def open(path: str, flags: OpenFlags, attrs: SetAttributes) -> IOpenFile:
        """Open (and maybe create or truncate) a file."""

    async def mkdir(path: str, attrs: SetAttributes) -> None:
        """Create a directory; FileExists when the name is taken."""

    async def rmdir(path: str) -> None:
        """Remove an empty directory; DirectoryNotEmpty otherwise."""

    async def remove(path: str) -> None:
        """Remove a file or symlink (IsADirectory for a directory)."""

    async def rename(old: str, new: str, overwrite: bool) -> None:
        """Rename; with ``overwrite`` an existing target is replaced atomically."""

    async def symlink(link_path: str, target: str) -> None:
        """Create a symlink entry at ``link_path`` pointing at ``target`` (stored, not followed)."""

    async def readlink(path: str) -> str:
        """The target stored in a symlink entry."""

    async def setattr(path: str, changes: SetAttributes, follow_symlinks: bool = True) -> None:
        """Change a path's size, mode or times (a symbolic link's own times, when not
        following symlinks)."""

    async def statvfs(path: str) -> FilesystemStats:
        """Capacity figures for the filesystem holding ``path``."""

    async def copy_data(
        source: IOpenFile, read_offset: int, length: int, target: IOpenFile, write_offset: int
    ) -> None:
        """Copy ``length`` bytes (0: to the end) of ``source`` from ``read_offset`` into
        ``target`` at ``write_offset``, on the server (a whole grid file is linked)."""


class ICapabilities(Interface):
    """The grid objects behind paths, for tools that work with capabilities (the CLI's
    ``ls --caps``, ``check``). Capabilities are secrets: only their owner asks."""

    async def capability(path: str) -> object | None:
        """The capability linked at ``path`` (the root's own for ``/``); None for a symbolic
        link. FileExists while the file is still being written or uploaded."""

    async def linked_capabilities(path: str) -> Mapping[str, object | None]:
        """Each entry of the directory at ``path`` that is linked in the grid, by name, with
        its capability (None for a symbolic link)."""
