"""Requests answered directly (gateway.sftp.answers): the same replies and statuses as
Conch's handlers, at once when the answer is known, later when the filesystem waits."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from twisted.conch.interfaces import ISFTPServer
from twisted.conch.ssh.common import NS
from twisted.conch.ssh.filetransfer import (
    FX_FAILURE,
    FX_NO_SUCH_FILE,
    FX_OK,
    FXP_ATTRS,
    FXP_CLOSE,
    FXP_FSTAT,
    FXP_HANDLE,
    FXP_INIT,
    FXP_LSTAT,
    FXP_MKDIR,
    FXP_NAME,
    FXP_OPEN,
    FXP_OPENDIR,
    FXP_REALPATH,
    FXP_REMOVE,
    FXP_RENAME,
    FXP_RMDIR,
    FXP_SETSTAT,
    FXP_STAT,
    FXP_STATUS,
    SFTPError,
)
from twisted.internet import defer
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from zope.interface import implementer

from gateway.fs import errors
from gateway.fs.interfaces import FileAttributes
from gateway.sftp.protocol import GatewayFileTransferServer
from gateway.sftp.server import GatewaySFTPServer
from tests.sftp.test_sftp_conch import RecordingFile, opened, packet, replies

FILE = FileAttributes("file", 3, 0o644, 1.0e9, 1.0e9)


class Filesystem:
    """Paths that exist: ``/f`` (a file) and ``/d`` (an empty directory); every change
    succeeds at once, or waits for ``waiting`` when that is set; ``/boom`` raises an
    error no filesystem should."""

    read_only = False

    def __init__(self) -> None:
        self.file = RecordingFile()
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.waiting: Deferred[None] | None = None

    async def _did(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if self.waiting is not None:
            await self.waiting
        if "/boom" in args:
            raise RuntimeError("a bug, not a filesystem error")

    async def stat(self, path: str, follow: bool = True) -> FileAttributes:
        await self._did("stat", path, follow)
        if path == "/f":
            return FILE
        if path == "/d":
            return FileAttributes("dir", 0, 0o755, 1.0e9, 1.0e9)
        raise errors.NoSuchFile(f"no such file: {path}")

    async def open(self, path: str, flags: Any, attrs: Any) -> RecordingFile:
        await self._did("open", path)
        return self.file

    async def list(self, path: str) -> list[tuple[str, FileAttributes]]:
        await self._did("list", path)
        return [("f", FILE)]

    async def setattr(self, path: str, changes: Any) -> None:
        await self._did("setattr", path)

    async def mkdir(self, path: str, attrs: Any) -> None:
        await self._did("mkdir", path)

    async def rmdir(self, path: str) -> None:
        await self._did("rmdir", path)

    async def remove(self, path: str) -> None:
        await self._did("remove", path)

    async def rename(self, old: str, new: str, overwrite: bool = False) -> None:
        await self._did("rename", old, new)
        if new == "/f":
            raise errors.FileExists("a file named \u00e9t\u00e9 exists")

    async def realpath(self, path: str) -> str:
        await self._did("realpath", path)
        return "/" + path.strip("/")


def connected(fs: Any) -> tuple[GatewayFileTransferServer, StringTransport]:
    """A protocol past INIT on a string transport, over ``fs``."""
    server = GatewayFileTransferServer(avatar=GatewaySFTPServer(fs, user="u"))
    transport = StringTransport()
    server.makeConnection(transport)
    server.dataReceived(struct.pack("!LBL", 5, FXP_INIT, 3))
    transport.clear()
    return server, transport


def code(reply: tuple[int, int, bytes]) -> int:
    """A STATUS reply's code."""
    kind, _, rest = reply
    assert kind == FXP_STATUS
    return int(struct.unpack_from("!L", rest)[0])


REQUESTS = [
    (FXP_STAT, NS(b"/f"), FXP_ATTRS),
    (FXP_LSTAT, NS(b"/d"), FXP_ATTRS),
    (FXP_OPEN, NS(b"/f") + struct.pack("!LL", 1, 0), FXP_HANDLE),
    (FXP_OPENDIR, NS(b"/d"), FXP_HANDLE),
    (FXP_SETSTAT, NS(b"/f") + struct.pack("!LL", 4, 0o600), FXP_STATUS),
    (FXP_MKDIR, NS(b"/e") + struct.pack("!L", 0), FXP_STATUS),
    (FXP_RMDIR, NS(b"/e"), FXP_STATUS),
    (FXP_REMOVE, NS(b"/f"), FXP_STATUS),
    (FXP_RENAME, NS(b"/f") + NS(b"/g"), FXP_STATUS),
    (FXP_REALPATH, NS(b"a/b/"), FXP_NAME),
]


@pytest.mark.parametrize(("kind", "body", "answer"), REQUESTS, ids=lambda v: str(v)[:12])
def test_answered_at_once_without_a_deferred(
    kind: int, body: bytes, answer: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request the filesystem answers without waiting is answered in the same call, and
    no Deferred is made for it (what made Conch's handling cost more than the reply)."""
    server, transport = connected(Filesystem())
    made: list[object] = []
    plain_init = Deferred.__init__

    def counted(self: Deferred[Any], *args: Any, **kwargs: Any) -> None:
        made.append(self)
        plain_init(self, *args, **kwargs)

    monkeypatch.setattr(Deferred, "__init__", counted)
    server.dataReceived(packet(kind, 5, body))
    monkeypatch.undo()
    ((reply_kind, request_id, rest),) = replies(transport.value())
    assert (reply_kind, request_id) == (answer, 5)
    if reply_kind == FXP_STATUS:
        assert code((reply_kind, request_id, rest)) == FX_OK
    assert made == []


@pytest.mark.parametrize(("kind", "body", "answer"), REQUESTS, ids=lambda v: str(v)[:12])
def test_answered_when_the_filesystem_is_done(kind: int, body: bytes, answer: int) -> None:
    """A request whose filesystem call waits is answered when it ends, with the same reply;
    requests after it are not held up by it."""
    fs = Filesystem()
    server, transport = connected(fs)
    fs.waiting = Deferred()
    server.dataReceived(packet(kind, 5, body))
    assert transport.value() == b""
    waiting, fs.waiting = fs.waiting, None
    server.dataReceived(packet(FXP_STAT, 6, NS(b"/f")))
    assert [r[:2] for r in replies(transport.value())] == [(FXP_ATTRS, 6)]
    transport.clear()
    waiting.callback(None)
    ((reply_kind, request_id, rest),) = replies(transport.value())
    assert (reply_kind, request_id) == (answer, 5)
    if reply_kind == FXP_STATUS:
        assert code((reply_kind, request_id, rest)) == FX_OK


def test_errors_get_their_statuses() -> None:
    """A missing name is FX_NO_SUCH_FILE with the filesystem's message, at once or later;
    a rename onto an existing name is FX_FAILURE; a message with non-ASCII characters is
    sent escaped (Conch sends ASCII only)."""
    fs = Filesystem()
    server, transport = connected(fs)
    server.dataReceived(packet(FXP_LSTAT, 1, NS(b"/nope")))
    server.dataReceived(packet(FXP_RENAME, 2, NS(b"/g") + NS(b"/f")))
    fs.waiting = Deferred()
    server.dataReceived(packet(FXP_STAT, 3, NS(b"/later")))
    fs.waiting.callback(None)
    found = replies(transport.value())
    assert [(r[1], code(r)) for r in found] == [
        (1, FX_NO_SUCH_FILE),
        (2, FX_FAILURE),  # an existing target: what OpenSSH answers (SFTP v3)
        (3, FX_NO_SUCH_FILE),
    ]
    assert NS(b"no such file: /nope") in found[0][2]
    assert NS(b"a file named \\xe9t\\xe9 exists") in found[1][2]


def test_an_unexpected_error_is_a_failure_and_logged() -> None:
    """An exception no filesystem error explains is FX_FAILURE with the request's own
    message (as Conch words it), and its traceback goes to the log; the session goes on."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        server, transport = connected(Filesystem())
        server.dataReceived(packet(FXP_MKDIR, 1, NS(b"/boom") + struct.pack("!L", 0)))
        server.dataReceived(packet(FXP_STAT, 2, NS(b"/f")))
    finally:
        globalLogPublisher.removeObserver(events.append)
    first, second = replies(transport.value())
    assert (first[1], code(first)) == (1, FX_FAILURE)
    assert NS(b"mkdir failed") in first[2]
    assert second[:2] == (FXP_ATTRS, 2)
    failures = [e for e in events if e.get("log_failure") is not None]
    assert failures and failures[0]["log_level"] == LogLevel.critical
    assert "a bug" in str(failures[0]["log_failure"].value)


def test_close_and_fstat_of_an_open_file_and_of_unknown_handles() -> None:
    """CLOSE ends the handle (a second CLOSE of it is FX_NO_SUCH_FILE, as Conch answers);
    FSTAT of a handle that is not open is FX_FAILURE, as from OpenSSH."""
    fs = Filesystem()
    server, transport = connected(fs)
    handle = opened(server, transport)
    server.dataReceived(packet(FXP_FSTAT, 2, NS(handle)))
    server.dataReceived(packet(FXP_CLOSE, 3, NS(handle)))
    server.dataReceived(packet(FXP_CLOSE, 4, NS(handle)))
    server.dataReceived(packet(FXP_FSTAT, 5, NS(handle)))
    found = replies(transport.value())
    assert found[0][:2] == (FXP_ATTRS, 2)
    assert [(r[1], code(r)) for r in found[1:]] == [
        (3, FX_OK),
        (4, FX_NO_SUCH_FILE),
        (5, FX_FAILURE),
    ]
    assert fs.file.events == ["close"]


def test_a_closing_file_is_answered_once_closed() -> None:
    """The CLOSE of a file whose close waits (a flush) is answered when it is done."""
    fs = Filesystem()
    server, transport = connected(fs)
    handle = opened(server, transport)
    fs.file.closing = Deferred()
    server.dataReceived(packet(FXP_CLOSE, 2, NS(handle)))
    assert transport.value() == b""
    fs.file.closing.callback(None)
    ((reply),) = replies(transport.value())
    assert (reply[1], code(reply)) == (2, FX_OK)


@implementer(ISFTPServer)
class PlainServer:
    """An ISFTPServer of plain methods, as Conch's interface allows: values, Deferreds and
    exceptions, no coroutines."""

    def __init__(self) -> None:
        self.avatar = None

    def gotVersion(self, version: int, ext: dict[bytes, bytes]) -> dict[bytes, bytes]:
        return {}

    def getAttrs(self, path: bytes, followLinks: bool) -> Any:
        if path == b"/later":
            return succeed({"size": 7})
        if path == b"/gone":
            raise SFTPError(FX_NO_SUCH_FILE, "gone")
        if path == b"/failing":
            return defer.fail(OSError(2, "No such file or directory"))
        return {"size": 5}


def test_servers_without_coroutines_are_served_as_conch_serves_them() -> None:
    """Any ISFTPServer works: a plain value, a Deferred, a raised SFTPError and a failed
    Deferred each get Conch's reply."""
    server = GatewayFileTransferServer(avatar=PlainServer())
    transport = StringTransport()
    server.makeConnection(transport)
    server.dataReceived(struct.pack("!LBL", 5, FXP_INIT, 3))
    transport.clear()
    for request_id, path in enumerate([b"/now", b"/later", b"/gone", b"/failing"], 1):
        server.dataReceived(packet(FXP_STAT, request_id, NS(path)))
    found = replies(transport.value())
    assert found[0] == (FXP_ATTRS, 1, struct.pack("!LQ", 1, 5))
    assert found[1] == (FXP_ATTRS, 2, struct.pack("!LQ", 1, 7))
    assert [(r[1], code(r)) for r in found[2:]] == [(3, FX_NO_SUCH_FILE), (4, FX_NO_SUCH_FILE)]
