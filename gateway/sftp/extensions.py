"""The SFTP extensions the gateway serves: one table, and the interface that serves them.

:data:`EXTENSIONS` is the one declaration of every extension: its name and
version (announced at INIT, :func:`announcement`) and how a request is served
(read by :class:`~gateway.sftp.protocol.GatewayFileTransferServer`). Each entry
reads the request's fields, resolves its handles among the protocol's open
files, calls one typed method of :class:`IGatewaySFTPServer` (the ISFTPServer
that also serves extensions, :class:`~gateway.sftp.server.GatewaySFTPServer`)
and says how the answer goes back: an EXTENDED_REPLY body (``bytes``), one path
as SSH_FXP_NAME (:class:`NameReply`) or an FX_OK status (:class:`StatusReply`).

So the wire format of extension requests and replies lives here, and the
adapter only sees paths, numbers, attribute dicts and open handles. A handle
that is not open is answered with the entry's ``unknown_handle`` status (as
OpenSSH answers it: FX_NO_SUCH_FILE for fsync, FX_FAILURE otherwise); the
adapter raises :class:`UnknownHandle` for a handle that is closing.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable

from attrs import astuple, frozen
from twisted.conch.interfaces import ISFTPFile, ISFTPServer
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.filetransfer import FX_FAILURE, FX_NO_SUCH_FILE

from gateway.sftp.packets import parse_attributes

__all__ = [
    "EXTENSIONS",
    "EXTENSION_BY_NAME",
    "MAX_OPEN_HANDLES",
    "MAX_PACKET",
    "MAX_READ_WRITE",
    "Extension",
    "IGatewaySFTPServer",
    "NameReply",
    "StatVFS",
    "StatusReply",
    "UnknownHandle",
    "announcement",
]

#: Limits we announce (limits@openssh.com), as OpenSSH's sftp-server does.
MAX_PACKET = 256 * 1024
MAX_READ_WRITE = MAX_PACKET - 1024
MAX_OPEN_HANDLES = 1024


class UnknownHandle(LookupError):
    """A request names a handle that is not open (never was, or is closing)."""


@frozen
class StatVFS:
    """A filesystem's statistics as statvfs@openssh.com sends them (POSIX ``struct statvfs``)."""

    bsize: int
    frsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    favail: int
    fsid: int
    flag: int
    namemax: int


@frozen
class NameReply:
    """An extension's answer that goes back as SSH_FXP_NAME (one path), not as
    SSH_FXP_EXTENDED_REPLY: expand-path@openssh.com and home-directory."""

    path: bytes


@frozen
class StatusReply:
    """An extension's answer that is an FX_OK status with this message."""

    message: bytes


class IGatewaySFTPServer(ISFTPServer):
    """An ISFTPServer that also serves the extensions of :data:`EXTENSIONS`.

    Paths are wire bytes (as in ISFTPServer); handles are the open files the
    server returned from ``openFile``. A method given a handle that is closing
    raises :class:`UnknownHandle`. Results are awaitables, errors SFTPErrors.
    """

    def posixRename(oldpath: bytes, newpath: bytes) -> Awaitable[None]:
        """posix-rename@openssh.com: rename, replacing an existing target."""

    def statVFS(path: bytes) -> Awaitable[StatVFS]:
        """statvfs@openssh.com: the statistics of the filesystem holding ``path``."""

    def fstatVFS(handle: ISFTPFile) -> Awaitable[StatVFS]:
        """fstatvfs@openssh.com: the statistics of the filesystem holding an open file."""

    def fsync(handle: ISFTPFile) -> Awaitable[None]:
        """fsync@openssh.com: make what was written to an open file durable."""

    def setLinkAttrs(path: bytes, attrs: dict[str, int]) -> Awaitable[None]:
        """lsetstat@openssh.com: SETSTAT of a symbolic link itself, not what it points at."""

    def expandPath(path: bytes) -> Awaitable[bytes]:
        """expand-path@openssh.com: REALPATH after expanding ``~`` and ``~user``."""

    def homeDirectory(username: bytes) -> Awaitable[bytes]:
        """home-directory: the home of ``username`` (the session's user when empty)."""

    def copyData(
        source: ISFTPFile, read_offset: int, length: int, target: ISFTPFile, write_offset: int
    ) -> Awaitable[None]:
        """copy-data: copy ``length`` bytes (0: to the end) between two open files."""

    def usersGroupsById(
        uids: list[int], gids: list[int]
    ) -> Awaitable[tuple[list[bytes], list[bytes]]]:
        """users-groups-by-id@openssh.com: a name for each id (empty when unknown)."""


#: Looks up an open file by its wire handle; raises :class:`UnknownHandle`.
OpenFileLookup = Callable[[bytes], ISFTPFile]
#: What an extension answers.
Reply = bytes | NameReply | StatusReply
#: Serves one request: the server, the open-file lookup and the request's data.
Serve = Callable[[IGatewaySFTPServer, OpenFileLookup, bytes], Awaitable[Reply]]


@frozen
class Extension:
    """One extension: announced as ``name`` = ``version``, served by ``serve``."""

    name: bytes
    version: bytes
    serve: Serve
    #: The status for a request naming a handle that is not open.
    unknown_handle: int = FX_FAILURE


def _pack_statvfs(stats: StatVFS) -> bytes:
    return struct.pack("!11Q", *astuple(stats))


def _ids(packed: bytes) -> list[int]:
    """A list of uint32 ids (a trailing partial id is ignored, as by OpenSSH)."""
    count = len(packed) // 4
    return list(struct.unpack(f"!{count}L", packed[: count * 4]))


def _names(names: list[bytes]) -> bytes:
    return NS(b"".join(NS(name) for name in names))


async def _posix_rename(server: IGatewaySFTPServer, files: OpenFileLookup, data: bytes) -> Reply:
    old, rest = getNS(data)
    new, _ = getNS(rest)
    await server.posixRename(old, new)
    return StatusReply(b"renamed")


async def _statvfs(server: IGatewaySFTPServer, files: OpenFileLookup, data: bytes) -> Reply:
    path, _ = getNS(data)
    return _pack_statvfs(await server.statVFS(path))


async def _fstatvfs(server: IGatewaySFTPServer, files: OpenFileLookup, data: bytes) -> Reply:
    handle, _ = getNS(data)
    return _pack_statvfs(await server.fstatVFS(files(handle)))


async def _fsync(server: IGatewaySFTPServer, files: OpenFileLookup, data: bytes) -> Reply:
    handle, _ = getNS(data)
    await server.fsync(files(handle))
    return StatusReply(b"synced")


async def _lsetstat(server: IGatewaySFTPServer, files: OpenFileLookup, data: bytes) -> Reply:
    path, rest = getNS(data)
    attrs = parse_attributes(rest)
    await server.setLinkAttrs(path, attrs)
    return StatusReply(b"attributes set")


async def _limits(server: IGatewaySFTPServer, files: OpenFileLookup, data: bytes) -> Reply:
    return struct.pack("!4Q", MAX_PACKET, MAX_READ_WRITE, MAX_READ_WRITE, MAX_OPEN_HANDLES)


async def _expand_path(server: IGatewaySFTPServer, files: OpenFileLookup, data: bytes) -> Reply:
    path, _ = getNS(data)
    return NameReply(await server.expandPath(path))


async def _copy_data(server: IGatewaySFTPServer, files: OpenFileLookup, data: bytes) -> Reply:
    read_handle, rest = getNS(data)
    read_offset, length = struct.unpack_from("!QQ", rest)
    write_handle, rest = getNS(rest[16:])
    (write_offset,) = struct.unpack_from("!Q", rest)
    source = files(read_handle)
    target = files(write_handle)
    await server.copyData(source, read_offset, length, target, write_offset)
    return StatusReply(b"copied")


async def _home_directory(server: IGatewaySFTPServer, files: OpenFileLookup, data: bytes) -> Reply:
    name, _ = getNS(data)
    return NameReply(await server.homeDirectory(name))


async def _users_groups_by_id(
    server: IGatewaySFTPServer, files: OpenFileLookup, data: bytes
) -> Reply:
    uids, rest = getNS(data)
    gids, _ = getNS(rest)
    users, groups = await server.usersGroupsById(_ids(uids), _ids(gids))
    return _names(users) + _names(groups)


#: Every extension served, in the order announced. hardlink@openssh.com is not
#: offered: a capability grid has no inode whose link count could be honoured.
EXTENSIONS: tuple[Extension, ...] = (
    Extension(b"posix-rename@openssh.com", b"1", _posix_rename),
    Extension(b"statvfs@openssh.com", b"2", _statvfs),
    Extension(b"fstatvfs@openssh.com", b"2", _fstatvfs),
    Extension(b"fsync@openssh.com", b"1", _fsync, unknown_handle=FX_NO_SUCH_FILE),
    Extension(b"lsetstat@openssh.com", b"1", _lsetstat),
    Extension(b"limits@openssh.com", b"1", _limits),
    Extension(b"expand-path@openssh.com", b"1", _expand_path),
    Extension(b"copy-data", b"1", _copy_data),
    Extension(b"home-directory", b"1", _home_directory),
    Extension(b"users-groups-by-id@openssh.com", b"1", _users_groups_by_id),
)

EXTENSION_BY_NAME: dict[bytes, Extension] = {extension.name: extension for extension in EXTENSIONS}


def announcement() -> dict[bytes, bytes]:
    """The extensions announced in SSH_FXP_VERSION: name → version, in table order."""
    return {extension.name: extension.version for extension in EXTENSIONS}
