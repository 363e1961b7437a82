"""The SFTP protocol: Conch's ``FileTransferServer`` with the gateway's packet layer.

:class:`GatewayFileTransferServer` reads the wire: it splits the byte stream
into packets (:mod:`gateway.sftp.packets`), dispatches each to a ``packet_*``
method, serves READ and WRITE on fast paths, ends the session on a malformed
packet, times every request for the session observer
(:mod:`gateway.sftp.sessions`) and aborts the files still open when the session
ends. EXTENDED requests are served from the one table of extensions
(:data:`~gateway.sftp.extensions.EXTENSIONS`), their handles resolved among
Conch's open files (``openFiles``). The file operations themselves are the
``ISFTPServer`` it was given (:class:`~gateway.sftp.server.GatewaySFTPServer`);
this module knows nothing of the filesystem behind it.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from twisted.conch.interfaces import ISFTPFile
from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.filetransfer import (
    FX_BAD_MESSAGE,
    FX_FAILURE,
    FX_OK,
    FX_OP_UNSUPPORTED,
    FXP_DATA,
    FXP_WRITE,
    FileTransferBase,
    FileTransferServer,
    SFTPError,
)
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from gateway.sftp.extensions import (
    EXTENSION_BY_NAME,
    IGatewaySFTPServer,
    NameReply,
    Reply,
    StatusReply,
    UnknownHandle,
)
from gateway.sftp.packets import (
    REPLY_KINDS,
    REQUEST_KINDS,
    MalformedPacket,
    PacketSplitter,
    request_fields_end,
)
from gateway.sftp.sessions import ISessionObserver

__all__ = ["GatewayFileTransferServer"]


class GatewayFileTransferServer(FileTransferServer):
    """Conch's SFTP server protocol with the gateway's packet layer and two fixes.

    - READ and WRITE on a handle that is not open get FX_FAILURE at once, as
      from OpenSSH; Conch's own server calls error callbacks it does not
      define, so such a request is never answered and the client hangs.
    - When the session ends with files still open (the client was killed, or
      the connection dropped), those handles are *aborted*, not closed: a
      half-written upload never replaces a file's contents. Conch would call
      ``close()`` on them, which is what an explicit CLOSE does.
    """

    def __init__(self, data: bytes | None = None, avatar: object = None) -> None:
        super().__init__(data=data, avatar=avatar)
        self._started: dict[int, tuple[str, float]] = {}
        self._splitter = PacketSplitter()
        self._handlers: dict[int, Callable[[bytes], object] | None] = {}
        self._ended = False

    def _session(self) -> ISessionObserver | None:
        session = getattr(self.client, "session", None)
        return session if ISessionObserver.providedBy(session) else None

    def dataReceived(self, data: bytes) -> None:
        """Split the stream into packets and dispatch each one.

        Conch's own parser re-copies its whole buffer (``buf += data``, then a
        slice per packet), which is quadratic in the bytes buffered; this one
        parses in place and drops consumed bytes once per call. It notes when
        each complete request arrived (for its latency) on the way.
        """
        if self._ended:
            return
        packets = self._splitter.feed(data)
        if not packets:
            return
        session = self._session()
        arrived = time.perf_counter() if session is not None else 0.0
        for kind, body in packets:
            if self._ended:  # a malformed packet ended the session: read nothing after it
                return
            try:
                end = request_fields_end(kind, body)
            except MalformedPacket:
                self.malformed(self.packetTypes.get(kind, str(kind)))
                return
            if end < len(body):  # bytes past the last field are discarded, as by OpenSSH
                body = body[:end]
            if session is not None and kind in REQUEST_KINDS:
                (request_id,) = struct.unpack_from("!L", body)
                self._started[request_id] = (self.packetTypes[kind].lower(), arrived)
            if kind == FXP_WRITE:
                self.packet_WRITE(body)  # takes the view: copies only the data written
            else:
                self._dispatch(kind, body.tobytes())

    def _dispatch(self, kind: int, body: bytes) -> None:
        """Handle one packet as Conch's dataReceived does (without its per-packet log line)."""
        try:
            handler = self._handlers[kind]
        except KeyError:
            name = self.packetTypes.get(kind)
            handler = getattr(self, f"packet_{name}", None) if name else None
            self._handlers[kind] = handler
        if handler is None:
            name = self.packetTypes.get(kind)
            if name is None:
                self._log.info("no packet type for {kind}", kind=kind)
            else:
                self._sendStatus(body[:4], FX_OP_UNSUPPORTED, f"don't understand {name}".encode())
            return
        try:
            handler(body)
        except (struct.error, AssertionError, IndexError, ValueError):
            self.malformed(self.packetTypes.get(kind, str(kind)))
        except Exception:
            self._log.failure(
                "Failed to handle packet of type {packetType}",
                packetType=self.packetTypes.get(kind),
            )

    def malformed(self, what: object) -> None:
        """A packet no correct client sends: end this session, as OpenSSH's sftp-server does.

        Only this client's channel closes; other sessions and the node carry on.
        """
        self._log.warn("malformed SFTP {what} packet; ending the session", what=what)
        self._ended = True
        if self.transport is not None:
            self.transport.loseConnection()

    def packet_READ(self, data: bytes) -> None:
        """READ, parsed without re-slicing the packet, answered straight from the coroutine."""
        request_id = data[:4]
        try:
            (handle_length,) = struct.unpack_from("!L", data, 4)
            end = 8 + handle_length
            offset, length = struct.unpack_from("!QL", data, end)
        except struct.error:
            self.malformed("READ")
            return
        if len(data) < end + 12:
            self.malformed("READ")
            return
        file = self.openFiles.get(data[8:end])
        if file is None:
            self._ebRead(Failure(KeyError()), request_id)
            return
        d = defer.maybeDeferred(file.readChunk, offset, length)
        d.addCallback(self._cbRead, request_id)
        d.addErrback(self._ebStatus, request_id, b"read failed")

    def packet_EXTENDED(self, data: bytes) -> None:
        """EXTENDED: an extension of the table, or else the ISFTPServer's ``extendedRequest``."""
        request_id = data[:4]
        name, ext_data = getNS(data[4:])
        d = Deferred.fromCoroutine(self._extended(name, ext_data))
        d.addCallback(self._cbExtended, request_id)
        d.addErrback(self._ebStatus, request_id, b"extended " + name + b" failed")

    async def _extended(self, name: bytes, data: bytes) -> Reply:
        extension = EXTENSION_BY_NAME.get(name)
        server = IGatewaySFTPServer(self.client, None)
        if extension is None or server is None:
            reply: bytes = await defer.maybeDeferred(self.client.extendedRequest, name, data)
            return reply
        try:
            return await extension.serve(server, self._open_file, data)
        except UnknownHandle:
            raise SFTPError(extension.unknown_handle, "no such open file handle") from None
        except (ValueError, struct.error):
            raise SFTPError(FX_BAD_MESSAGE, "malformed extension request") from None

    def _open_file(self, handle: bytes) -> ISFTPFile:
        """The open file a request names, from Conch's own handle map."""
        file: ISFTPFile | None = self.openFiles.get(handle)
        if file is None:
            raise UnknownHandle()
        return file

    def _cbExtended(self, data: Reply, requestId: bytes) -> None:
        """An extension's reply: SSH_FXP_NAME for a :class:`NameReply`, an FX_OK status for
        a :class:`StatusReply`, else EXTENDED_REPLY."""
        if isinstance(data, NameReply):
            self._cbReadLink(data.path, requestId)
        elif isinstance(data, StatusReply):
            self._sendStatus(requestId, FX_OK, data.message)
        else:
            super()._cbExtended(data, requestId)

    def _cbRead(self, result: bytes, requestId: bytes) -> None:
        if not result:  # end of file
            raise EOFError()
        self.sendPacket(FXP_DATA, b"".join((requestId, struct.pack("!L", len(result)), result)))

    def packet_WRITE(self, data: bytes | memoryview) -> None:
        """WRITE, parsed with one copy of the payload."""
        request_id = bytes(data[:4])
        try:
            (handle_length,) = struct.unpack_from("!L", data, 4)
            end = 8 + handle_length
            offset, length = struct.unpack_from("!QL", data, end)
        except struct.error:
            self.malformed("WRITE")
            return
        if len(data) < end + 12 + length:
            self.malformed("WRITE")
            return
        file = self.openFiles.get(bytes(data[8:end]))
        if file is None:
            self._ebWrite(Failure(KeyError()), request_id)
            return
        d = defer.maybeDeferred(file.writeChunk, offset, bytes(data[end + 12 : end + 12 + length]))
        d.addCallback(self._cbStatus, request_id, b"write succeeded")
        d.addErrback(self._ebStatus, request_id, b"write failed")

    def sendPacket(self, kind: int, data: bytes) -> None:
        """Send a packet; a reply tells the session how long its request took."""
        assert self.transport is not None
        self.transport.write(b"".join((struct.pack("!LB", len(data) + 1, kind), data)))
        session = self._session()
        if session is not None and kind in REPLY_KINDS and len(data) >= 4:
            (request_id,) = struct.unpack_from("!L", data)
            request = self._started.pop(request_id, None)
            if request is not None:
                session.request(request[0], time.perf_counter() - request[1])

    def _ebRead(self, reason: Failure, requestId: bytes) -> None:
        self._sendStatus(requestId, FX_FAILURE, b"no such open file handle")

    _ebWrite = _ebRead

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Abort every file still open; close directory listings."""
        FileTransferBase.connectionLost(self, reason)
        files, self.openFiles = self.openFiles, {}
        for file in files.values():
            abort = getattr(file, "abort", None)
            if abort is not None:
                abort()
            else:
                file.close()
        directories, self.openDirs = self.openDirs, {}
        for directory, _ in directories.values():
            directory.close()
        session = self._session()
        if session is not None:
            session.ended()
