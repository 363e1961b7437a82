"""The gateway's SSH server: algorithms, transport, services and the factory.

This module is the SSH layer only. A session that authenticates (checkers and
realm: :mod:`gateway.sftp.auth`) gets an
:class:`~gateway.sftp.avatar.AccountAvatar` (its account's name, root
capability and options); when the client asks for the ``sftp`` subsystem, the
avatar calls the ``sftp_server_factory`` it was given to obtain the
`ISFTPServer` that does the file operations (:mod:`gateway.sftp.avatar`).
Channels other than ``session`` (port forwarding and the rest) are refused
here; shell, exec, pty, environment, agent and X11 requests by the session
channel.

Algorithms offered (Conch 26.x implements none of OpenSSH's AEAD ciphers or
``-etm`` MACs; :mod:`gateway.sftp.ciphers` does, on ``cryptography``, and
:mod:`gateway.sftp.kex_strict` adds strict key exchange):

- key exchange: ``mlkem768x25519-sha256`` (post-quantum hybrid, when the
  ``cryptography`` library provides ML-KEM), ``curve25519-sha256``,
  ``curve25519-sha256@libssh.org``, and the ``kex-strict-s-v00@openssh.com``
  marker (the Terrapin fix);
- host key: ``ssh-ed25519`` only;
- ciphers, in OpenSSH's own order: ``chacha20-poly1305@openssh.com`` (only to
  clients that ask for strict key exchange: without it, Terrapin breaks it),
  ``aes128-gcm@openssh.com``, ``aes256-gcm@openssh.com``, ``aes128-ctr``,
  ``aes256-ctr``;
- MACs (for the CTR ciphers): ``hmac-sha2-256-etm@openssh.com``,
  ``hmac-sha2-512-etm@openssh.com``; no encrypt-and-MAC HMAC (``ssh-audit``
  warns of those) and nothing with SHA-1;
- no compression;
- user keys: Ed25519, ECDSA, RSA with SHA-2 signatures (``rsa-sha2-512``,
  ``rsa-sha2-256``) and FIDO ``sk-`` keys; ``ssh-rsa`` (SHA-1) and DSA are
  refused, and ``server-sig-algs`` advertises exactly this list
  (:data:`~gateway.sftp.auth.USER_KEY_ALGORITHMS`).

When the node keeps an audit log, each password and public-key attempt, its
outcome and the logout are recorded (:mod:`gateway.sftp.login_audit`).

Failed password logins are answered after a growing delay (0.5 s doubling up
to 8 s) kept per remote address and per account name; further password attempts
for the same address or name wait for that delay too, so parallel connections
gain nothing. Public-key failures are not delayed: clients legitimately offer
several keys, and keys cannot be guessed.

The names of :mod:`gateway.sftp.auth`, :mod:`gateway.sftp.avatar` and
:mod:`gateway.sftp.hostkey` this module long held are still importable from it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from twisted.conch.error import IgnoreAuthentication
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.connection import (
    MSG_CHANNEL_DATA,
    MSG_CHANNEL_OPEN_FAILURE,
    OPEN_ADMINISTRATIVELY_PROHIBITED,
    SSHConnection,
)
from twisted.conch.ssh.factory import SSHFactory
from twisted.conch.ssh.keys import Key
from twisted.conch.ssh.transport import (
    DISCONNECT_TOO_MANY_CONNECTIONS,
    SSHTransportBase,
)
from twisted.conch.ssh.userauth import SSHUserAuthServer
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

import gateway
from gateway.accounts import AccountStore
from gateway.audit.events import NO_AUDIT, IAuditLog
from gateway.sftp.account_limits import AccountLimits, AccountSlots
from gateway.sftp.auth import (
    USER_KEY_ALGORITHMS,
    AccountPasswordChecker,
    AccountPublicKeyChecker,
    AccountRealm,
)
from gateway.sftp.avatar import AccountAvatar, SFTPServerFactory
from gateway.sftp.flow import IChannelFlow
from gateway.sftp.hostkey import HostKeyError, generate_host_key, load_host_key
from gateway.sftp.kex_strict import AlgorithmOffer, StrictKexTransport
from gateway.sftp.login_audit import LoginAudit
from gateway.sftp.login_deadline import LoginDeadline
from gateway.sftp.preauth import (
    ConnectionGate,
    PreauthLimits,
    RefusalLog,
    RefusedConnection,
    Startup,
    source_of,
)
from gateway.sftp.throttle import LoginThrottle

__all__ = [
    "CIPHERS",
    "KEY_EXCHANGES",
    "MACS",
    "STRICT_KEX_CIPHERS",
    "USER_KEY_ALGORITHMS",
    "AccountAvatar",
    "AccountPasswordChecker",
    "AccountPublicKeyChecker",
    "AccountRealm",
    "GatewaySSHFactory",
    "HostKeyError",
    "LoginThrottle",
    "SFTPServerFactory",
    "generate_host_key",
    "load_host_key",
    "make_ssh_factory",
]


def _offered(preferred: list[bytes], implemented: list[bytes]) -> list[bytes]:
    return [name for name in preferred if name in implemented]


KEY_EXCHANGES = _offered(
    [b"mlkem768x25519-sha256", b"curve25519-sha256", b"curve25519-sha256@libssh.org"],
    SSHTransportBase.supportedKeyExchanges,
)
#: Ciphers offered to every client, most preferred first.
CIPHERS = [b"aes128-gcm@openssh.com", b"aes256-gcm@openssh.com", b"aes128-ctr", b"aes256-ctr"]
#: Ciphers offered to clients that ask for strict key exchange.
STRICT_KEX_CIPHERS = [b"chacha20-poly1305@openssh.com", *CIPHERS]
MACS = [b"hmac-sha2-256-etm@openssh.com", b"hmac-sha2-512-etm@openssh.com"]


class _SFTPOnlyConnection(SSHConnection):
    """``ssh-connection`` that refuses every channel type but ``session`` up front.

    (Conch would refuse them too, but logs each refusal as a traceback.)
    """

    def packetReceived(self, messageNum: int, packet: bytes) -> None:
        """Conch's dispatch (a handler looked up by a name made for every packet), but
        for the packets every request comes in: CHANNEL_DATA goes straight to its handler."""
        if messageNum == MSG_CHANNEL_DATA:
            self.ssh_CHANNEL_DATA(packet)
            return
        super().packetReceived(messageNum, packet)

    def ssh_CHANNEL_OPEN(self, packet: bytes) -> None:
        """Open session channels; refuse forwarding and other channel types quietly."""
        channel_type, rest = getNS(packet)
        if channel_type == b"session":
            super().ssh_CHANNEL_OPEN(packet)
            return
        avatar = getattr(self.transport, "avatar", None)
        if isinstance(avatar, AccountAvatar):
            avatar.refused(channel_type.decode("ascii", "replace")[:64])
        assert self.transport is not None
        self.transport.sendPacket(
            MSG_CHANNEL_OPEN_FAILURE,
            rest[:4]  # the sender's channel number
            + struct.pack(">L", OPEN_ADMINISTRATIVELY_PROHIBITED)
            + NS(b"only SFTP is served here")
            + NS(b""),
        )

    def ssh_CHANNEL_DATA(self, packet: bytes) -> None:
        """Data for a channel; a channel that manages its own receive window
        (:class:`~gateway.sftp.flow.IChannelFlow`) opens it as it consumes the data,
        so a client is slowed by the window instead of buffered without bound."""
        local_channel, length = struct.unpack(">2L", packet[:8])
        found = self.channels.get(local_channel)
        if not IChannelFlow.providedBy(found):
            super().ssh_CHANNEL_DATA(packet)
            return
        channel: Any = found  # an SSHChannel
        if length > channel.localWindowLeft or length > channel.localMaxPacket:
            self._log.error("too much data")  # as Conch does: the client broke the window
            self.sendClose(channel)
            return
        data = getNS(packet[4:])[0]
        channel.localWindowLeft -= length
        channel.dataReceived(data)


class _GatewayServerTransport(LoginDeadline, StrictKexTransport):
    """The server transport restricted to modern algorithms, with the login grace time."""

    supportedKeyExchanges = KEY_EXCHANGES
    strict_offer = AlgorithmOffer(ciphers=tuple(STRICT_KEX_CIPHERS), macs=tuple(MACS))
    plain_offer = AlgorithmOffer(ciphers=tuple(CIPHERS), macs=tuple(MACS))
    supportedCompressions = [b"none"]
    ourVersionString = b"SSH-2.0-Gateway_" + gateway.__version__.encode("ascii")

    def connectionMade(self) -> None:
        """Turn Nagle's algorithm off, then start as usual (the grace time included).

        Replies are small packets sent while earlier ones may be unacknowledged;
        with Nagle on, each can wait for the client's delayed ACK. Twisted
        already gathers everything written in one reactor turn into one send.
        """
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            with suppress(OSError):
                set_no_delay(True)
        super().connectionMade()

    def sendExtInfo(self, extensions: list[tuple[bytes, bytes]]) -> None:
        """Advertise the user-key algorithms we accept, not the host key's, as server-sig-algs."""
        super().sendExtInfo(
            [
                (name, b",".join(USER_KEY_ALGORITHMS) if name == b"server-sig-algs" else value)
                for name, value in extensions
            ]
        )


class _ThrottledUserAuthServer(SSHUserAuthServer):
    """``ssh-userauth`` with growing password delays, login logging, the login grace time,
    ``max_auth_tries`` and the cap on each account's connections."""

    loginTimeout = 120
    attemptsBeforeDisconnect = 5  # Conch disconnects after the sixth failure

    _throttle: LoginThrottle
    _log_to: Logger

    def serviceStarted(self) -> None:
        """Take the clock, throttle and log from the factory, then start as usual."""
        assert self.transport is not None
        factory = self.transport.factory
        assert isinstance(factory, GatewaySSHFactory)
        self.clock = factory.reactor
        self._throttle = factory.throttle
        self._log_to = factory.log
        self._audit = factory.audit
        self._attempt: LoginAudit | None = None  # the attempt auth_password is checking
        self._slots = factory.slots
        self.loginTimeout = int(factory.limits.login_grace_time) + 1  # the transport's is first
        # Conch disconnects when a failure makes more than this many.
        self.attemptsBeforeDisconnect = factory.limits.max_auth_tries - 1
        self._waits: set[Deferred[None]] = set()
        self._stopped = False
        super().serviceStarted()

    @property
    def loginAttempts(self) -> int:
        """Failed attempts on this *connection*. A client may request ``ssh-userauth`` again
        (paramiko does before each method), and Conch's new service would count from 0: so
        the count lives on the transport, and Conch's reset to 0 is ignored."""
        return int(getattr(self.transport, "failed_logins", 0))

    @loginAttempts.setter
    def loginAttempts(self, value: int) -> None:
        if value > 0:
            self.transport.failed_logins = value  # type: ignore[union-attr]

    def serviceStopped(self) -> None:
        """Stop waiting for any delay: the connection is gone."""
        self._stopped = True
        super().serviceStopped()
        for d in list(self._waits):
            d.cancel()

    def _peer(self) -> IAddress:
        assert self.transport is not None and self.transport.transport is not None
        return self.transport.transport.getPeer()

    def _address(self) -> str:
        peer = self._peer()
        return str(getattr(peer, "host", peer))

    def _wait(self, seconds: float) -> Deferred[None]:
        if seconds <= 0:
            return defer.succeed(None)
        d: Deferred[None] = deferLater(self.clock, seconds, lambda: None)
        self._waits.add(d)

        def done(result: object) -> object:
            self._waits.discard(d)
            if isinstance(result, Failure) and result.check(CancelledError):
                return Failure(IgnoreAuthentication())
            return result

        return d.addBoth(done)

    def tryAuth(self, kind: bytes, user: bytes, data: bytes) -> Deferred[Any]:
        """Try a method; log the outcome and drop a login whose connection went away."""
        attempt = LoginAudit.start(self._audit, self.clock, kind, user, data, self._peer())
        self._attempt = attempt
        d = super().tryAuth(kind, user, data)
        self._attempt = None
        name = user.decode("utf-8", "replace")
        address = self._address()

        def succeeded(result: tuple[Any, Any, Callable[[], None]]) -> Any:
            interface, avatar, logout = result
            if self._stopped:
                logout()
                raise IgnoreAuthentication()
            account = avatar.name if isinstance(avatar, AccountAvatar) else name
            release = self._slots.connect(account)
            if release is None:
                logout()
                refusal = self._refuse_connection(account, address)
                if attempt is not None:
                    attempt.refused(refusal)
                raise IgnoreAuthentication()
            transport = self.transport
            if isinstance(transport, _GatewayServerTransport):
                transport.logged_in()
            version = getattr(self.transport, "otherVersionString", b"").decode("ascii", "replace")
            if isinstance(avatar, AccountAvatar):
                avatar.remote_address = address
                avatar.remote_port = getattr(self._peer(), "port", None)
                avatar.client_version = version
            logged_out = attempt.succeeded(account, version) if attempt is not None else None
            self._log_to.info(
                "{user} logged in from {address} ({method})",
                user=name,
                address=address,
                method=kind.decode("ascii", "replace"),
            )

            def log_out() -> None:
                release()
                logout()
                if logged_out is not None:
                    logged_out()

            return interface, avatar, log_out

        def failed(f: Failure) -> Failure:
            if kind == b"password" and f.check(UnauthorizedLogin):
                self._log_to.warn(
                    "failed password for {user!r} from {address}", user=name, address=address
                )
            if attempt is not None and kind != b"password":  # a password's: before its delay
                attempt.failed(f)
            return f

        return d.addCallbacks(succeeded, failed)

    def _refuse_connection(self, name: str, address: str) -> str:
        """Close a connection that logged in to an account that has all it may have; why."""
        message = self._slots.too_many_connections(name)
        assert self.transport is not None
        factory = self.transport.factory
        assert isinstance(factory, GatewaySSHFactory)
        factory.gate.refusals.refused(source_of(address), message)
        self.transport.sendDisconnect(DISCONNECT_TOO_MANY_CONNECTIONS, message.encode())
        return message

    def auth_password(self, packet: bytes) -> Deferred[Any]:
        """Check a password after any pending delay; answer failures after a longer one."""
        password = getNS(packet[1:])[0]
        user = self.user
        assert isinstance(user, bytes)
        name = user.decode("utf-8", "replace")
        address = self._address()
        attempt = self._attempt
        d = self._wait(self._throttle.admit(address, name))
        d.addCallback(
            lambda _: self.portal.login(UsernamePassword(user, password), None, IConchUser)
        )

        def ok(result: Any) -> Any:
            self._throttle.succeeded(name)
            return result

        def bad(f: Failure) -> Any:
            if f.check(IgnoreAuthentication):
                return f
            if attempt is not None:
                attempt.failed(f)
            return self._wait(self._throttle.failed(address, name)).addCallback(lambda _: f)

        return d.addCallbacks(ok, bad)


class GatewaySSHFactory(SSHFactory):
    """An SSH server factory with one Ed25519 host key, modern algorithms and a portal."""

    protocol = _GatewayServerTransport

    def __init__(
        self,
        *,
        reactor: IReactorTime,
        host_key: Key,
        portal: Portal,
        throttle: LoginThrottle,
        log: Logger,
        limits: PreauthLimits | None = None,
        slots: AccountSlots | None = None,
        audit: IAuditLog = NO_AUDIT,
    ) -> None:
        if host_key.isPublic() or host_key.type() != "Ed25519":
            raise ValueError("the host key must be an Ed25519 private key")
        self.reactor = reactor
        self.portal = portal
        self.throttle = throttle
        self.log = log
        self.limits = limits or PreauthLimits()
        self.slots = slots or AccountSlots()
        self.audit = audit
        self.gate = ConnectionGate(self.limits, reactor, RefusalLog(reactor, log))
        self.publicKeys = {host_key.sshType(): host_key.public()}
        self.privateKeys = {host_key.sshType(): host_key}
        self.primes = None
        self.services = {
            b"ssh-userauth": _ThrottledUserAuthServer,
            b"ssh-connection": _SFTPOnlyConnection,
        }

    def buildProtocol(self, addr: IAddress) -> Protocol:  # type: ignore[override]
        """An SSH transport for an admitted connection; a refusal line for the others."""
        admitted = self.gate.admit(str(getattr(addr, "host", addr)))
        if not isinstance(admitted, Startup):
            return RefusedConnection(admitted.line)
        transport = super().buildProtocol(addr)
        assert isinstance(transport, _GatewayServerTransport)
        transport.startup = admitted
        return transport

    def getService(self, transport: Any, service: bytes) -> Any:
        """The service class for a request; None (disconnect) for unknown services."""
        if service == b"ssh-userauth" or hasattr(transport, "avatar"):
            return self.services.get(service)
        return None


def make_ssh_factory(
    *,
    reactor: Any,
    host_key: Key,
    accounts: AccountStore,
    sftp_server_factory: SFTPServerFactory,
    log: Logger,
    limits: PreauthLimits | None = None,
    account_limits: AccountLimits | None = None,
    audit: IAuditLog = NO_AUDIT,
) -> GatewaySSHFactory:
    """Build the gateway's SSH server factory.

    ``reactor`` provides time and threads (password hashing runs in its thread
    pool); ``sftp_server_factory`` makes the file-operation server of a session;
    ``limits`` and ``account_limits`` default to the configuration's defaults;
    ``audit`` records logins, failed logins and logouts.
    """
    slots = AccountSlots(account_limits or AccountLimits())
    portal = Portal(
        AccountRealm(accounts, sftp_server_factory, log, slots),
        [AccountPasswordChecker(accounts, reactor, log), AccountPublicKeyChecker(accounts, log)],
    )
    return GatewaySSHFactory(
        reactor=reactor,
        host_key=host_key,
        portal=portal,
        throttle=LoginThrottle(clock=reactor),
        log=log,
        limits=limits,
        slots=slots,
        audit=audit,
    )
