"""Conch's ISFTPServer as a thin adapter over the gateway's filesystem layer.

The wire side (packets, dispatch, timing) is :mod:`gateway.sftp.protocol`.

Each SFTP operation is one call into :class:`~gateway.fs.interfaces.IFilesystem`;
this module only converts wire values (byte paths, flag words, attribute
dicts) to the filesystem's types and back, and maps filesystem errors to SFTP
status codes in one table (:data:`STATUS_FOR_ERROR`), the way OpenSSH's
sftp-server maps errno values.

Compatibility notes:

- SYMLINK: OpenSSH (and sshfs, paramiko) send the *target* first and the
  link path second, the reverse of the draft; Conch passes them on in wire
  order, so :meth:`GatewaySFTPServer.makeLink` swaps them back, as
  OpenSSH's own server does.
- RENAME without the posix-rename extension fails on an existing target
  (SFTP v3), unless the account has ``rename_overwrites`` (sshfs/WebEx).
- hardlink@openssh.com is not offered: a capability grid has no inode whose
  link count could be honoured.
"""

from __future__ import annotations

import functools
import os
import stat as stat_module
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ParamSpec, TypeVar

from attrs import define, frozen
from twisted.conch.interfaces import ISFTPFile, ISFTPServer
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.filetransfer import (
    FX_BAD_MESSAGE,
    FX_FAILURE,
    FX_NO_SUCH_FILE,
    FX_OK,
    FX_OP_UNSUPPORTED,
    FX_PERMISSION_DENIED,
    FXF_APPEND,
    FXF_CREAT,
    FXF_EXCL,
    FXF_READ,
    FXF_TRUNC,
    FXF_WRITE,
    SFTPError,
)
from twisted.internet.defer import Deferred
from zope.interface import implementer

from gateway.fs import errors
from gateway.fs.interfaces import (
    FileAttributes,
    FilesystemStats,
    IFilesystem,
    IOpenFile,
    OpenFlags,
    SetAttributes,
)
from gateway.sftp.packets import parse_attributes
from gateway.sftp.sessions import ISessionObserver

#: The one place filesystem errors become SFTP status codes.
STATUS_FOR_ERROR: dict[type[errors.FSError], int] = {
    errors.NoSuchFile: FX_NO_SUCH_FILE,
    errors.NotADirectory: FX_NO_SUCH_FILE,
    errors.PermissionDenied: FX_PERMISSION_DENIED,
    errors.InvalidName: FX_BAD_MESSAGE,
    errors.InvalidArgument: FX_BAD_MESSAGE,
    errors.NotSupported: FX_OP_UNSUPPORTED,
    errors.FileExists: FX_FAILURE,
    errors.IsADirectory: FX_FAILURE,
    errors.DirectoryNotEmpty: FX_FAILURE,
    errors.NoSpace: FX_FAILURE,
    errors.GridUnavailable: FX_FAILURE,
}

#: Limits we announce (limits@openssh.com), as OpenSSH's sftp-server does.
MAX_PACKET = 256 * 1024
MAX_READ_WRITE = MAX_PACKET - 1024
MAX_OPEN_HANDLES = 1024

EXTENSIONS = {
    b"posix-rename@openssh.com": b"1",
    b"statvfs@openssh.com": b"2",
    b"fstatvfs@openssh.com": b"2",
    b"fsync@openssh.com": b"1",
    b"lsetstat@openssh.com": b"1",
    b"limits@openssh.com": b"1",
    b"expand-path@openssh.com": b"1",
    b"copy-data": b"1",
    b"home-directory": b"1",
    b"users-groups-by-id@openssh.com": b"1",
}


@frozen
class NameReply:
    """An extension's answer that goes back as SSH_FXP_NAME (one path), not as
    SSH_FXP_EXTENDED_REPLY: expand-path@openssh.com and home-directory."""

    path: bytes

P = ParamSpec("P")
R = TypeVar("R")


def sftp_error(error: errors.FSError) -> SFTPError:
    """The SFTPError a client is sent for a filesystem error."""
    code = next((c for kind, c in STATUS_FOR_ERROR.items() if isinstance(error, kind)), FX_FAILURE)
    return SFTPError(code, ascii_message(str(error) or type(error).__name__))


def ascii_message(text: str) -> str:
    """A status message Conch can send: it encodes messages as ASCII, and a message it
    cannot encode is never answered at all (the client hangs), so non-ASCII names are
    escaped."""
    return text.encode("ascii", "backslashreplace").decode("ascii")


def _translated(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Run a coroutine method, turning filesystem errors into SFTP statuses."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except errors.FSError as e:
            raise sftp_error(e) from None

    return wrapper


def decode_path(path: bytes) -> str:
    """A wire path as text; invalid UTF-8 is refused with a clear message."""
    try:
        return path.decode("utf-8")
    except UnicodeDecodeError:
        raise SFTPError(FX_BAD_MESSAGE, "file name is not valid UTF-8") from None


def open_flags(flags: int) -> OpenFlags:
    """SSH_FXF_* bits as OpenFlags."""
    return OpenFlags(
        read=bool(flags & FXF_READ),
        write=bool(flags & (FXF_WRITE | FXF_APPEND)),
        append=bool(flags & FXF_APPEND),
        create=bool(flags & FXF_CREAT),
        truncate=bool(flags & FXF_TRUNC),
        exclusive=bool(flags & FXF_EXCL),
    )


def set_attributes(attrs: dict[str, Any]) -> SetAttributes:
    """A client's attribute dict as SetAttributes (uid/gid are ignored)."""
    mtime = attrs.get("mtime")
    atime = attrs.get("atime")
    return SetAttributes(
        size=attrs.get("size"),
        mode=(attrs["permissions"] & 0o7777) if "permissions" in attrs else None,
        mtime=float(mtime) if mtime is not None else None,
        atime=float(atime) if atime is not None else None,
    )


def attribute_dict(attrs: FileAttributes, uid: int, gid: int) -> dict[str, int]:
    """FileAttributes as the attribute dict Conch packs."""
    return {
        "size": attrs.size,
        "uid": uid,
        "gid": gid,
        "permissions": attrs.st_mode,
        "atime": int(attrs.atime),
        "mtime": int(attrs.mtime),
    }


def long_name(name: str, attrs: FileAttributes, user: str, now: float) -> str:
    """An ``ls -l`` line for READDIR, formatted as OpenSSH's sftp-server does."""
    mode = stat_module.filemode(attrs.st_mode)
    when = time.localtime(attrs.mtime)
    recent = now - 182 * 86400 < attrs.mtime <= now + 3600
    date = time.strftime("%b %d %H:%M" if recent else "%b %d  %Y", when)
    owner = user[:8]
    return f"{mode} {attrs.nlink:3d} {owner:<8} {owner:<8} {attrs.size:8d} {date} {name}"


def pack_statvfs(stats: FilesystemStats) -> bytes:
    """The statvfs@openssh.com reply body (eleven uint64s)."""
    return struct.pack(
        "!11Q",
        stats.block_size,
        stats.block_size,
        stats.total_blocks,
        stats.free_blocks,
        stats.available_blocks,
        stats.total_files,
        stats.free_files,
        stats.free_files,
        0,
        0,
        stats.max_name_length,
    )


@implementer(ISFTPFile)
@define(eq=False)
class SFTPHandle:
    """An open file as Conch sees it (identity-hashed: Conch's handle is hash(self))."""

    file: IOpenFile
    server: GatewaySFTPServer

    @_translated
    async def readChunk(self, offset: int, length: int) -> bytes:
        """READ: b'' means end of file (Conch answers EOF)."""
        data = await self.file.read(offset, min(length, MAX_READ_WRITE))
        if self.server.session is not None:
            self.server.session.transferred(self, len(data), received=False)
        return data

    @_translated
    async def writeChunk(self, offset: int, data: bytes) -> None:
        """WRITE."""
        await self.file.write(offset, data)
        if self.server.session is not None:
            self.server.session.transferred(self, len(data), received=True)

    @_translated
    async def getAttrs(self) -> dict[str, int]:
        """FSTAT."""
        return self.server.attributes(await self.file.stat())

    @_translated
    async def setAttrs(self, attrs: dict[str, Any]) -> None:
        """FSETSTAT."""
        await self.file.setattr(set_attributes(attrs))

    @_translated
    async def close(self) -> None:
        """CLOSE: publishes the file (or journals it for upload)."""
        self.server.forget(self)
        await self.file.close()

    def abort(self) -> Deferred[None]:
        """The session ended without a CLOSE: nothing this handle wrote is published."""
        self.server.forget(self)
        return Deferred.fromCoroutine(self.file.abort())


@define(eq=False)
class DirectoryListing:
    """An open directory: the entries read at OPENDIR, handed out by READDIR."""

    entries: Iterator[tuple[bytes, bytes, dict[str, int]]]

    def __iter__(self) -> Iterator[tuple[bytes, bytes, dict[str, int]]]:
        return self.entries

    def __next__(self) -> tuple[bytes, bytes, dict[str, int]]:
        return next(self.entries)

    def close(self) -> None:
        """CLOSE of a directory handle."""


@implementer(ISFTPServer)
class GatewaySFTPServer:
    """One SFTP session of one account, over that account's filesystem."""

    def __init__(
        self,
        fs: IFilesystem,
        *,
        user: str,
        rename_overwrites: bool = False,
        clock: Callable[[], float] = time.time,
        session: ISessionObserver | None = None,
    ):
        self.avatar = None
        self.session = session
        self._fs = fs
        self._user = user
        self._rename_overwrites = rename_overwrites
        self._clock = clock
        self._uid = os.getuid()
        self._gid = os.getgid()
        self._handles: dict[bytes, SFTPHandle] = {}

    # -- helpers -----------------------------------------------------------------

    def attributes(self, attrs: FileAttributes) -> dict[str, int]:
        """FileAttributes as Conch's dict, owned by the gateway's user."""
        return attribute_dict(attrs, self._uid, self._gid)

    def forget(self, handle: SFTPHandle) -> None:
        """A handle is closing: extensions can no longer find it."""
        self._handles.pop(str(hash(handle)).encode(), None)
        if self.session is not None:
            self.session.closed(handle)

    def _handle(self, wire_handle: bytes, code: int = FX_FAILURE) -> SFTPHandle:
        try:
            return self._handles[wire_handle]
        except KeyError:
            raise SFTPError(code, "no such open file handle") from None

    # -- ISFTPServer ---------------------------------------------------------------

    def gotVersion(self, otherVersion: int, extData: dict[bytes, bytes]) -> dict[bytes, bytes]:
        """INIT: announce our extensions."""
        return dict(EXTENSIONS)

    @_translated
    async def openFile(self, filename: bytes, flags: int, attrs: dict[str, Any]) -> SFTPHandle:
        """OPEN."""
        opened = await self._fs.open(
            decode_path(filename), open_flags(flags), set_attributes(attrs)
        )
        handle = SFTPHandle(opened, self)
        self._handles[str(hash(handle)).encode()] = handle
        if self.session is not None:
            writing = bool(flags & (FXF_WRITE | FXF_APPEND | FXF_TRUNC))
            size = None if writing else (await opened.stat()).size
            self.session.opened(handle, opened.path, writing, size)
        return handle

    @_translated
    async def removeFile(self, filename: bytes) -> None:
        """REMOVE."""
        await self._fs.remove(decode_path(filename))

    @_translated
    async def renameFile(self, oldpath: bytes, newpath: bytes) -> None:
        """RENAME: fails on an existing target unless the account says otherwise."""
        await self._fs.rename(
            decode_path(oldpath), decode_path(newpath), overwrite=self._rename_overwrites
        )

    @_translated
    async def makeDirectory(self, path: bytes, attrs: dict[str, Any]) -> None:
        """MKDIR."""
        await self._fs.mkdir(decode_path(path), set_attributes(attrs))

    @_translated
    async def removeDirectory(self, path: bytes) -> None:
        """RMDIR: only an empty directory."""
        await self._fs.rmdir(decode_path(path))

    @_translated
    async def openDirectory(self, path: bytes) -> DirectoryListing:
        """OPENDIR: read the whole listing now; READDIR hands it out in batches."""
        entries = await self._fs.list(decode_path(path))
        now = self._clock()
        rows = [
            (
                name.encode("utf-8"),
                long_name(name, attrs, self._user, now).encode("utf-8"),
                self.attributes(attrs),
            )
            for name, attrs in entries
        ]
        return DirectoryListing(iter(rows))

    @_translated
    async def getAttrs(self, path: bytes, followLinks: bool) -> dict[str, int]:
        """STAT and LSTAT."""
        return self.attributes(await self._fs.stat(decode_path(path), bool(followLinks)))

    @_translated
    async def setAttrs(self, path: bytes, attrs: dict[str, Any]) -> None:
        """SETSTAT."""
        await self._fs.setattr(decode_path(path), set_attributes(attrs))

    @_translated
    async def readLink(self, path: bytes) -> bytes:
        """READLINK."""
        return (await self._fs.readlink(decode_path(path))).encode("utf-8")

    @_translated
    async def makeLink(self, linkPath: bytes, targetPath: bytes) -> None:
        """SYMLINK: Conch's arguments are in wire order, which OpenSSH sends as (target, link)."""
        target, link = linkPath, targetPath
        await self._fs.symlink(decode_path(link), decode_path(target))

    @_translated
    async def realPath(self, path: bytes) -> bytes:
        """REALPATH."""
        return (await self._fs.realpath(decode_path(path))).encode("utf-8")

    async def extendedRequest(
        self, extendedName: bytes, extendedData: bytes
    ) -> bytes | NameReply:
        """EXTENDED: the openssh.com extensions we announce."""
        handler = self._extensions().get(extendedName)
        if handler is None:
            raise NotImplementedError(
                f"extension {extendedName.decode('ascii', 'replace')} is not supported"
            )
        try:
            return await handler(extendedData)
        except errors.FSError as e:
            raise sftp_error(e) from None
        except (ValueError, struct.error):
            raise SFTPError(FX_BAD_MESSAGE, "malformed extension request") from None

    def _extensions(self) -> dict[bytes, Callable[[bytes], Awaitable[bytes | NameReply]]]:
        return {
            b"posix-rename@openssh.com": self._posix_rename,
            b"statvfs@openssh.com": self._statvfs,
            b"fstatvfs@openssh.com": self._fstatvfs,
            b"fsync@openssh.com": self._fsync,
            b"lsetstat@openssh.com": self._lsetstat,
            b"limits@openssh.com": self._limits,
            b"expand-path@openssh.com": self._expand_path,
            b"copy-data": self._copy_data,
            b"home-directory": self._home_directory,
            b"users-groups-by-id@openssh.com": self._users_groups_by_id,
        }

    async def _posix_rename(self, data: bytes) -> bytes:
        old, rest = getNS(data)
        new, _ = getNS(rest)
        await self._fs.rename(decode_path(old), decode_path(new), overwrite=True)
        raise SFTPError(FX_OK, "renamed")

    async def _statvfs(self, data: bytes) -> bytes:
        path, _ = getNS(data)
        return pack_statvfs(await self._fs.statvfs(decode_path(path)))

    async def _fstatvfs(self, data: bytes) -> bytes:
        wire_handle, _ = getNS(data)
        return pack_statvfs(await self._fs.statvfs(self._handle(wire_handle).file.path))

    async def _fsync(self, data: bytes) -> bytes:
        wire_handle, _ = getNS(data)
        await self._handle(wire_handle, FX_NO_SUCH_FILE).file.fsync()
        raise SFTPError(FX_OK, "synced")

    async def _limits(self, data: bytes) -> bytes:
        return struct.pack("!4Q", MAX_PACKET, MAX_READ_WRITE, MAX_READ_WRITE, MAX_OPEN_HANDLES)

    async def _lsetstat(self, data: bytes) -> bytes:
        """SETSTAT that changes a symbolic link itself (its times), not what it points at."""
        path, rest = getNS(data)
        attrs = parse_attributes(rest)
        await self._fs.setattr(decode_path(path), set_attributes(attrs), follow_symlinks=False)
        raise SFTPError(FX_OK, "attributes set")

    async def _expand_path(self, data: bytes) -> NameReply:
        """``~`` and ``~/...`` name the account's root (its home); then as REALPATH."""
        path, _ = getNS(data)
        text = decode_path(path)
        if text == "~" or text.startswith("~/"):
            text = "/" + text[1:]
        elif text.startswith("~"):
            name = text[1:].split("/", 1)[0]
            if name != self._user:
                raise SFTPError(FX_NO_SUCH_FILE, "no such user")
            text = "/" + text[1 + len(name) :]
        return NameReply((await self._fs.realpath(text)).encode("utf-8"))

    async def _home_directory(self, data: bytes) -> NameReply:
        """The home of the account (its root); no other user is known here."""
        name, _ = getNS(data)
        if name and name.decode("utf-8", "replace") != self._user:
            raise SFTPError(FX_FAILURE, "no such user")
        return NameReply(b"/")

    async def _copy_data(self, data: bytes) -> bytes:
        """Server-side copy between two open handles; a whole grid file is linked."""
        read_handle, rest = getNS(data)
        read_offset, length = struct.unpack_from("!QQ", rest)
        write_handle, rest = getNS(rest[16:])
        (write_offset,) = struct.unpack_from("!Q", rest)
        source = self._handle(read_handle).file
        target = self._handle(write_handle).file
        await self._fs.copy_data(source, read_offset, length, target, write_offset)
        raise SFTPError(FX_OK, "copied")

    async def _users_groups_by_id(self, data: bytes) -> bytes:
        """Names for owner ids in ``ls -l``: every file is the account's, so is every id."""
        uids, rest = getNS(data)
        gids, _ = getNS(rest)

        def names(packed: bytes, mine: int) -> bytes:
            ids = struct.unpack(f"!{len(packed) // 4}L", packed[: len(packed) // 4 * 4])
            return NS(b"".join(NS(self._user.encode() if i == mine else b"") for i in ids))

        return names(uids, self._uid) + names(gids, self._gid)
