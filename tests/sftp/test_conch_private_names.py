"""Conch's private and undocumented names the gateway relies on are still there, in the shape
the gateway uses them.

gateway/sftp subclasses Conch's SFTP protocol, session channel, connection,
transport, userauth service and factory, and reaches into them: it calls
private callbacks (``_ebStatus``), reads and replaces undocumented attributes
(``openFiles``, ``remoteWindowLeft``, ``extBuf``) and relies on how Conch
dispatches by name (``packet_*``, ``request_*``, ``auth_*``). None of that is
Twisted's public API, so a new Twisted may change it silently; these tests
fail first. Each entry says where the gateway uses the name.
"""

from __future__ import annotations

import inspect
import struct
from typing import Any

import pytest
from twisted.conch import error as conch_error
from twisted.conch.avatar import ConchUser
from twisted.conch.interfaces import ISFTPServer
from twisted.conch.ssh import connection, filetransfer, transport, userauth
from twisted.conch.ssh import session as conch_session
from twisted.conch.ssh.channel import SSHChannel
from twisted.conch.ssh.factory import SSHFactory
from twisted.conch.ssh.filetransfer import (
    FXP_HANDLE,
    FXP_NAME,
    FileTransferBase,
    FileTransferServer,
)
from twisted.conch.ssh.session import SSHSession
from twisted.conch.ssh.transport import SSHServerTransport, SSHTransportBase
from twisted.conch.ssh.userauth import SSHUserAuthServer
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from zope.interface import implementer

from gateway.sftp.packets import REQUEST_KINDS

#: (class, method, its parameters, where gateway/sftp uses it).
METHODS: list[tuple[type, str, list[str], str]] = [
    (FileTransferServer, "__init__", ["self", "data", "avatar"], "protocol: super().__init__"),
    (FileTransferServer, "_cbStatus", ["self", "result", "requestId", "msg"], "protocol: WRITE"),
    (FileTransferServer, "_ebStatus", ["self", "reason", "requestId", "msg"], "protocol"),
    (
        FileTransferServer,
        "_sendStatus",
        ["self", "requestId", "code", "message", "lang"],
        "protocol: unsupported packets, unknown handles, extension statuses",
    ),
    (FileTransferServer, "_cbReadLink", ["self", "result", "requestId"], "protocol: NAME"),
    (FileTransferServer, "_cbExtended", ["self", "data", "requestId"], "protocol: overridden"),
    (FileTransferServer, "_cbRead", ["self", "result", "requestId"], "protocol: overridden"),
    (FileTransferServer, "sendPacket", ["self", "kind", "data"], "protocol: overridden"),
    (FileTransferServer, "packet_EXTENDED", ["self", "data"], "protocol: overridden"),
    (FileTransferServer, "packet_READ", ["self", "data"], "protocol: overridden"),
    (FileTransferServer, "packet_WRITE", ["self", "data"], "protocol: overridden"),
    (FileTransferBase, "connectionLost", ["self", "reason"], "protocol: connectionLost"),
    (FileTransferServer, "_cbOpenFile", ["self", "fileObj", "requestId"], "answers: OPEN"),
    (
        FileTransferServer,
        "_cbOpenDirectory",
        ["self", "dirObj", "requestId"],
        "answers: OPENDIR",
    ),
    (
        FileTransferServer,
        "_cbClose",
        ["self", "result", "handle", "requestId", "isDir"],
        "answers: CLOSE",
    ),
    (FileTransferServer, "_cbStat", ["self", "result", "requestId"], "answers: STAT, FSTAT"),
    (FileTransferBase, "_parseAttributes", ["self", "data"], "answers: OPEN, SETSTAT, MKDIR"),
    (
        SSHSession,
        "__init__",
        [
            "self",
            "localWindow",
            "localMaxPacket",
            "remoteWindow",
            "remoteMaxPacket",
            "conn",
            "data",
            "avatar",
        ],
        "avatar: _SFTPOnlySession sets localWindow and localMaxPacket by keyword",
    ),
    (SSHSession, "eofReceived", ["self"], "avatar: overridden"),
    (SSHSession, "loseConnection", ["self"], "avatar: overridden"),
    (SSHChannel, "addWindowBytes", ["self", "data"], "avatar: overridden"),
    (SSHChannel, "stopWriting", ["self"], "avatar: _flush"),
    (SSHChannel, "startWriting", ["self"], "avatar: addWindowBytes"),
    (SSHChannel, "writeExtended", ["self", "dataType", "data"], "avatar: addWindowBytes"),
    (SSHChannel, "requestReceived", ["self", "requestType", "data"], "avatar: request_*"),
    (connection.SSHConnection, "ssh_CHANNEL_OPEN", ["self", "packet"], "ssh: overridden"),
    (connection.SSHConnection, "ssh_CHANNEL_DATA", ["self", "packet"], "ssh: overridden"),
    (
        connection.SSHConnection,
        "adjustWindow",
        ["self", "channel", "bytesToAdd"],
        "avatar: consumed() opens the window",
    ),
    (SSHSession, "request_subsystem", ["self", "data"], "avatar: session cap"),
    (SSHSession, "closed", ["self"], "avatar: frees the session slot"),
    (SSHFactory, "buildProtocol", ["self", "addr"], "ssh: pre-auth admission"),
    (SSHServerTransport, "connectionMade", ["self"], "ssh: login grace time"),
    (connection.SSHConnection, "sendData", ["self", "channel", "data"], "avatar: _flush"),
    (connection.SSHConnection, "sendClose", ["self", "channel"], "avatar: loseConnection"),
    (
        connection.SSHConnection,
        "sendRequest",
        ["self", "channel", "requestType", "data", "wantReply"],
        "avatar: exit-status",
    ),
    (SSHServerTransport, "sendExtInfo", ["self", "extensions"], "ssh: server-sig-algs"),
    (
        SSHServerTransport,
        "sendPacket",
        ["self", "messageType", "payload"],
        "kex_strict: overridden",
    ),
    (SSHServerTransport, "getPacket", ["self"], "kex_strict: overridden"),
    (SSHServerTransport, "sendKexInit", ["self"], "kex_strict: overridden"),
    (SSHServerTransport, "ssh_KEXINIT", ["self", "packet"], "kex_strict: overridden"),
    (SSHServerTransport, "ssh_NEWKEYS", ["self", "packet"], "kex_strict: overridden"),
    (SSHServerTransport, "dispatchMessage", ["self", "messageNum", "payload"], "kex_strict"),
    (SSHServerTransport, "sendDisconnect", ["self", "reason", "desc"], "kex_strict: _fail"),
    (SSHServerTransport, "connectionLost", ["self", "reason"], "kex_strict: overridden"),
    (
        SSHServerTransport,
        "_allowedKeyExchangeMessageType",
        ["self", "messageType"],
        "kex_strict: sendPacket queues what it refuses during key exchange",
    ),
    (
        transport.SSHCiphers,
        "setKeys",
        ["self", "outIV", "outKey", "inIV", "inKey", "outInteg", "inInteg"],
        "ciphers: PacketCiphers.setKeys is called in its place",
    ),
    (SSHUserAuthServer, "serviceStarted", ["self"], "ssh: overridden"),
    (SSHUserAuthServer, "serviceStopped", ["self"], "ssh: overridden"),
    (SSHUserAuthServer, "tryAuth", ["self", "kind", "user", "data"], "ssh: overridden"),
    (SSHUserAuthServer, "auth_password", ["self", "packet"], "ssh: overridden"),
    (SSHFactory, "getService", ["self", "transport", "service"], "ssh: overridden"),
    (ConchUser, "lookupSubsystem", ["self", "subsystem", "data"], "avatar: subsystemLookup"),
]


@implementer(ISFTPServer)
class NoServer:
    """An ISFTPServer that serves nothing (only Conch's own code runs)."""


class Listing:
    """A directory listing with no entries."""

    def __iter__(self) -> Listing:
        return self

    def __next__(self) -> Any:
        raise StopIteration


def sftp_server() -> tuple[FileTransferServer, StringTransport]:
    """Conch's own SFTP server protocol on a string transport."""
    server = FileTransferServer(avatar=NoServer())
    wire = StringTransport()
    server.makeConnection(wire)
    return server, wire


@pytest.mark.parametrize(
    ("owner", "name", "parameters", "used_by"),
    METHODS,
    ids=[f"{owner.__name__}.{name}" for owner, name, _, _ in METHODS],
)
def test_methods_keep_their_parameters(
    owner: type, name: str, parameters: list[str], used_by: str
) -> None:
    """Each Conch method the gateway calls or overrides exists with the same parameters."""
    method = getattr(owner, name, None)
    assert callable(method), f"{owner.__name__}.{name} is gone (used by {used_by})"
    assert list(inspect.signature(method).parameters) == parameters, used_by


def test_sftp_packet_names_and_handlers() -> None:
    """``packetTypes`` names every request type, and ``packet_<name>`` handles it (the
    protocol's dispatch and its timing both go by these names); ``_log`` is a Logger."""
    assert isinstance(FileTransferBase.packetTypes, dict)
    for kind in sorted(REQUEST_KINDS | {filetransfer.FXP_INIT}):
        name = FileTransferBase.packetTypes[kind]
        assert callable(getattr(FileTransferServer, f"packet_{name}", None)), name
    assert isinstance(FileTransferBase._log, Logger)


def test_sftp_server_state() -> None:
    """``client`` is the ISFTPServer; ``openFiles`` maps the wire handle to the file object,
    ``openDirs`` to ``[directory, iterator]``; ``_cbReadLink`` answers one NAME."""
    server, wire = sftp_server()
    assert isinstance(server.client, NoServer)
    assert server.openFiles == {} and server.openDirs == {}
    file = object()
    server._cbOpenFile(file, b"\0\0\0\1")
    reply = wire.value()
    assert reply[4] == FXP_HANDLE
    (length,) = struct.unpack_from("!L", reply, 9)
    assert server.openFiles[reply[13 : 13 + length]] is file
    directory = Listing()
    server._cbOpenDirectory(directory, b"\0\0\0\2")
    ((listing, entries),) = server.openDirs.values()
    assert listing is directory and iter(entries) is entries
    wire.clear()
    server._cbReadLink(b"/path", b"\0\0\0\3")
    reply = wire.value()
    assert reply[4] == FXP_NAME and reply[5:13] == b"\0\0\0\3\0\0\0\1"
    assert reply[13:22] == b"\0\0\0\5/path"


def test_session_channel_state() -> None:
    """The channel attributes the session channel's queue reads and sets."""
    session = SSHSession(remoteWindow=10, remoteMaxPacket=5, localWindow=7, localMaxPacket=3)
    assert (session.remoteWindowLeft, session.remoteMaxPacket) == (10, 5)
    assert (session.localWindowSize, session.localWindowLeft, session.localMaxPacket) == (7, 7, 3)
    assert session.areWriting and not session.closing
    assert session.extBuf == []
    assert session.conn is None and session.avatar is None
    assert session.client is None and session.session is None


def test_channel_requests_dispatch_by_name() -> None:
    """A channel request ``pty-req`` goes to ``request_pty_req`` (the session channel's
    refusals are named so)."""

    class Recording(SSHChannel):
        """A channel that records its pty requests."""

        def request_pty_req(self, data: bytes) -> int:
            self.got = data
            return 1

    channel = Recording()
    assert channel.requestReceived(b"pty-req", b"data") == 1
    assert channel.got == b"data"


def test_subsystems_are_made_from_data_and_avatar() -> None:
    """``subsystemLookup[name](data, avatar=user)`` makes a subsystem (AccountAvatar's
    ``_open_sftp``); ``channelLookup`` maps channel types to classes."""
    user = ConchUser()
    assert isinstance(user.channelLookup, dict)
    made: list[tuple[bytes, ConchUser]] = []

    def subsystem(data: bytes, avatar: ConchUser) -> Any:
        made.append((data, avatar))
        return "made"

    user.subsystemLookup[b"sftp"] = subsystem
    assert user.lookupSubsystem(b"sftp", b"request") == "made"
    assert made == [(b"request", user)]


def test_userauth_dispatches_by_method_name() -> None:
    """``tryAuth`` calls ``auth_<method>`` with the method's data (auth_password is ours)."""
    server = SSHUserAuthServer()
    server.supportedAuthentications = [b"password"]
    calls: list[bytes] = []
    server.auth_password = lambda data: calls.append(data) or "deferred"  # type: ignore[method-assign]
    assert server.tryAuth(b"password", b"user", b"data") == "deferred"
    assert calls == [b"data"]


def test_class_attributes_the_gateway_sets_or_reads() -> None:
    """Class attributes the gateway's subclasses override or read."""
    assert SSHUserAuthServer.clock is not None
    assert isinstance(SSHUserAuthServer.loginTimeout, int)
    assert isinstance(SSHUserAuthServer.attemptsBeforeDisconnect, int)
    for name in ("supportedKeyExchanges", "supportedCiphers", "supportedMACs"):
        assert isinstance(getattr(SSHTransportBase, name), list), name
    assert isinstance(SSHServerTransport.supportedCompressions, list)
    assert isinstance(SSHServerTransport.ourVersionString, bytes)
    assert isinstance(SSHFactory.services, dict)
    assert SSHFactory.protocol is SSHServerTransport
    assert connection.MSG_CHANNEL_OPEN_FAILURE == 92
    assert connection.EXTENDED_DATA_STDERR == 1
    assert transport.DISCONNECT_BY_APPLICATION == 11
    assert transport.DISCONNECT_TOO_MANY_CONNECTIONS == 12
    assert connection.OPEN_ADMINISTRATIVELY_PROHIBITED == 1
    assert issubclass(conch_error.IgnoreAuthentication, Exception)
    assert issubclass(conch_error.ValidPublicKey, Exception)


def test_transport_state_the_packet_layer_replaces() -> None:
    """How Conch's server transport keeps the state kex_strict reads and writes: the sequence
    numbers, the buffer, ``currentEncryptions``/``nextEncryptions`` (an ``SSHCiphers`` with the
    negotiated names, replaced by a PacketCiphers), the key-exchange state and its queue."""
    server = SSHServerTransport()
    assert (server.incomingPacketSequence, server.outgoingPacketSequence) == (0, 0)
    assert server.buf == b""
    assert server._keyExchangeState == server._KEY_EXCHANGE_NONE
    assert server._blockedByKeyExchange is None
    assert server._allowedKeyExchangeMessageType(transport.MSG_KEX_DH_GEX_REQUEST_OLD)
    assert not server._allowedKeyExchangeMessageType(transport.MSG_SERVICE_REQUEST)
    ciphers = transport.SSHCiphers(b"aes128-ctr", b"aes256-ctr", b"hmac-sha2-256", b"none")
    assert (ciphers.outCipType, ciphers.inCipType) == (b"aes128-ctr", b"aes256-ctr")
    assert (ciphers.outMACType, ciphers.inMACType) == (b"hmac-sha2-256", b"none")
    assert (transport.MSG_KEXINIT, transport.MSG_NEWKEYS) == (20, 21)
    assert transport.MSG_SERVICE_REQUEST == 5 and transport.MSG_SERVICE_ACCEPT == 6
    assert transport.DISCONNECT_PROTOCOL_ERROR == 2 and transport.DISCONNECT_MAC_ERROR == 5


@pytest.mark.parametrize(
    ("code", "text", "used_by"),
    [
        (SSHTransportBase.ssh_KEXINIT, "self.nextEncryptions = SSHCiphers(", "kex_strict"),
        (SSHTransportBase.ssh_KEXINIT, "self.sendKexInit()", "kex_strict: ours first"),
        (SSHTransportBase.ssh_KEXINIT, "self.kexAlg = ", "kex_strict: marker check"),
        (SSHTransportBase.sendKexInit, "self.supportedCiphers", "kex_strict: per-client offer"),
        (SSHTransportBase.sendKexInit, "self.supportedMACs", "kex_strict: per-client offer"),
        (SSHTransportBase.sendKexInit, "self.supportedKeyExchanges", "kex_strict: marker"),
        (SSHTransportBase._keySetup, "self.nextEncryptions.setKeys(", "ciphers: PacketCiphers"),
        (SSHTransportBase._newKeys, "self.currentEncryptions = self.nextEncryptions", "ciphers"),
        (SSHTransportBase.dataReceived, "self.getPacket()", "kex_strict: getPacket"),
        (SSHTransportBase.isEncrypted, "currentEncryptions.outCipType", "PacketCiphers names"),
        (SSHFactory.startFactory, "self.publicKeys", "GatewaySSHFactory sets it"),
        (SSHFactory.startFactory, "self.privateKeys", "GatewaySSHFactory sets it"),
        (SSHFactory.startFactory, "self.primes", "GatewaySSHFactory sets it (None)"),
        (transport, "self.otherVersionString =", "tryAuth: the client's version"),
        (userauth, "self.transport.avatar = avatar", "_SFTPOnlyConnection finds the avatar"),
        (SSHUserAuthServer.serviceStarted, "self.portal =", "auth_password logs in with it"),
        (SSHUserAuthServer.serviceStarted, "self.clock.callLater", "serviceStarted sets clock"),
        (SSHUserAuthServer.ssh_USERAUTH_REQUEST, "self.user = user", "auth_password"),
        (SSHUserAuthServer.ssh_USERAUTH_REQUEST, "self.tryAuth(", "tryAuth is overridden"),
        (
            SSHUserAuthServer._ebBadAuth,
            "self.loginAttempts > self.attemptsBeforeDisconnect",
            "max_auth_tries: attemptsBeforeDisconnect is one less",
        ),
        (
            connection.SSHConnection.ssh_CHANNEL_DATA,
            "channel.localWindowLeft -= dataLength",
            "ssh: a flow-managed channel's window is counted as Conch counts it",
        ),
        (connection.SSHConnection.__init__, "self.channels = {}", "ssh: channel by number"),
        (
            SSHSession.request_subsystem,
            "subsys.makeConnection(asProcProt)",
            "protocol: its transport is the SSHSessionProcessProtocol (``.session``)",
        ),
        (conch_session.SSHSessionProcessProtocol.__init__, "self.session = session", "protocol"),
    ],
)
def test_attributes_conch_sets_where_the_gateway_reads_them(
    code: Any, text: str, used_by: str
) -> None:
    """Instance attributes Conch sets (or reads) in its own code, found in that code."""
    assert text in inspect.getsource(code), used_by


def test_channel_data_dispatch_the_shortcut_stands_for() -> None:
    """gateway/sftp/ssh.py hands CHANNEL_DATA to ``ssh_CHANNEL_DATA`` itself; Conch's
    connection must add nothing to the service's dispatch by name that it would skip."""
    from twisted.conch.ssh.service import SSHService

    assert connection.SSHConnection.packetReceived is SSHService.packetReceived
    assert connection.SSHConnection.protocolMessages[connection.MSG_CHANNEL_DATA] == (
        "MSG_CHANNEL_DATA"
    )
    assert "ssh_%s" in inspect.getsource(SSHService.packetReceived)
