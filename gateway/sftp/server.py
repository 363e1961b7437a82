"""Conch's ISFTPServer as a thin adapter over the gateway's filesystem layer.

Each SFTP operation is one call into :class:`~gateway.fs.interfaces.IFilesystem`;
this module only converts the values Conch hands over (byte paths, flag words,
attribute dicts) to the filesystem's types and back, and maps filesystem errors
to SFTP status codes in one table (:data:`STATUS_FOR_ERROR`), the way OpenSSH's
sftp-server maps errno values. It knows no packet format: the wire side
(packets, dispatch, handles, timing) is :mod:`gateway.sftp.protocol`, and the
extensions are typed methods of
:class:`~gateway.sftp.extensions.IGatewaySFTPServer`, whose requests and
replies :mod:`gateway.sftp.extensions` reads and writes.

Compatibility notes:

- SYMLINK: OpenSSH (and sshfs, paramiko) send the *target* first and the
  link path second, the reverse of the draft; Conch passes them on in wire
  order, so :meth:`GatewaySFTPServer.makeLink` swaps them back, as
  OpenSSH's own server does.
- RENAME without the posix-rename extension fails on an existing target
  (SFTP v3), unless the account has ``rename_overwrites`` (sshfs/WebEx).
- hardlink@openssh.com is not offered (:data:`~gateway.sftp.extensions.EXTENSIONS`).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from attrs import define, field
from twisted.conch.interfaces import ISFTPFile
from twisted.conch.ssh.filetransfer import (
    FX_BAD_MESSAGE,
    FX_FAILURE,
    FX_NO_SUCH_FILE,
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

from gateway.coroutines import eager
from gateway.fs import errors
from gateway.fs.interfaces import (
    FileAttributes,
    FilesystemStats,
    IFilesystem,
    IOpenFile,
    OpenFlags,
    SetAttributes,
)
from gateway.sftp.extensions import (
    MAX_OPEN_HANDLES,
    MAX_READ_WRITE,
    IGatewaySFTPServer,
    StatVFS,
    UnknownHandle,
    announcement,
)
from gateway.sftp.listing import DirectoryListing, packed_entry
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
    errors.FileTooLarge: FX_FAILURE,
    errors.GridUnavailable: FX_FAILURE,
}


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

    async def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except errors.FSError as e:
            raise sftp_error(e) from None

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Deferred[R]:
        # Run at once: a request answered from memory costs no scheduling (see eager).
        return eager(translated(*args, **kwargs))

    # The coroutine itself, for the SFTP layer's direct answers (gateway.sftp.answers).
    wrapper.now = translated  # type: ignore[attr-defined]
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


def statvfs(stats: FilesystemStats) -> StatVFS:
    """FilesystemStats as statvfs@openssh.com answers them."""
    return StatVFS(
        bsize=stats.block_size,
        frsize=stats.block_size,
        blocks=stats.total_blocks,
        bfree=stats.free_blocks,
        bavail=stats.available_blocks,
        files=stats.total_files,
        ffree=stats.free_files,
        favail=stats.free_files,
        fsid=0,
        flag=0,
        namemax=stats.max_name_length,
    )


@implementer(ISFTPFile)
@define(eq=False)
class SFTPHandle:
    """An open file as Conch sees it (identity-hashed: Conch's handle is hash(self)).

    ``closing`` is set once it is closed or aborted: from then on extensions
    refuse it (:class:`~gateway.sftp.extensions.UnknownHandle`).
    """

    file: IOpenFile
    server: GatewaySFTPServer
    closing: bool = field(default=False, init=False)

    @_translated
    async def readChunk(self, offset: int, length: int) -> bytes:
        """READ: b'' means end of file (Conch answers EOF)."""
        data = await self.file.read(offset, min(length, MAX_READ_WRITE))
        if self.server.session is not None:
            self.server.session.transferred(self, len(data), received=False)
        return data

    def read_ready(self, offset: int, length: int) -> bytes | None:
        """READ answered without waiting, when the file's bytes are local (b'': end of
        file); None when it must go the way of :meth:`readChunk`."""
        data = self.file.read_ready(offset, min(length, MAX_READ_WRITE))
        if data is not None and self.server.session is not None:
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


@implementer(IGatewaySFTPServer)
class GatewaySFTPServer:
    """One SFTP session of one account, over that account's filesystem.

    An ISFTPServer, and the typed extension methods of IGatewaySFTPServer. At
    most ``max_handles`` files and directories are open at once (the number
    announced in limits@openssh.com); an OPEN or OPENDIR beyond fails.
    """

    def __init__(
        self,
        fs: IFilesystem,
        *,
        user: str,
        rename_overwrites: bool = False,
        clock: Callable[[], float] = time.time,
        session: ISessionObserver | None = None,
        max_handles: int = MAX_OPEN_HANDLES,
    ):
        self.avatar = None
        self.max_handles = max_handles
        #: Files and directories open, or being opened.
        self.handles = 0
        self.session = session
        self._fs = fs
        self._user = user
        self._rename_overwrites = rename_overwrites
        self._clock = clock
        self._uid = os.getuid()
        self._gid = os.getgid()

    # -- helpers -----------------------------------------------------------------

    def attributes(self, attrs: FileAttributes) -> dict[str, int]:
        """FileAttributes as Conch's dict, owned by the gateway's user."""
        return attribute_dict(attrs, self._uid, self._gid)

    def forget(self, handle: SFTPHandle) -> None:
        """A handle is closing: extensions refuse it from now on."""
        if not handle.closing:
            self.handles -= 1
        handle.closing = True
        if self.session is not None:
            self.session.closed(handle)

    def _take_handle(self) -> None:
        """Count one more open handle, or refuse it with FX_FAILURE."""
        if self.handles >= self.max_handles:
            raise SFTPError(
                FX_FAILURE,
                f"too many open handles: at most {self.max_handles} per session; close some first",
            )
        self.handles += 1

    def _handle_closed(self) -> None:
        self.handles -= 1

    def _open(self, handle: ISFTPFile) -> SFTPHandle:
        """One of this session's handles, not closing; else :class:`UnknownHandle`."""
        if not isinstance(handle, SFTPHandle) or handle.server is not self or handle.closing:
            raise UnknownHandle()
        return handle

    # -- ISFTPServer ---------------------------------------------------------------

    def gotVersion(self, otherVersion: int, extData: dict[bytes, bytes]) -> dict[bytes, bytes]:
        """INIT: announce our extensions."""
        return announcement()

    @_translated
    async def openFile(self, filename: bytes, flags: int, attrs: dict[str, Any]) -> SFTPHandle:
        """OPEN (within the session's limit on open handles)."""
        self._take_handle()
        try:
            opened = await self._fs.open(
                decode_path(filename), open_flags(flags), set_attributes(attrs)
            )
        except BaseException:
            self._handle_closed()
            raise
        handle = SFTPHandle(opened, self)
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
        self._take_handle()
        try:
            entries = await self._fs.list(decode_path(path))
        except BaseException:
            self._handle_closed()
            raise
        now = self._clock()
        rows = [
            packed_entry(name, attrs, self._user, self._uid, self._gid, now)
            for name, attrs in entries
        ]
        return DirectoryListing(rows, self._handle_closed)

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

    def extendedRequest(self, extendedName: bytes, extendedData: bytes) -> bytes:
        """EXTENDED of an extension not in EXTENSIONS (those are the methods below)."""
        name = ascii_message(extendedName[:64].decode("utf-8", "backslashreplace"))
        raise NotImplementedError(f"extension {name} is not supported")

    # -- IGatewaySFTPServer: the extensions ------------------------------------------

    @_translated
    async def posixRename(self, oldpath: bytes, newpath: bytes) -> None:
        """posix-rename@openssh.com: replaces an existing target."""
        await self._fs.rename(decode_path(oldpath), decode_path(newpath), overwrite=True)

    @_translated
    async def statVFS(self, path: bytes) -> StatVFS:
        """statvfs@openssh.com."""
        return statvfs(await self._fs.statvfs(decode_path(path)))

    @_translated
    async def fstatVFS(self, handle: ISFTPFile) -> StatVFS:
        """fstatvfs@openssh.com."""
        return statvfs(await self._fs.statvfs(self._open(handle).file.path))

    @_translated
    async def fsync(self, handle: ISFTPFile) -> None:
        """fsync@openssh.com."""
        await self._open(handle).file.fsync()

    @_translated
    async def setLinkAttrs(self, path: bytes, attrs: dict[str, int]) -> None:
        """lsetstat@openssh.com: changes a symbolic link itself (its times), not its target."""
        await self._fs.setattr(decode_path(path), set_attributes(attrs), follow_symlinks=False)

    @_translated
    async def expandPath(self, path: bytes) -> bytes:
        """``~`` and ``~/...`` name the account's root (its home); then as REALPATH."""
        text = decode_path(path)
        if text == "~" or text.startswith("~/"):
            text = "/" + text[1:]
        elif text.startswith("~"):
            name = text[1:].split("/", 1)[0]
            if name != self._user:
                raise SFTPError(FX_NO_SUCH_FILE, "no such user")
            text = "/" + text[1 + len(name) :]
        return (await self._fs.realpath(text)).encode("utf-8")

    @_translated
    async def homeDirectory(self, username: bytes) -> bytes:
        """The home of the account (its root); no other user is known here."""
        if username and username.decode("utf-8", "replace") != self._user:
            raise SFTPError(FX_FAILURE, "no such user")
        return b"/"

    @_translated
    async def copyData(
        self,
        source: ISFTPFile,
        read_offset: int,
        length: int,
        target: ISFTPFile,
        write_offset: int,
    ) -> None:
        """Server-side copy between two open handles; a whole grid file is linked."""
        source_file = self._open(source).file
        target_file = self._open(target).file
        await self._fs.copy_data(source_file, read_offset, length, target_file, write_offset)

    async def usersGroupsById(
        self, uids: list[int], gids: list[int]
    ) -> tuple[list[bytes], list[bytes]]:
        """Names for owner ids in ``ls -l``: every file is the account's, so is every id."""
        user = self._user.encode()
        return (
            [user if uid == self._uid else b"" for uid in uids],
            [user if gid == self._gid else b"" for gid in gids],
        )
