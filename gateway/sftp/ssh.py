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
    MSG_CHANNEL_OPEN_FAILURE,
    OPEN_ADMINISTRATIVELY_PROHIBITED,
    SSHConnection,
)
from twisted.conch.ssh.factory import SSHFactory
from twisted.conch.ssh.keys import Key
from twisted.conch.ssh.transport import SSHTransportBase
from twisted.conch.ssh.userauth import SSHUserAuthServer
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

import gateway
from gateway.accounts import AccountStore
from gateway.sftp.auth import (
    USER_KEY_ALGORITHMS,
    AccountPasswordChecker,
    AccountPublicKeyChecker,
    AccountRealm,
)
from gateway.sftp.avatar import AccountAvatar, SFTPServerFactory
from gateway.sftp.hostkey import HostKeyError, generate_host_key, load_host_key
from gateway.sftp.kex_strict import AlgorithmOffer, StrictKexTransport
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


class _GatewayServerTransport(StrictKexTransport):
    """The server transport restricted to modern algorithms."""

    supportedKeyExchanges = KEY_EXCHANGES
    strict_offer = AlgorithmOffer(ciphers=tuple(STRICT_KEX_CIPHERS), macs=tuple(MACS))
    plain_offer = AlgorithmOffer(ciphers=tuple(CIPHERS), macs=tuple(MACS))
    supportedCompressions = [b"none"]
    ourVersionString = b"SSH-2.0-Gateway_" + gateway.__version__.encode("ascii")

    def connectionMade(self) -> None:
        """Turn Nagle's algorithm off, then start as usual.

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
    """``ssh-userauth`` with growing password delays, login logging and a short timeout."""

    loginTimeout = 120
    attemptsBeforeDisconnect = 6

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
        self._waits: set[Deferred[None]] = set()
        self._stopped = False
        super().serviceStarted()

    def serviceStopped(self) -> None:
        """Stop waiting for any delay: the connection is gone."""
        self._stopped = True
        super().serviceStopped()
        for d in list(self._waits):
            d.cancel()

    def _address(self) -> str:
        assert self.transport is not None and self.transport.transport is not None
        peer = self.transport.transport.getPeer()
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
        d = super().tryAuth(kind, user, data)
        name = user.decode("utf-8", "replace")
        address = self._address()

        def succeeded(result: tuple[Any, Any, Callable[[], None]]) -> Any:
            _, avatar, logout = result
            if self._stopped:
                logout()
                raise IgnoreAuthentication()
            if isinstance(avatar, AccountAvatar):
                avatar.remote_address = address
                version = getattr(self.transport, "otherVersionString", b"")
                avatar.client_version = version.decode("ascii", "replace")
            self._log_to.info(
                "{user} logged in from {address} ({method})",
                user=name,
                address=address,
                method=kind.decode("ascii", "replace"),
            )
            return result

        def failed(f: Failure) -> Failure:
            if kind == b"password" and f.check(UnauthorizedLogin):
                self._log_to.warn(
                    "failed password for {user!r} from {address}", user=name, address=address
                )
            return f

        return d.addCallbacks(succeeded, failed)

    def auth_password(self, packet: bytes) -> Deferred[Any]:
        """Check a password after any pending delay; answer failures after a longer one."""
        password = getNS(packet[1:])[0]
        user = self.user
        assert isinstance(user, bytes)
        name = user.decode("utf-8", "replace")
        address = self._address()
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
    ) -> None:
        if host_key.isPublic() or host_key.type() != "Ed25519":
            raise ValueError("the host key must be an Ed25519 private key")
        self.reactor = reactor
        self.portal = portal
        self.throttle = throttle
        self.log = log
        self.publicKeys = {host_key.sshType(): host_key.public()}
        self.privateKeys = {host_key.sshType(): host_key}
        self.primes = None
        self.services = {
            b"ssh-userauth": _ThrottledUserAuthServer,
            b"ssh-connection": _SFTPOnlyConnection,
        }

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
) -> GatewaySSHFactory:
    """Build the gateway's SSH server factory.

    ``reactor`` provides time and threads (password hashing runs in its thread
    pool); ``sftp_server_factory`` makes the file-operation server of a session.
    """
    portal = Portal(
        AccountRealm(accounts, sftp_server_factory, log),
        [AccountPasswordChecker(accounts, reactor, log), AccountPublicKeyChecker(accounts, log)],
    )
    return GatewaySSHFactory(
        reactor=reactor,
        host_key=host_key,
        portal=portal,
        throttle=LoginThrottle(clock=reactor),
        log=log,
    )
