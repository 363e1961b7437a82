"""SFTP requests answered the moment their result is known, without Deferreds.

Conch's ``FileTransferServer`` handles each request as
``maybeDeferred(method).addCallback(reply).addErrback(status)``, and the gateway's
server methods hand it a Deferred already fired (:func:`gateway.coroutines.eager`).
For a request answered from memory, which is most of them (a STAT, an OPEN, the
CLOSE of a file read), that machinery cost more than the reply: about 6.5 µs of
Deferreds and callbacks per request (timeit, this machine), and an error (an LSTAT
of a name that does not exist yet, which ``cp`` and ``rsync`` send for every file
they copy) captured a traceback into a Failure on top of that.

:class:`DirectAnswers` serves the requests that sshfs, rclone and the OpenSSH
client send most with the same parsing and the same replies as Conch, but calls
the server method's coroutine itself (``method.now``, which
:mod:`gateway.sftp.server` attaches) with :func:`~gateway.coroutines.started`: a
result known at once is replied to at once (1.8 µs in all), an SFTP error is
turned into its status at once, and only a request that waits (for the grid, a
flush) goes through a Deferred, as before. Methods of any other ``ISFTPServer``
or ``ISFTPFile`` (no ``now``) are called as Conch calls them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, cast

from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.filetransfer import (
    FX_FAILURE,
    FX_OK,
    FileTransferServer,
    SFTPError,
)
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from gateway.coroutines import started

__all__ = ["DirectAnswers"]

Reply = Callable[[Any], None]
"""What a request answers once its method's result is known."""


def _ascii(text: str) -> str:
    """A status message Conch can send (non-ASCII characters escaped)."""
    return text.encode("ascii", "backslashreplace").decode("ascii")


def status_message(message: str | bytes) -> bytes:
    """An SFTPError's message as a status carries it: ASCII (Conch sends no other)."""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "backslashreplace")
    return _ascii(str(message)).encode("ascii")


class DirectAnswers(FileTransferServer):
    """Conch's SFTP server with its most frequent requests answered directly.

    OPEN, CLOSE, STAT, LSTAT, FSTAT, SETSTAT, FSETSTAT, OPENDIR, MKDIR, RMDIR,
    REMOVE, RENAME and REALPATH: parsed as Conch parses them, answered with
    Conch's replies and statuses, the result of a method that does not wait
    replied to in the same call (see the module docstring). FSTAT and FSETSTAT
    on a handle that is not open get FX_FAILURE, as from OpenSSH.
    """

    def _answer(
        self,
        request_id: bytes,
        method: Callable[..., Any],
        args: tuple[Any, ...],
        reply: Reply,
        failed: bytes = b"request failed",
    ) -> None:
        """Call ``method(*args)`` and ``reply`` to its result, or send its error's status
        (``failed``: the message of an FX_FAILURE for an error that is not an SFTPError)."""
        now = getattr(method, "now", None)  # a bound method's function's coroutine
        try:
            if now is not None:
                result = started(now(cast(Any, method).__self__, *args))
            else:
                result = method(*args)
        except SFTPError as error:
            self._sendStatus(request_id, error.code, status_message(error.message))
            return
        except Exception:
            self._ebStatus(Failure(), request_id, failed)
            return
        if isinstance(result, Deferred):
            result.addCallback(reply)
            result.addErrback(self._ebStatus, request_id, failed)
            return
        try:
            reply(result)
        except Exception:
            self._ebStatus(Failure(), request_id, failed)

    def _status(self, request_id: bytes, message: bytes) -> Reply:
        """A reply of FX_OK with ``message``, whatever the result."""
        return lambda _: self._sendStatus(request_id, FX_OK, message)

    def _opened(self, data: bytes, table: dict[bytes, Any]) -> tuple[Any, bytes] | None:
        """What ``table`` holds for the handle a request starts with, and the request's
        fields after the handle; None when the handle is not in it: the request is then
        answered FX_FAILURE, as by OpenSSH (Conch logs a traceback for each such request)."""
        handle, rest = getNS(data[4:])
        if handle in table:
            return table[handle], rest
        self._sendStatus(data[:4], FX_FAILURE, b"no such open file handle")
        return None

    def packet_OPEN(self, data: bytes) -> None:
        """OPEN: a file handle."""
        request_id = data[:4]
        filename, rest = getNS(data[4:])
        (flags,) = struct.unpack_from("!L", rest)
        attrs, rest = self._parseAttributes(rest[4:])
        assert rest == b"", f"still have data in OPEN: {rest!r}"
        self._answer(
            request_id,
            self.client.openFile,
            (filename, flags, attrs),
            lambda file: self._cbOpenFile(file, request_id),
            b"open failed",
        )

    def packet_OPENDIR(self, data: bytes) -> None:
        """OPENDIR: a directory handle."""
        request_id = data[:4]
        path, rest = getNS(data[4:])
        assert rest == b"", f"still have data in OPENDIR: {rest!r}"
        self._answer(
            request_id,
            self.client.openDirectory,
            (path,),
            lambda listing: self._cbOpenDirectory(listing, request_id),
            b"opendir failed",
        )

    def packet_CLOSE(self, data: bytes) -> None:
        """CLOSE of a file or a directory handle (Conch's note of each CLOSE in the log is
        not written: a line per file closed)."""
        request_id = data[:4]
        handle, rest = getNS(data[4:])
        assert rest == b"", f"still have data in CLOSE: {rest!r}"
        file = self.openFiles.get(handle)
        if file is not None:
            closed: Reply = lambda _: self._cbClose(None, handle, request_id)  # noqa: E731
            self._answer(request_id, file.close, (), closed, b"close failed")
        elif handle in self.openDirs:
            listing = self.openDirs[handle][0]
            closed = lambda _: self._cbClose(None, handle, request_id, 1)  # noqa: E731
            self._answer(request_id, listing.close, (), closed, b"close failed")
        else:
            self._ebStatus(Failure(FileNotFoundError(2, "No such file or directory")), request_id)

    def packet_STAT(self, data: bytes, followLinks: int = 1) -> None:
        """STAT (and LSTAT): the attributes of a path."""
        request_id = data[:4]
        path, rest = getNS(data[4:])
        assert rest == b"", f"still have data in STAT/LSTAT: {rest!r}"
        self._answer(
            request_id,
            self.client.getAttrs,
            (path, followLinks),
            lambda attrs: self._cbStat(attrs, request_id),
            b"stat/lstat failed",
        )

    def packet_LSTAT(self, data: bytes) -> None:
        """LSTAT: the attributes of a path, not following a last symbolic link."""
        self.packet_STAT(data, 0)

    def packet_FSTAT(self, data: bytes) -> None:
        """FSTAT: the attributes of an open file."""
        opened = self._opened(data, self.openFiles)
        if opened is None:
            return
        file, rest = opened
        assert rest == b"", f"still have data in FSTAT: {rest!r}"
        request_id = data[:4]
        reply: Reply = lambda attrs: self._cbStat(attrs, request_id)  # noqa: E731
        self._answer(request_id, file.getAttrs, (), reply, b"fstat failed")

    def packet_SETSTAT(self, data: bytes) -> None:
        """SETSTAT: change a path's attributes."""
        request_id = data[:4]
        path, rest = getNS(data[4:])
        attrs, rest = self._parseAttributes(rest)
        if rest != b"":
            self._log.warn("Still have data in SETSTAT: {data!r}", data=rest)
        reply = self._status(request_id, b"setstat succeeded")
        self._answer(request_id, self.client.setAttrs, (path, attrs), reply, b"setstat failed")

    def packet_FSETSTAT(self, data: bytes) -> None:
        """FSETSTAT: change an open file's attributes."""
        opened = self._opened(data, self.openFiles)
        if opened is None:
            return
        file, rest = opened
        attrs, rest = self._parseAttributes(rest)
        assert rest == b"", f"still have data in FSETSTAT: {rest!r}"
        request_id = data[:4]
        reply = self._status(request_id, b"fsetstat succeeded")
        self._answer(request_id, file.setAttrs, (attrs,), reply, b"fsetstat failed")

    def packet_MKDIR(self, data: bytes) -> None:
        """MKDIR."""
        request_id = data[:4]
        path, rest = getNS(data[4:])
        attrs, rest = self._parseAttributes(rest)
        assert rest == b"", f"still have data in MKDIR: {rest!r}"
        reply = self._status(request_id, b"mkdir succeeded")
        self._answer(request_id, self.client.makeDirectory, (path, attrs), reply, b"mkdir failed")

    def packet_RMDIR(self, data: bytes) -> None:
        """RMDIR."""
        request_id = data[:4]
        path, rest = getNS(data[4:])
        assert rest == b"", f"still have data in RMDIR: {rest!r}"
        reply = self._status(request_id, b"rmdir succeeded")
        self._answer(request_id, self.client.removeDirectory, (path,), reply, b"rmdir failed")

    def packet_REMOVE(self, data: bytes) -> None:
        """REMOVE."""
        request_id = data[:4]
        path, rest = getNS(data[4:])
        assert rest == b"", f"still have data in REMOVE: {rest!r}"
        reply = self._status(request_id, b"remove succeeded")
        self._answer(request_id, self.client.removeFile, (path,), reply, b"remove failed")

    def packet_RENAME(self, data: bytes) -> None:
        """RENAME."""
        request_id = data[:4]
        old, rest = getNS(data[4:])
        new, rest = getNS(rest)
        assert rest == b"", f"still have data in RENAME: {rest!r}"
        reply = self._status(request_id, b"rename succeeded")
        self._answer(request_id, self.client.renameFile, (old, new), reply, b"rename failed")

    def packet_REALPATH(self, data: bytes) -> None:
        """REALPATH: the canonical form of a path."""
        request_id = data[:4]
        path, rest = getNS(data[4:])
        assert rest == b"", f"still have data in REALPATH: {rest!r}"
        self._answer(
            request_id,
            self.client.realPath,
            (path,),
            lambda real: self._cbReadLink(real, request_id),
            b"realpath failed",
        )
