"""The SFTP protocol: Conch's ``FileTransferServer`` with the gateway's packet layer.

:class:`GatewayFileTransferServer` reads the wire: it splits the byte stream
into packets (:mod:`gateway.sftp.packets`), dispatches each to a ``packet_*``
method, serves READ and WRITE on fast paths, ends the session on a malformed
packet, times every request for the session observer
(:mod:`gateway.sftp.sessions`) and aborts the files still open when the session
ends. On an SSH channel that provides :class:`~gateway.sftp.flow.IChannelFlow`
it holds each request's bytes until the request is answered and serves no
request while too many replies wait for the client (:mod:`gateway.sftp.flow`),
so however fast a client pipelines, what the session holds is bounded.
EXTENDED requests are served from the one table of extensions
(:data:`~gateway.sftp.extensions.EXTENSIONS`), their handles resolved among
Conch's open files (``openFiles``). The file operations themselves are the
``ISFTPServer`` it was given (:class:`~gateway.sftp.server.GatewaySFTPServer`);
this module knows nothing of the filesystem behind it.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.conch.interfaces import ISFTPFile
from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.filetransfer import (
    FILEXFER_ATTR_ACMODTIME,
    FILEXFER_ATTR_OWNERGROUP,
    FILEXFER_ATTR_PERMISSIONS,
    FILEXFER_ATTR_SIZE,
    FX_BAD_MESSAGE,
    FX_EOF,
    FX_FAILURE,
    FX_OK,
    FX_OP_UNSUPPORTED,
    FXP_DATA,
    FXP_NAME,
    FXP_READ,
    FXP_WRITE,
    FileTransferBase,
    FileTransferServer,
    SFTPError,
)
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.logger import ILogObserver, Logger, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import provider

from gateway.sftp.answers import DirectAnswers, status_message
from gateway.sftp.extensions import (
    EXTENSION_BY_NAME,
    MAX_PACKET,
    MAX_READ_WRITE,
    IGatewaySFTPServer,
    NameReply,
    Reply,
    StatusReply,
    UnknownHandle,
)
from gateway.sftp.flow import IChannelFlow
from gateway.sftp.listing import DirectoryListing
from gateway.sftp.packets import (
    REPLY_KINDS,
    REQUEST_KINDS,
    MalformedPacket,
    PacketSplitter,
    request_fields_end,
)
from gateway.sftp.sessions import ISessionObserver

__all__ = ["GatewayFileTransferServer"]


@provider(ILogObserver)
def _without_close_notices(event: dict[str, Any]) -> None:
    """Pass a log event on to the node's log, unless it is Conch's note of a CLOSE."""
    if str(event.get("log_format", "")).startswith("closing: "):
        return
    globalLogPublisher(event)


READS_HIGH = 8 * 1024 * 1024
"""Bytes that the READs being served may ask for at most: past it, no further request
is served until the READs answered bring it under half. The SSH window bounds the
requests a client has in flight, not what they ask for: a READ of 32 KiB is a packet
of about 40 bytes, so paramiko's ``prefetch`` of a whole file started every READ at
once, and a gateway reading from a grid held their replies together (750 MiB of RSS
after a 512 MiB download from a 3-of-5 grid). OpenSSH's sftp and rclone keep 2 MiB in
flight: under this."""

#: The attributes every STAT, LSTAT and FSTAT answers (see ``server.attribute_dict``), packed
#: in one call: flags, size, uid, gid, permissions, atime, mtime.
_USUAL_ATTRIBUTES = frozenset(["size", "uid", "gid", "permissions", "atime", "mtime"])
_USUAL_FLAGS = (
    FILEXFER_ATTR_SIZE
    | FILEXFER_ATTR_OWNERGROUP
    | FILEXFER_ATTR_PERMISSIONS
    | FILEXFER_ATTR_ACMODTIME
)
_PACKED_ATTRIBUTES = struct.Struct("!LQLLLLL")

#: The message of an FX_EOF status, as OpenSSH's sftp-server words it.
_END_OF_FILE = b"End of file"

#: Each request's name as the session's latency figures know it ("stat", "read"…).
_OPERATIONS = {kind: name.lower() for kind, name in FileTransferServer.packetTypes.items()}


class GatewayFileTransferServer(DirectAnswers):
    """Conch's SFTP server protocol with the gateway's packet layer and these fixes.

    - READ and WRITE on a handle that is not open get FX_FAILURE at once, as
      from OpenSSH; Conch's own server calls error callbacks it does not
      define, so such a request is never answered and the client hangs.
      FSTAT, FSETSTAT and READDIR get it too (Conch logs a traceback for each).
    - Status messages are made ASCII before Conch sends them: it raises on any
      other character, and the request is never answered.
    - When the session ends with files still open (the client was killed, or
      the connection dropped), those handles are *aborted*, not closed: a
      half-written upload never replaces a file's contents. Conch would call
      ``close()`` on them, which is what an explicit CLOSE does.
    """

    def __init__(self, data: bytes | None = None, avatar: object = None) -> None:
        super().__init__(data=data, avatar=avatar)
        self._started: dict[int, tuple[str, float]] = {}
        self._splitter = PacketSplitter(max_length=MAX_PACKET)
        self._handlers: dict[int, Callable[[bytes], object] | None] = {}
        self._ended = False
        #: Packets received and not served yet (while the client's replies are backlogged).
        self._backlog: deque[tuple[int, memoryview, float]] = deque()
        self._serving = False
        #: The wire size of each request not yet answered, by request id (oldest first).
        self._held: dict[int, deque[int]] = {}
        #: The bytes each READ not yet answered asks for, by request id, and their sum.
        self._reads: dict[int, deque[int]] = {}
        self._reading = 0
        session = getattr(self.client, "session", None)
        #: Told how long each request took (the server's, made with it).
        self._observer = session if ISessionObserver.providedBy(session) else None

    #: Conch logs every CLOSE at info ("closing: <request id> <handle>"): a line per file
    #: closed, 4 % of the CPU of a small-file copy, filling node.log. Dropped; the rest of
    #: Conch's events go to the node's log as before.
    _log = Logger(observer=_without_close_notices)

    def _flow(self) -> IChannelFlow | None:
        """The SSH channel's flow control (None on other transports: no flow control);
        looked up once connected."""
        try:
            return self._channel_flow
        except AttributeError:
            channel = getattr(self.transport, "session", None)
            flow = channel if IChannelFlow.providedBy(channel) else None
            if self.transport is not None:
                self._channel_flow: IChannelFlow | None = flow
            return flow

    def dataReceived(self, data: bytes) -> None:
        """Split the stream into packets and serve each one (see :meth:`_serve_backlog`).

        Conch's own parser re-copies its whole buffer (``buf += data``, then a
        slice per packet), which is quadratic in the bytes buffered; this one
        parses in place and drops consumed bytes once per call. It notes when
        each complete request arrived (for its latency) on the way. A packet
        longer than the announced maximum ends the session, as from OpenSSH.
        """
        if self._ended:
            return
        try:
            packets = self._splitter.feed(data)
        except MalformedPacket:
            self.malformed("oversized")
            return
        if not packets:
            return
        arrived = time.perf_counter() if self._observer is not None else 0.0
        self._backlog.extend((kind, body, arrived) for kind, body in packets)
        self._serve_backlog()

    def _serve_backlog(self) -> None:
        """Serve the packets received, in order, while the client's replies are not
        backlogged; once they are, resume when they drain."""
        if self._serving:
            return
        self._serving = True
        try:
            flow = self._flow()
            while self._backlog and not self._ended:
                if flow is not None and flow.backlogged:
                    flow.when_drained(self._serve_backlog)
                    return
                if self._reading >= READS_HIGH:
                    return  # resumed as READs are answered (see _answered)
                self._serve(*self._backlog.popleft())
        finally:
            self._serving = False

    def _serve(self, kind: int, body: memoryview, arrived: float) -> None:
        """Serve one packet; its bytes count as held until it is answered."""
        size = 5 + len(body)  # length and type, then the body
        try:
            end = request_fields_end(kind, body)
        except MalformedPacket:
            self.malformed(self.packetTypes.get(kind, str(kind)))
            return
        if end < len(body):  # bytes past the last field are discarded, as by OpenSSH
            body = body[:end]
        if kind in REQUEST_KINDS:
            (request_id,) = struct.unpack_from("!L", body)
            self._held.setdefault(request_id, deque()).append(size)
            if kind == FXP_READ:  # its last field is the length asked for
                (length,) = struct.unpack_from("!L", body, len(body) - 4)
                wanted = min(length, MAX_READ_WRITE)
                self._reads.setdefault(request_id, deque()).append(wanted)
                self._reading += wanted
            if arrived:
                self._started[request_id] = (_OPERATIONS[kind], arrived)
        else:
            self._consumed(size)  # INIT and unknown types: nothing is held
        if kind == FXP_WRITE:
            self.packet_WRITE(body)  # takes the view: copies only the data written
        else:
            self._dispatch(kind, body.tobytes())

    def _consumed(self, size: int) -> None:
        flow = self._flow()
        if flow is not None:
            flow.consumed(size)

    def _answered(self, request_id: int) -> None:
        """A request was answered: its bytes are no longer held."""
        sizes = self._held.get(request_id)
        if sizes:
            self._consumed(sizes.popleft())
            if not sizes:
                del self._held[request_id]
        wanted = self._reads.get(request_id)
        if wanted:
            self._reading -= wanted.popleft()
            if not wanted:
                del self._reads[request_id]
            if self._backlog and self._reading < READS_HIGH // 2:
                self._serve_backlog()  # (does nothing while already serving)

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
            if kind in REQUEST_KINDS:  # never answered: hold its bytes no longer
                self._answered(struct.unpack_from("!L", body)[0])

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
        ready = getattr(file, "read_ready", None)
        if ready is not None:
            try:
                chunk = ready(offset, length)
            except OSError:  # the usual way finds it again, and answers it
                chunk = None
            if chunk is not None:  # local bytes: no Deferred, no coroutine
                if chunk:
                    self._cbRead(chunk, request_id)
                else:
                    self._sendStatus(request_id, FX_EOF, _END_OF_FILE)
                return
        d = defer.maybeDeferred(file.readChunk, offset, length)
        d.addCallback(self._cbRead, request_id)
        d.addErrback(self._ebStatus, request_id, b"read failed")

    def packet_READDIR(self, data: bytes) -> None:
        """READDIR: the next batch of the listing's packed entries (FX_EOF after the last);
        an unknown handle gets FX_FAILURE."""
        opened = self._opened(data, self.openDirs)
        if opened is None:
            return
        listing = opened[0][0]  # ([listing, iterator], the fields after the handle)
        if not isinstance(listing, DirectoryListing):
            super().packet_READDIR(data)
            return
        count, entries = listing.batch()
        if not count:
            self._sendStatus(data[:4], FX_EOF, _END_OF_FILE)
            return
        self.sendPacket(FXP_NAME, data[:4] + struct.pack("!L", count) + entries)

    def _ebStatus(self, reason: Failure, requestId: bytes, msg: bytes = b"request failed") -> None:
        """Conch's error status, its message made ASCII first: Conch sends messages as
        ASCII, and raises on any other character, leaving the request unanswered."""
        value = reason.value
        if isinstance(value, NotImplementedError | EOFError) and value.args:
            reason = Failure(type(value)(status_message(str(value.args[0])).decode()))
        elif isinstance(value, SFTPError):
            reason = Failure(SFTPError(value.code, status_message(value.message).decode()))
        super()._ebStatus(reason, requestId, msg)

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
            raise EOFError(_END_OF_FILE.decode())
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

    def _packAttributes(self, attrs: dict[str, Any]) -> bytes:
        """Conch's packing of an attribute dict, in one call for the usual six fields."""
        if attrs.keys() == _USUAL_ATTRIBUTES:
            return _PACKED_ATTRIBUTES.pack(
                _USUAL_FLAGS,
                attrs["size"],
                attrs["uid"],
                attrs["gid"],
                attrs["permissions"],
                attrs["atime"],
                attrs["mtime"],
            )
        packed: bytes = super()._packAttributes(attrs)
        return packed

    def sendPacket(self, kind: int, data: bytes) -> None:
        """Send a packet; a reply frees its request's bytes and tells the session how long
        the request took."""
        assert self.transport is not None
        self.transport.write(b"".join((struct.pack("!LB", len(data) + 1, kind), data)))
        if kind not in REPLY_KINDS or len(data) < 4:
            return
        (request_id,) = struct.unpack_from("!L", data)
        self._answered(request_id)
        session = self._observer
        if session is not None:
            request = self._started.pop(request_id, None)
            if request is not None:
                session.request(request[0], time.perf_counter() - request[1])

    def _ebRead(self, reason: Failure, requestId: bytes) -> None:
        self._sendStatus(requestId, FX_FAILURE, b"no such open file handle")

    _ebWrite = _ebRead

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Abort every file still open; close directory listings."""
        FileTransferBase.connectionLost(self, reason)
        self._ended = True
        self._backlog.clear()
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
        session = self._observer
        if session is not None:
            session.ended()
