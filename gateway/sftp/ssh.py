"""The gateway's SSH server: host key, algorithms, logins and the "sftp" subsystem.

This module is the SSH layer only. A session that authenticates gets an
`AccountAvatar` (its account's name, root capability and options); when the
client asks for the ``sftp`` subsystem, the avatar calls the
``sftp_server_factory`` it was given to obtain the `ISFTPServer` that does the
file operations. Shell, exec, pty, environment, agent/X11 and port-forwarding
requests are refused.

Algorithms offered (Conch 26.x has no chacha20-poly1305, no AES-GCM, no
``-etm`` MACs and no fixed DH groups 16/18, so this is the modern subset of what
it implements):

- key exchange: ``mlkem768x25519-sha256`` (post-quantum hybrid, when the
  ``cryptography`` library provides ML-KEM), ``curve25519-sha256``,
  ``curve25519-sha256@libssh.org``;
- host key: ``ssh-ed25519`` only;
- ciphers: ``aes256-ctr``, ``aes128-ctr``; MACs: ``hmac-sha2-512``,
  ``hmac-sha2-256`` (CTR with encrypt-and-MAC is not affected by the Terrapin
  prefix-truncation attack, which needs chacha20-poly1305 or an ``-etm`` MAC);
- no compression;
- user keys: Ed25519, ECDSA, RSA with SHA-2 signatures (``rsa-sha2-512``,
  ``rsa-sha2-256``) and FIDO ``sk-`` keys; ``ssh-rsa`` (SHA-1) and DSA are
  refused, and ``server-sig-algs`` advertises exactly this list.

Failed password logins are answered after a growing delay (0.5 s doubling up
to 8 s) kept per remote address and per account name; further password attempts
for the same address or name wait for that delay too, so parallel connections
gain nothing. Public-key failures are not delayed: clients legitimately offer
several keys, and keys cannot be guessed.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from typing import Any, ClassVar

from attrs import define, field
from twisted.conch.avatar import ConchUser
from twisted.conch.error import IgnoreAuthentication, ValidPublicKey
from twisted.conch.interfaces import IConchUser, ISFTPServer
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.connection import (
    MSG_CHANNEL_OPEN_FAILURE,
    OPEN_ADMINISTRATIVELY_PROHIBITED,
    SSHConnection,
)
from twisted.conch.ssh.factory import SSHFactory
from twisted.conch.ssh.keys import Key
from twisted.conch.ssh.session import SSHSession
from twisted.conch.ssh.transport import SSHServerTransport, SSHTransportBase
from twisted.conch.ssh.userauth import SSHUserAuthServer
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey, IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

import gateway
from gateway.accounts import Account, AccountFileError, AccountStore
from gateway.sftp.hostkey import HostKeyError, generate_host_key, load_host_key
from gateway.sftp.protocol import GatewayFileTransferServer
from gateway.sftp.throttle import LoginThrottle

__all__ = [
    "CIPHERS",
    "KEY_EXCHANGES",
    "MACS",
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
CIPHERS = _offered([b"aes256-ctr", b"aes128-ctr"], SSHTransportBase.supportedCiphers)
MACS = _offered([b"hmac-sha2-512", b"hmac-sha2-256"], SSHTransportBase.supportedMACs)
USER_KEY_ALGORITHMS = [
    b"ssh-ed25519",
    b"sk-ssh-ed25519@openssh.com",
    b"ecdsa-sha2-nistp256",
    b"ecdsa-sha2-nistp384",
    b"ecdsa-sha2-nistp521",
    b"sk-ecdsa-sha2-nistp256@openssh.com",
    b"rsa-sha2-512",
    b"rsa-sha2-256",
]

SFTPServerFactory = Callable[["AccountAvatar"], ISFTPServer]


# --- host key ----------------------------------------------------------------


def _decode_name(username: bytes) -> str:
    try:
        return username.decode("utf-8")
    except UnicodeDecodeError:
        raise UnauthorizedLogin("user name is not UTF-8") from None


@implementer(ICredentialsChecker)
@define
class AccountPasswordChecker:
    """Checks passwords against the account store, off the reactor thread.

    At most ``concurrency`` Argon2id checks (64 MiB each) run at once.
    """

    credentialInterfaces: ClassVar[tuple[type, ...]] = (IUsernamePassword,)
    accounts: AccountStore
    reactor: Any  # IReactorThreads
    log: Logger
    concurrency: int = 2
    _semaphore: DeferredSemaphore = field(init=False)

    @_semaphore.default
    def _make_semaphore(self) -> DeferredSemaphore:
        return DeferredSemaphore(self.concurrency)

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[bytes | tuple[()]]:
        """Fire with the user name if the password is right, else fail UnauthorizedLogin."""
        username: bytes = credentials.username
        try:
            name = _decode_name(username)
        except UnauthorizedLogin:
            return defer.fail()
        d: Deferred[bool] = self._semaphore.run(  # Argon2id: ~64 MiB, ~70 ms each
            deferToThreadPool,
            self.reactor,
            self.reactor.getThreadPool(),
            self.accounts.verify_password,
            name,
            credentials.password,
        )

        def checked(ok: bool) -> bytes | tuple[()]:
            if not ok:
                raise UnauthorizedLogin("wrong user name or password")
            return username

        def broken(f: Failure) -> Failure:
            if f.check(AccountFileError):
                self.log.error("cannot check logins: {message}", message=f.getErrorMessage())
                return Failure(UnauthorizedLogin("accounts unavailable"))
            return f

        return d.addCallbacks(checked, broken)


@implementer(ICredentialsChecker)
@define
class AccountPublicKeyChecker:
    """Checks SSH public keys and their signatures against the account store.

    Answers "this key would do" (`ValidPublicKey`) only for authorized keys,
    and accepts only SHA-2 signatures of the algorithm the client named.
    """

    credentialInterfaces: ClassVar[tuple[type, ...]] = (ISSHPrivateKey,)
    accounts: AccountStore
    log: Logger

    def requestAvatarId(self, credentials: ISSHPrivateKey) -> Deferred[bytes | tuple[()]]:
        """Fire with the user name if the key is authorized and the signature valid."""
        return defer.execute(self._check, credentials)

    def _check(self, credentials: Any) -> bytes | tuple[()]:
        username: bytes = credentials.username
        name = _decode_name(username)
        alg_name: bytes = credentials.algName
        blob: bytes = credentials.blob
        if alg_name not in USER_KEY_ALGORITHMS:
            raise UnauthorizedLogin(f"public key algorithm {alg_name[:64]!r} not accepted")
        try:
            authorized = self.accounts.check_key(name, blob)
        except AccountFileError as e:
            self.log.error("cannot check logins: {message}", message=str(e))
            raise UnauthorizedLogin("accounts unavailable") from None
        if not authorized:
            raise UnauthorizedLogin("key not authorized")
        key = Key.fromString(blob)
        if alg_name not in key.supportedSignatureAlgorithms():
            raise UnauthorizedLogin("algorithm does not match the key")
        signature: bytes | None = credentials.signature
        if signature is None:
            raise ValidPublicKey()
        try:
            signature_type = getNS(signature)[0]
        except Exception:
            raise UnauthorizedLogin("malformed signature") from None
        if signature_type != alg_name or not key.verify(signature, credentials.sigData):
            raise UnauthorizedLogin("bad signature")
        return username


@implementer(IRealm)
@define
class AccountRealm:
    """Makes an `AccountAvatar` for each authenticated account."""

    accounts: AccountStore
    sftp_server_factory: SFTPServerFactory
    log: Logger

    def requestAvatar(
        self, avatarId: bytes | tuple[()], mind: object, *interfaces: Any
    ) -> tuple[Any, AccountAvatar, Callable[[], None]]:
        """Return the avatar of the account named ``avatarId``."""
        if IConchUser not in interfaces or not isinstance(avatarId, bytes):
            raise NotImplementedError("only SSH sessions are served")
        account = self.accounts.get(avatarId.decode("utf-8"))
        avatar = AccountAvatar(account, self.sftp_server_factory, self.log)
        return IConchUser, avatar, avatar.logout


# --- the avatar and its session channel ------------------------------------------


class AccountAvatar(ConchUser):
    """One logged-in SSH session of an account: serves only the ``sftp`` subsystem."""

    remote_address: str | None = None
    client_version: str | None = None
    """The client's SSH version line (e.g. ``SSH-2.0-OpenSSH_9.2p1``), for the status page."""

    def __init__(
        self, account: Account, sftp_server_factory: SFTPServerFactory, log: Logger
    ) -> None:
        super().__init__()
        self.account = account
        self._sftp_server_factory = sftp_server_factory
        self._log_to = log
        self.channelLookup[b"session"] = _SFTPOnlySession
        self.subsystemLookup[b"sftp"] = self._open_sftp

    @property
    def name(self) -> str:
        """The account name."""
        return self.account.name

    @property
    def root_cap(self) -> str:
        """The capability of the account's root directory (a secret)."""
        return self.account.root_cap

    @property
    def read_only(self) -> bool:
        """Whether the account may change nothing."""
        return self.account.read_only

    @property
    def rename_overwrites(self) -> bool:
        """Whether plain RENAME replaces an existing target for this account."""
        return self.account.rename_overwrites

    def __repr__(self) -> str:
        return f"<AccountAvatar {self.name!r} from {self.remote_address}>"

    def _open_sftp(self, data: bytes, avatar: IConchUser) -> Protocol:
        server = self._sftp_server_factory(self)
        if not ISFTPServer.providedBy(server):
            raise TypeError(f"sftp_server_factory returned {type(server)!r}, not an ISFTPServer")
        self._log_to.info("SFTP session started for {user}", user=self.name)
        # ISFTPServer(server) inside FileTransferServer is server itself: no adapters.
        return GatewayFileTransferServer(data=data, avatar=server)

    def refused(self, request: str) -> None:
        """Log a refused session request."""
        self._log_to.info("refused {request} request from {user}", request=request, user=self.name)

    def logout(self) -> None:
        """Called when the SSH connection ends."""
        self._log_to.info("{user} logged out", user=self.name)


#: The receive window and largest data packet our session channels announce: OpenSSH's
#: 2 MiB window (Conch's default of 128 KiB makes an uploading client wait for a window
#: adjustment every 64 KiB) and packets big enough for a whole 255 KiB SFTP WRITE.
SESSION_WINDOW = 2 * 1024 * 1024
SESSION_MAX_PACKET = 256 * 1024


class _SFTPOnlySession(SSHSession):
    """A session channel that runs subsystems only: no shell, exec, pty, env, agent or X11.

    It also replaces Conch's outgoing buffer: Conch keeps the data the peer's
    window cannot take yet in one ``bytes`` that every write appends to and
    every window adjustment re-slices, which is quadratic in the bytes queued
    (half the gateway's time during a download was spent copying it). Here the
    queue is a deque of the chunks written.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["localWindow"] = kwargs.get("localWindow") or SESSION_WINDOW
        kwargs["localMaxPacket"] = kwargs.get("localMaxPacket") or SESSION_MAX_PACKET
        super().__init__(*args, **kwargs)
        self._queued: deque[bytes] = deque()
        self._queued_offset = 0  # bytes of the first queued chunk already sent
        self._exit_status: int | None = None  # sent just before the close, when set

    @property
    def queued_bytes(self) -> int:
        """Bytes written but not yet sent (waiting for the peer's window)."""
        return sum(len(chunk) for chunk in self._queued) - self._queued_offset

    def write(self, data: bytes) -> None:
        """Send what the peer's window allows, in packets of its maximum size; queue the rest."""
        if data:
            self._queued.append(data)
        self._flush()

    def _flush(self) -> None:
        assert self.conn is not None
        queued = self._queued
        packet = self.remoteMaxPacket
        send = self.conn.sendData
        while queued and self.remoteWindowLeft > 0:
            chunk = queued[0]
            start = self._queued_offset
            stop = min(len(chunk), start + self.remoteWindowLeft)
            if start == 0 and stop == len(chunk) and stop <= packet:
                send(self, chunk)
            else:
                for at in range(start, stop, packet):
                    send(self, chunk[at : min(at + packet, stop)])
            self.remoteWindowLeft -= stop - start
            if stop == len(chunk):
                queued.popleft()
                self._queued_offset = 0
            else:
                self._queued_offset = stop
        if queued:
            if self.areWriting:
                self.areWriting = 0
                self.stopWriting()
        elif self.closing:
            self.loseConnection()

    def addWindowBytes(self, data: int) -> None:
        """The peer opened its window: send what was queued."""
        self.remoteWindowLeft += data
        if not self.areWriting and not self.closing:
            self.areWriting = True
            self.startWriting()
        self._flush()
        if self.extBuf:
            pending, self.extBuf = self.extBuf, []
            for kind, chunk in pending:
                self.writeExtended(kind, chunk)

    def eofReceived(self) -> None:
        """The client has sent its last request: end as OpenSSH's server ends a finished
        sftp subsystem, with ``exit-status 0`` and then the close, once every reply
        queued for the client has been sent (scp reports a transfer whose session ends
        without an exit status as failed)."""
        if self.client is not None and not self.session:
            self._exit_status = 0
            self.loseConnection()
        else:
            super().eofReceived()

    def loseConnection(self) -> None:
        """Close the channel once everything queued has been sent."""
        if self.client and self.client.transport:
            self.client.transport.loseConnection()
        self.closing = 1
        if not self._queued and not self.extBuf:
            assert self.conn is not None
            if self._exit_status is not None:
                self.conn.sendRequest(self, b"exit-status", struct.pack(">L", self._exit_status))
                self._exit_status = None
            self.conn.sendClose(self)

    def _refuse(self, request: str) -> int:
        avatar = self.avatar
        if isinstance(avatar, AccountAvatar):
            avatar.refused(request)
        return 0

    def request_shell(self, data: bytes) -> int:
        """Refuse: there is no shell."""
        return self._refuse("shell")

    def request_exec(self, data: bytes) -> int:
        """Refuse: commands cannot be run."""
        return self._refuse("exec")

    def request_pty_req(self, data: bytes) -> int:
        """Refuse: there is no terminal."""
        return self._refuse("pty")

    def request_env(self, data: bytes) -> int:
        """Refuse environment variables (quietly: clients send them routinely)."""
        return 0

    def request_window_change(self, data: bytes) -> int:
        """Refuse: there is no terminal."""
        return 0

    def request_x11_req(self, data: bytes) -> int:
        """Refuse X11 forwarding."""
        return self._refuse("x11")

    def request_auth_agent_req_at_openssh_dot_com(self, data: bytes) -> int:
        """Refuse agent forwarding."""
        return self._refuse("agent forwarding")


# --- transport, user authentication and factory --------------------------------------


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


class _GatewayServerTransport(SSHServerTransport):
    """The server transport restricted to modern algorithms."""

    supportedKeyExchanges = KEY_EXCHANGES
    supportedCiphers = CIPHERS
    supportedMACs = MACS
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
