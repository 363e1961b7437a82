"""Who may log in: the account store's passwords and keys as Twisted cred checkers, and the realm.

:class:`AccountPasswordChecker` checks passwords (Argon2id, off the reactor
thread); :class:`AccountPublicKeyChecker` checks public keys and their
signatures, accepting only :data:`USER_KEY_ALGORITHMS`: Ed25519, ECDSA, RSA
with SHA-2 signatures (``rsa-sha2-512``, ``rsa-sha2-256``) and FIDO ``sk-``
keys; ``ssh-rsa`` (SHA-1) and DSA are refused. :class:`AccountRealm` makes the
:class:`~gateway.sftp.avatar.AccountAvatar` of an authenticated account. The
growing delays after failed passwords are the SSH service's
(:mod:`gateway.sftp.ssh`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from attrs import define, field
from twisted.conch.error import ValidPublicKey
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.keys import Key
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey, IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.accounts import AccountFileError, AccountStore
from gateway.sftp.account_limits import AccountSlots
from gateway.sftp.avatar import AccountAvatar, SFTPServerFactory

__all__ = [
    "USER_KEY_ALGORITHMS",
    "AccountPasswordChecker",
    "AccountPublicKeyChecker",
    "AccountRealm",
]

#: The user-key signature algorithms accepted (also advertised as server-sig-algs).
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


def _decode_name(username: bytes) -> str:
    try:
        return username.decode("utf-8")
    except UnicodeDecodeError:
        raise UnauthorizedLogin("user name is not UTF-8") from None


def _refusal(accounts: AccountStore, name: str, reason: str) -> str:
    """Why a login failed (for the audit log; clients are told nothing): ``reason``, or
    ``no such account`` when the name is unknown."""
    try:
        known = name in accounts
    except AccountFileError:
        known = True
    return reason if known else "no such account"


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
                raise UnauthorizedLogin(_refusal(self.accounts, name, "wrong password"))
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
            raise UnauthorizedLogin(_refusal(self.accounts, name, "key not authorized"))
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
    """Makes an `AccountAvatar` for each authenticated account (its sessions counted in
    ``slots``)."""

    accounts: AccountStore
    sftp_server_factory: SFTPServerFactory
    log: Logger
    slots: AccountSlots = field(factory=AccountSlots)

    def requestAvatar(
        self, avatarId: bytes | tuple[()], mind: object, *interfaces: Any
    ) -> tuple[Any, AccountAvatar, Callable[[], None]]:
        """Return the avatar of the account named ``avatarId``."""
        if IConchUser not in interfaces or not isinstance(avatarId, bytes):
            raise NotImplementedError("only SSH sessions are served")
        account = self.accounts.get(avatarId.decode("utf-8"))
        avatar = AccountAvatar(account, self.sftp_server_factory, self.log, self.slots)
        return IConchUser, avatar, avatar.logout
