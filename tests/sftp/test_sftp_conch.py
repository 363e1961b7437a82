"""GatewayFileTransferServer: Conch's SFTP protocol with the gateway's fixes, packet by packet."""

from __future__ import annotations

import struct
from typing import Any

from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.filetransfer import (
    FX_EOF,
    FX_FAILURE,
    FX_NO_SUCH_FILE,
    FX_OK,
    FXF_CREAT,
    FXF_WRITE,
    FXP_CLOSE,
    FXP_DATA,
    FXP_EXTENDED,
    FXP_INIT,
    FXP_OPEN,
    FXP_READ,
    FXP_STATUS,
    FXP_VERSION,
    FXP_WRITE,
)
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gateway.fs.interfaces import FileAttributes, IOpenFile, SetAttributes
from gateway.sftp.extensions import EXTENSIONS
from gateway.sftp.protocol import READS_HIGH, GatewayFileTransferServer
from gateway.sftp.server import GatewaySFTPServer


@implementer(IOpenFile)
class RecordingFile:
    """An open file that records how it ended."""

    path = "/f"

    def __init__(self) -> None:
        self.events: list[str] = []
        self.closing: Deferred[None] | None = None  # when set, CLOSE waits for it
        self.contents = b""
        #: What read_ready does: "wait" (None: READ goes the usual way), "local" (answers
        #: from the contents), or "fail" (raises OSError, as a failing pread).
        self.ready = "wait"

    async def read(self, offset: int, length: int) -> bytes:
        self.events.append("read")
        return self.contents[offset : offset + length]

    def read_ready(self, offset: int, length: int) -> bytes | None:
        if self.ready == "fail":
            raise OSError(5, "Input/output error")
        if self.ready == "local":
            self.events.append("read_ready")
            return self.contents[offset : offset + length]
        return None

    async def write(self, offset: int, data: bytes) -> None:
        self.events.append("write")

    async def stat(self) -> FileAttributes:
        return FileAttributes("file", 0, 0o644, 0.0, 0.0)

    async def setattr(self, changes: SetAttributes) -> None:
        pass

    async def fsync(self) -> None:
        self.events.append("fsync")

    async def close(self) -> None:
        if self.closing is not None:
            await self.closing
        self.events.append("close")

    async def abort(self) -> None:
        self.events.append("abort")


class OneFileFilesystem:
    """Opens the same recording file for every path."""

    read_only = False

    def __init__(self) -> None:
        self.file = RecordingFile()

    async def open(self, path: str, flags: Any, attrs: Any) -> IOpenFile:
        return self.file


def packet(kind: int, request_id: int, body: bytes) -> bytes:
    """One SFTP packet."""
    payload = bytes([kind]) + struct.pack("!L", request_id) + body
    return struct.pack("!L", len(payload)) + payload


def statuses(wire: bytes) -> list[tuple[int, int]]:
    """(request id, code) of every STATUS packet in ``wire``."""
    found = []
    while wire:
        (length,) = struct.unpack("!L", wire[:4])
        body, wire = wire[4 : 4 + length], wire[4 + length :]
        if body[0] == FXP_STATUS:
            found.append(struct.unpack("!LL", body[1:9]))
    return found


def connected() -> tuple[GatewayFileTransferServer, StringTransport, OneFileFilesystem]:
    """A server past INIT on a string transport, over a one-file filesystem."""
    fs = OneFileFilesystem()
    server = GatewayFileTransferServer(avatar=GatewaySFTPServer(fs, user="u"))  # type: ignore[arg-type]
    transport = StringTransport()
    server.makeConnection(transport)
    server.dataReceived(struct.pack("!LBL", 5, FXP_INIT, 3))
    transport.clear()
    return server, transport, fs


def test_read_and_write_on_an_unknown_handle_are_answered() -> None:
    """READ and WRITE on a handle that is not open get FX_FAILURE (Conch leaves them unanswered)."""
    server, transport, _ = connected()
    server.dataReceived(packet(FXP_READ, 7, NS(b"bogus") + struct.pack("!QL", 0, 10)))
    server.dataReceived(packet(FXP_WRITE, 8, NS(b"bogus") + struct.pack("!Q", 0) + NS(b"x")))
    assert statuses(transport.value()) == [(7, FX_FAILURE), (8, FX_FAILURE)]


def test_lost_session_aborts_open_files_and_close_closes_them() -> None:
    """Files open when the session ends are aborted; an explicit CLOSE closes."""
    server, transport, fs = connected()
    verifyObject(IOpenFile, fs.file)
    open_body = NS(b"/f") + struct.pack("!LL", FXF_WRITE | FXF_CREAT, 0)
    server.dataReceived(packet(FXP_OPEN, 1, open_body))
    handle = transport.value()[9:]
    server.dataReceived(packet(FXP_CLOSE, 2, handle))
    assert fs.file.events == ["close"]
    server.dataReceived(packet(FXP_OPEN, 3, open_body))
    server.connectionLost(Failure(ConnectionDone()))
    assert fs.file.events == ["close", "abort"]


def replies(wire: bytes) -> list[tuple[int, int, bytes]]:
    """(kind, request id, rest) of every packet in ``wire``."""
    found = []
    while wire:
        (length,) = struct.unpack("!L", wire[:4])
        body, wire = wire[4 : 4 + length], wire[4 + length :]
        found.append((body[0], struct.unpack("!L", body[1:5])[0], body[5:]))
    return found


def test_reads_of_local_bytes_are_answered_at_once_and_others_the_usual_way() -> None:
    """A READ the file can answer from local bytes is answered from them; one it cannot,
    or whose local read fails, goes through ``read``. Both answer the same bytes, and end
    of file is FX_EOF "End of file" either way, as OpenSSH words it."""
    server, transport, fs = connected()
    handle = opened(server, transport)
    file = fs.file
    file.contents = b"0123456789"

    def read(request_id: int, offset: int) -> None:
        server.dataReceived(
            packet(FXP_READ, request_id, NS(handle) + struct.pack("!QL", offset, 4))
        )

    file.ready = "local"
    read(1, 2)
    read(2, 10)
    file.ready = "wait"
    read(3, 8)
    read(4, 12)
    file.ready = "fail"
    read(5, 0)
    assert file.events == ["read_ready", "read_ready", "read", "read", "read"]
    eof = NS(b"End of file") + NS(b"")
    assert replies(transport.value()) == [
        (FXP_DATA, 1, NS(b"2345")),
        (FXP_STATUS, 2, struct.pack("!L", FX_EOF) + eof),
        (FXP_DATA, 3, NS(b"89")),
        (FXP_STATUS, 4, struct.pack("!L", FX_EOF) + eof),
        (FXP_DATA, 5, NS(b"0123")),
    ]


def opened(server: GatewayFileTransferServer, transport: StringTransport) -> bytes:
    """Open the one file for writing; its wire handle."""
    transport.clear()
    body = NS(b"/f") + struct.pack("!LL", FXF_WRITE | FXF_CREAT, 0)
    server.dataReceived(packet(FXP_OPEN, 1, body))
    handle, _ = getNS(transport.value()[9:])
    transport.clear()
    return bytes(handle)


def extended(request_id: int, name: bytes, data: bytes) -> bytes:
    """An EXTENDED request packet."""
    return packet(FXP_EXTENDED, request_id, NS(name) + data)


def test_init_announces_the_extension_table_in_order() -> None:
    """VERSION lists exactly the extensions of the one table, in its order."""
    server = GatewayFileTransferServer(avatar=GatewaySFTPServer(OneFileFilesystem(), user="u"))  # type: ignore[arg-type]
    transport = StringTransport()
    server.makeConnection(transport)
    server.dataReceived(struct.pack("!LBL", 5, FXP_INIT, 3))
    reply = transport.value()
    assert reply[4] == FXP_VERSION
    rest, announced = reply[9:], []
    while rest:
        name, rest = getNS(rest)
        version, rest = getNS(rest)
        announced.append((name, version))
    assert announced == [(e.name, e.version) for e in EXTENSIONS]


def test_handle_extensions_resolve_conch_handles() -> None:
    """fsync, fstatvfs and copy-data find handles among Conch's open files; an unknown
    handle gets FX_NO_SUCH_FILE (fsync) or FX_FAILURE (fstatvfs, copy-data), as from OpenSSH."""
    server, transport, fs = connected()
    handle = opened(server, transport)
    server.dataReceived(extended(2, b"fsync@openssh.com", NS(handle)))
    assert fs.file.events == ["fsync"]
    offsets = struct.pack("!QQ", 0, 0)
    server.dataReceived(extended(3, b"fsync@openssh.com", NS(b"bogus")))
    server.dataReceived(extended(4, b"fstatvfs@openssh.com", NS(b"bogus")))
    copy = NS(b"bogus") + offsets + NS(handle) + struct.pack("!Q", 0)
    server.dataReceived(extended(5, b"copy-data", copy))
    copy = NS(handle) + offsets + NS(b"bogus") + struct.pack("!Q", 0)
    server.dataReceived(extended(6, b"copy-data", copy))
    assert statuses(transport.value()) == [
        (2, FX_OK),
        (3, FX_NO_SUCH_FILE),
        (4, FX_FAILURE),
        (5, FX_FAILURE),
        (6, FX_FAILURE),
    ]


def test_extensions_refuse_a_handle_that_is_closing() -> None:
    """Once CLOSE has begun, extensions answer as for an unknown handle (though Conch keeps
    the handle open until the close finishes)."""
    server, transport, fs = connected()
    handle = opened(server, transport)
    fs.file.closing = Deferred()
    server.dataReceived(packet(FXP_CLOSE, 2, NS(handle)))
    assert handle in server.openFiles
    server.dataReceived(extended(3, b"fsync@openssh.com", NS(handle)))
    server.dataReceived(extended(4, b"fstatvfs@openssh.com", NS(handle)))
    fs.file.closing.callback(None)
    assert statuses(transport.value()) == [(3, FX_NO_SUCH_FILE), (4, FX_FAILURE), (2, FX_OK)]
    assert fs.file.events == ["close"]


class SlowReads(RecordingFile):
    """A file whose every READ waits until the test answers it (a read from the grid)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Deferred[bytes]] = []

    async def read(self, offset: int, length: int) -> bytes:
        answer: Deferred[bytes] = Deferred()
        self.waiting.append(answer)
        return await answer


def test_reads_in_flight_are_bounded_by_the_bytes_they_ask_for() -> None:
    """A client that sends READs for a whole file at once (paramiko's prefetch) has at most
    READS_HIGH bytes of them served at a time; the rest wait unread until the ones served
    are answered, then are served in order, and every READ is answered."""
    server, transport, fs = connected()
    fs.file = SlowReads()
    handle = opened(server, transport)
    chunk = 32 * 1024
    count = 3 * READS_HIGH // chunk
    server.dataReceived(
        b"".join(
            packet(FXP_READ, 10 + i, NS(handle) + struct.pack("!QL", i * chunk, chunk))
            for i in range(count)
        )
    )
    file = fs.file
    assert len(file.waiting) == READS_HIGH // chunk, "served up to the limit"
    answered = 0
    while answered < count:
        started = len(file.waiting)
        assert started - answered <= READS_HIGH // chunk
        file.waiting[answered].callback(b"d" * chunk)
        answered += 1
    replies = transport.value()
    ids = []
    while replies:
        (length,) = struct.unpack("!L", replies[:4])
        body, replies = replies[4 : 4 + length], replies[4 + length :]
        assert body[0] == FXP_DATA
        ids.append(struct.unpack("!L", body[1:5])[0])
    assert ids == [10 + i for i in range(count)]
