"""The audit log's view of an SFTP session: its filesystem, recording every change made.

When the node keeps an audit log, each SFTP session's
:class:`~gateway.fs.interfaces.IFilesystem` is wrapped in an
:class:`AuditedFilesystem` (:meth:`gateway.sftp.part.SFTPPart.sftp_server`),
which records one event per operation that changes something: ``open`` (for
writing), ``close`` (of a file opened for writing), ``remove``, ``rename``,
``mkdir``, ``rmdir``, ``setstat`` (SETSTAT, LSETSTAT and FSETSTAT) and
``symlink``, each with its ``outcome``: ``ok``, or the SFTP status the client
was sent (from the one table :data:`~gateway.sftp.server.STATUS_FOR_ERROR`)
and the message, or ``aborted`` for a written file whose session ended
without a CLOSE (nothing it wrote was published). Reads, listings and stats are
not recorded. Paths are the account-relative, NFC-normalized paths the user
sees, ``.`` and ``..`` resolved; a renamed open file's ``close`` names where it
is now. Requests refused before they reach the filesystem (a name that is not
UTF-8, too many open handles) are not recorded.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Awaitable
from typing import Any, TypeVar

from attrs import define, field
from twisted.conch.ssh.filetransfer import (
    FX_BAD_MESSAGE,
    FX_FAILURE,
    FX_NO_SUCH_FILE,
    FX_OP_UNSUPPORTED,
    FX_PERMISSION_DENIED,
)
from zope.interface import implementer

from gateway.audit.events import Client, IAuditLog
from gateway.fs.errors import FSError
from gateway.fs.interfaces import (
    FileAttributes,
    FilesystemStats,
    IFilesystem,
    IOpenFile,
    OpenFlags,
    SetAttributes,
)
from gateway.fs.paths import join, split
from gateway.sftp.server import sftp_error

__all__ = ["STATUS_NAMES", "AuditedFile", "AuditedFilesystem", "SessionAudit", "shown_path"]

R = TypeVar("R")

#: The ``outcome`` of an operation that failed with an SFTP status.
STATUS_NAMES = {
    FX_NO_SUCH_FILE: "no_such_file",
    FX_PERMISSION_DENIED: "permission_denied",
    FX_FAILURE: "failure",
    FX_BAD_MESSAGE: "bad_message",
    FX_OP_UNSUPPORTED: "op_unsupported",
}

_FLAG_NAMES = ("read", "write", "append", "create", "truncate", "exclusive")


def shown_path(path: str) -> str:
    """``path`` as the user sees it in the account: absolute, NFC, ``.`` and ``..``
    resolved (as given, NFC, when it is not a valid path)."""
    try:
        return join(split(path))
    except FSError:
        return unicodedata.normalize("NFC", path)


def outcome(error: BaseException | None) -> dict[str, str]:
    """The ``outcome`` (and ``error``) fields of an operation that ended so."""
    if error is None:
        return {"outcome": "ok"}
    if isinstance(error, FSError):
        code = sftp_error(error).code
        return {"outcome": STATUS_NAMES.get(code, str(code)), "error": str(error)}
    return {"outcome": "failure", "error": type(error).__name__}


def changed_attributes(changes: SetAttributes) -> dict[str, Any]:
    """The attributes a SETSTAT changes, with their new values (mode in octal)."""
    shown: dict[str, Any] = {}
    if changes.size is not None:
        shown["size"] = changes.size
    if changes.mode is not None:
        shown["mode"] = f"{changes.mode:04o}"
    if changes.mtime is not None:
        shown["mtime"] = int(changes.mtime)
    if changes.atime is not None:
        shown["atime"] = int(changes.atime)
    return shown


@define
class SessionAudit:
    """Records the events of one SFTP session, as ``client``."""

    log: IAuditLog
    client: Client

    async def audited(self, event: str, operation: Awaitable[R], **fields: Any) -> R:
        """Await ``operation`` and record ``event`` with its outcome (errors go on up)."""
        try:
            result = await operation
        except BaseException as e:
            self.log.record(event, self.client, **fields, **outcome(e))
            raise
        self.log.record(event, self.client, **fields, **outcome(None))
        return result


@implementer(IOpenFile)
@define(eq=False)
class AuditedFile:
    """An open file whose attribute changes are recorded, and its close when it was opened
    for writing (with the bytes the client wrote through it)."""

    inner: IOpenFile
    audit: SessionAudit
    writing: bool
    written: int = field(default=0, init=False)

    @property
    def path(self) -> str:
        """Where the file is now (it follows renames)."""
        return str(self.inner.path)

    async def read(self, offset: int, length: int) -> bytes:
        """Read (not recorded)."""
        return await self.inner.read(offset, length)

    def read_ready(self, offset: int, length: int) -> bytes | None:
        """Read without waiting, when the file can (not recorded)."""
        return self.inner.read_ready(offset, length)

    async def write(self, offset: int, data: bytes) -> None:
        """Write (counted, not recorded one by one)."""
        await self.inner.write(offset, data)
        self.written += len(data)

    async def stat(self) -> FileAttributes:
        """The file's attributes (not recorded)."""
        return await self.inner.stat()

    async def setattr(self, changes: SetAttributes) -> None:
        """FSETSTAT: recorded as ``setstat``."""
        await self.audit.audited(
            "setstat",
            self.inner.setattr(changes),
            path=self.path,
            attributes=changed_attributes(changes),
        )

    async def fsync(self) -> None:
        """fsync (not recorded)."""
        await self.inner.fsync()

    async def close(self) -> None:
        """CLOSE: recorded for a file opened for writing."""
        if not self.writing:
            await self.inner.close()
            return
        await self.audit.audited("close", self.inner.close(), path=self.path, bytes=self.written)

    async def abort(self) -> None:
        """The session ended without a CLOSE: a written file is recorded as ``aborted``."""
        path = self.path
        await self.inner.abort()
        if self.writing:
            self.audit.log.record(
                "close", self.audit.client, path=path, bytes=self.written, outcome="aborted"
            )


def _inner(file: IOpenFile) -> IOpenFile:
    return file.inner if isinstance(file, AuditedFile) else file


@implementer(IFilesystem)
@define
class AuditedFilesystem:
    """A session's filesystem whose changes are recorded in the audit log."""

    inner: IFilesystem
    audit: SessionAudit

    @property
    def read_only(self) -> bool:
        """Whether the session may change anything."""
        return bool(self.inner.read_only)

    async def realpath(self, path: str) -> str:
        """REALPATH (not recorded)."""
        return await self.inner.realpath(path)

    async def stat(self, path: str, follow_symlinks: bool = True) -> FileAttributes:
        """STAT, LSTAT (not recorded)."""
        return await self.inner.stat(path, follow_symlinks)

    async def list(self, path: str) -> list[tuple[str, FileAttributes]]:
        """OPENDIR (not recorded)."""
        return await self.inner.list(path)

    async def readlink(self, path: str) -> str:
        """READLINK (not recorded)."""
        return await self.inner.readlink(path)

    async def statvfs(self, path: str) -> FilesystemStats:
        """statvfs (not recorded)."""
        return await self.inner.statvfs(path)

    async def open(self, path: str, flags: OpenFlags, attrs: SetAttributes) -> IOpenFile:
        """OPEN: recorded when for writing (write, append, create or truncate)."""
        writing = flags.write or flags.create or flags.truncate
        if not writing:
            opened = await self.inner.open(path, flags, attrs)
        else:
            opened = await self.audit.audited(
                "open",
                self.inner.open(path, flags, attrs),
                path=shown_path(path),
                flags=[name for name in _FLAG_NAMES if getattr(flags, name)],
            )
        return AuditedFile(opened, self.audit, writing)

    async def mkdir(self, path: str, attrs: SetAttributes) -> None:
        """MKDIR."""
        await self.audit.audited(
            "mkdir", self.inner.mkdir(path, attrs), path=shown_path(path), **_mode(attrs)
        )

    async def rmdir(self, path: str) -> None:
        """RMDIR."""
        await self.audit.audited("rmdir", self.inner.rmdir(path), path=shown_path(path))

    async def remove(self, path: str) -> None:
        """REMOVE."""
        await self.audit.audited("remove", self.inner.remove(path), path=shown_path(path))

    async def rename(self, old: str, new: str, overwrite: bool) -> None:
        """RENAME and posix-rename (``overwrite``)."""
        await self.audit.audited(
            "rename",
            self.inner.rename(old, new, overwrite),
            **{"from": shown_path(old), "to": shown_path(new)},
            overwrite=overwrite,
        )

    async def symlink(self, link_path: str, target: str) -> None:
        """SYMLINK."""
        await self.audit.audited(
            "symlink",
            self.inner.symlink(link_path, target),
            path=shown_path(link_path),
            target=target,
        )

    async def setattr(
        self, path: str, changes: SetAttributes, follow_symlinks: bool = True
    ) -> None:
        """SETSTAT and LSETSTAT."""
        await self.audit.audited(
            "setstat",
            self.inner.setattr(path, changes, follow_symlinks),
            path=shown_path(path),
            attributes=changed_attributes(changes),
        )

    async def copy_data(
        self, source: IOpenFile, read_offset: int, length: int, target: IOpenFile, write_offset: int
    ) -> None:
        """copy-data between two open files (the target's ``close`` records the change)."""
        await self.inner.copy_data(
            _inner(source), read_offset, length, _inner(target), write_offset
        )


def _mode(attrs: SetAttributes) -> dict[str, str]:
    return {"mode": f"{attrs.mode:04o}"} if attrs.mode is not None else {}
