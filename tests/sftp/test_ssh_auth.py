"""Tests for the SSH server layer (``gateway.sftp.ssh``, ``.auth``, ``.avatar``) with real clients.

The server runs on 127.0.0.1 in the trial reactor; paramiko runs in a thread and
OpenSSH's ``ssh``/``sftp`` run as child processes. The SFTP subsystem is served by
a stub `ISFTPServer` that answers only REALPATH, which is enough to prove that a
session reached it as the right account.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import socket
import stat
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from twisted.conch.error import ValidPublicKey
from twisted.conch.interfaces import ISFTPServer
from twisted.conch.ssh import filetransfer
from twisted.conch.ssh.common import NS
from twisted.conch.ssh.keys import Key
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, SSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import Logger, formatEvent
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gateway.accounts import AccountStore, accounts_path
from gateway.sftp import (
    AccountAvatar,
    HostKeyError,
    generate_host_key,
    load_host_key,
    make_ssh_factory,
)
from gateway.sftp.auth import AccountPublicKeyChecker, AccountRealm
from gateway.sftp.preauth import PreauthLimits
from gateway.sftp.ssh import (
    CIPHERS,
    KEY_EXCHANGES,
    MACS,
    STRICT_KEX_CIPHERS,
    GatewaySSHFactory,
)
from gateway.sftp.throttle import LoginThrottle

ROOT_CAP = "URI:DIR2:very-secret-root-cap"
PASSWORD = "correct horse battery"
SSH = shutil.which("ssh")
SFTP = shutil.which("sftp")
MSG_USERAUTH_FAILURE = 51


def async_test(
    f: Callable[[Any], Coroutine[Any, Any, None]],
) -> Callable[[Any], Deferred[None]]:
    """Run an ``async def`` test method as a Deferred for trial."""

    @functools.wraps(f)
    def wrapper(self: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(f(self))

    return wrapper


@implementer(ISFTPServer)
class StubSFTPServer:
    """An ISFTPServer that only answers REALPATH, recording which avatar it serves."""

    def __init__(self, avatar: AccountAvatar) -> None:
        self.avatar = avatar

    def gotVersion(self, otherVersion: int, extData: dict[bytes, bytes]) -> dict[bytes, bytes]:
        return {}

    def realPath(self, path: bytes) -> bytes:
        return b"/"

    def _unsupported(self, *args: Any) -> Any:
        raise filetransfer.SFTPError(filetransfer.FX_OP_UNSUPPORTED, "not in this stub")

    openFile = removeFile = renameFile = makeDirectory = removeDirectory = _unsupported
    openDirectory = getAttrs = setAttrs = readLink = makeLink = extendedRequest = _unsupported


def write_private_key(path: Path, key: Any) -> None:
    """Write a cryptography private key in OpenSSH format, mode 0600."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)


def public_line(key: Any) -> str:
    """The authorized_keys line of a cryptography private key."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def sftp_pwd(transport: paramiko.Transport) -> str:
    """Open an SFTP session and ask for the path of ``.`` (blocking: call in a thread)."""
    sftp = paramiko.SFTPClient.from_transport(transport)
    assert sftp is not None
    try:
        return sftp.normalize(".")
    finally:
        sftp.close()


class RecordingHandler(logging.Handler):
    """Keeps the messages of one paramiko transport's log channel."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def kex_name(transport: paramiko.Transport) -> str:
    """The key exchange paramiko negotiated (from its debug log)."""
    handler: RecordingHandler = transport.test_log  # type: ignore[attr-defined]
    (line,) = [m for m in handler.messages if m.startswith("Kex: ")]
    return line.removeprefix("Kex: ")


class ServerTestCase(unittest.TestCase):
    """Runs a gateway SSH server with accounts alice (password + key), bob (RSA key only)."""

    host_key_passphrase: str | None = None

    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        (self.dir / "private").mkdir(parents=True, mode=0o700)
        self.home = self.dir / "home"
        self.home.mkdir()
        self.alice_key = ed25519.Ed25519PrivateKey.generate()
        self.bob_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.stranger_key = ed25519.Ed25519PrivateKey.generate()
        for name, key in [
            ("alice", self.alice_key),
            ("bob", self.bob_key),
            ("stranger", self.stranger_key),
        ]:
            write_private_key(self.dir / f"{name}_key", key)
        self.accounts = AccountStore(accounts_path(self.dir))
        self.accounts.add(
            "alice",
            root_cap=ROOT_CAP,
            password=PASSWORD,
            ssh_keys=[public_line(self.alice_key) + " alice@test"],
        )
        self.accounts.add(
            "bob", root_cap=ROOT_CAP + "-bob", ssh_keys=[public_line(self.bob_key)], read_only=True
        )
        key_path = self.dir / "private" / "ssh_host_ed25519_key"
        generate_host_key(key_path, passphrase=self.host_key_passphrase)
        self.host_key = load_host_key(key_path, passphrase=self.host_key_passphrase)
        self.events: list[dict[str, Any]] = []
        self.sessions: list[StubSFTPServer] = []

        def sftp_server_factory(avatar: AccountAvatar) -> StubSFTPServer:
            server = StubSFTPServer(avatar)
            self.sessions.append(server)
            return server

        factory = make_ssh_factory(
            reactor=reactor,
            host_key=self.host_key,
            accounts=self.accounts,
            sftp_server_factory=sftp_server_factory,
            log=Logger(observer=self.events.append),
        )
        self.closed: list[Deferred[None]] = []
        self.protocols: list[Any] = []
        build = factory.buildProtocol

        def tracking_build(addr: Any) -> Any:
            protocol = build(addr)
            lost: Deferred[None] = Deferred()
            self.closed.append(lost)
            self.protocols.append(protocol)
            original = protocol.connectionLost

            def connectionLost(reason: Any = None) -> None:
                original(reason)
                lost.callback(None)

            protocol.connectionLost = connectionLost
            return protocol

        factory.buildProtocol = tracking_build  # type: ignore[method-assign]
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.port_number = self.port.getHost().port
        self.addCleanup(self._stop)

    async def _stop(self) -> None:
        for protocol in self.protocols:
            if protocol.transport is not None:
                protocol.transport.loseConnection()
        await defer.gatherResults(self.closed)
        await self.port.stopListening()

    def log_text(self) -> str:
        return "\n".join(formatEvent(e) for e in self.events)

    # --- paramiko --------------------------------------------------------------------

    def paramiko_login(
        self,
        username: str,
        *,
        password: str | None = None,
        key_file: str | None = None,
        disabled: dict[str, list[str]] | None = None,
    ) -> Deferred[paramiko.Transport]:
        """Connect and authenticate with paramiko in a thread; fire with the transport."""

        def connect() -> paramiko.Transport:
            sock = socket.create_connection(("127.0.0.1", self.port_number), timeout=20)
            transport = paramiko.Transport(sock, disabled_algorithms=disabled)
            channel = f"tests.paramiko.{id(transport)}"
            transport.set_log_channel(channel)
            transport.test_log = RecordingHandler()  # type: ignore[attr-defined]
            logger = logging.getLogger(channel)
            logger.setLevel(logging.DEBUG)
            logger.propagate = False
            logger.addHandler(transport.test_log)  # type: ignore[attr-defined]
            try:
                transport.start_client(timeout=20)
                if password is not None:
                    transport.auth_password(username, password)
                else:
                    assert key_file is not None
                    pkey = paramiko.PKey.from_path(self.dir / key_file)
                    transport.auth_publickey(username, pkey)
            except BaseException:
                transport.close()
                raise
            return transport

        return deferToThread(connect)

    async def in_thread(self, f: Callable[[], Any]) -> Any:
        return await deferToThread(f)

    # --- OpenSSH ----------------------------------------------------------------------

    def openssh_args(self, *extra: str) -> list[str]:
        return [
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=20",
            *extra,
        ]

    async def run_process(self, program: str, args: list[str], **env: str) -> tuple[str, str, int]:
        out, err, code = await getProcessOutputAndValue(
            program, args, env={"HOME": str(self.home), "PATH": "/usr/bin:/bin", **env}
        )
        return out.decode(errors="replace"), err.decode(errors="replace"), code

    async def sftp_pwd(self, destination: str, *extra: str, **env: str) -> tuple[str, str, int]:
        """Run OpenSSH sftp with the batch command ``pwd``; return (stdout, stderr, status)."""
        batch = self.dir / "batch"
        batch.write_text("pwd\n")
        return await self.run_process(
            SFTP or "sftp",
            [
                *self.openssh_args(*extra),
                "-P",
                str(self.port_number),
                "-b",
                str(batch),
                destination,
            ],
            **env,
        )


class PasswordAndKeyTests(ServerTestCase):
    """Logins with paramiko: who gets in, who does not, and what a session may do."""

    @async_test
    async def test_password_login_reaches_sftp(self) -> None:
        """The right password opens an SFTP session served for the right account."""
        transport = await self.paramiko_login("alice", password=PASSWORD)
        try:
            self.assertEqual(await self.in_thread(lambda: sftp_pwd(transport)), "/")
            self.assertEqual(transport.get_remote_server_key().get_name(), "ssh-ed25519")
            self.assertIn(transport.remote_cipher.encode(), CIPHERS)
            self.assertIn(transport.remote_mac.encode(), MACS)
            self.assertIn(kex_name(transport).encode(), KEY_EXCHANGES)
        finally:
            await self.in_thread(transport.close)
        (session,) = self.sessions
        verifyObject(ISFTPServer, session)
        self.assertEqual(
            (session.avatar.name, session.avatar.root_cap, session.avatar.read_only),
            ("alice", ROOT_CAP, False),
        )
        self.assertEqual(session.avatar.remote_address, "127.0.0.1")
        self.assertNotIn(ROOT_CAP, repr(session.avatar))
        self.assertIn("alice logged in from 127.0.0.1 (password)", self.log_text())

    @async_test
    async def test_post_quantum_and_curve25519_kex(self) -> None:
        """paramiko gets ML-KEM/X25519 when both sides have it, else curve25519."""
        transport = await self.paramiko_login("alice", password=PASSWORD)
        self.assertEqual(kex_name(transport), KEY_EXCHANGES[0].decode())
        await self.in_thread(transport.close)
        transport = await self.paramiko_login(
            "alice",
            password=PASSWORD,
            disabled={"kex": ["mlkem768x25519-sha256"]},
        )
        self.assertEqual(kex_name(transport), "curve25519-sha256@libssh.org")
        await self.in_thread(transport.close)

    @async_test
    async def test_wrong_password_and_unknown_user_refused(self) -> None:
        """Wrong passwords and unknown users are refused; the password never reaches the log."""
        with self.assertRaises(paramiko.AuthenticationException):
            await self.paramiko_login("alice", password="wrong password 12345")
        with self.assertRaises(paramiko.AuthenticationException):
            await self.paramiko_login("mallory", password="wrong password 12345")
        with self.assertRaises(paramiko.AuthenticationException):
            await self.paramiko_login("bob", password="")  # key-only account
        self.assertEqual(self.sessions, [])
        text = self.log_text()
        self.assertIn("failed password for 'alice' from 127.0.0.1", text)
        self.assertNotIn("wrong password 12345", text)
        self.assertNotIn(ROOT_CAP, text)

    @async_test
    async def test_key_login(self) -> None:
        """Ed25519 and RSA (rsa-sha2) keys listed for the account log in."""
        for user, key_file in [("alice", "alice_key"), ("bob", "bob_key")]:
            transport = await self.paramiko_login(user, key_file=key_file)
            self.assertEqual(await self.in_thread(lambda t=transport: sftp_pwd(t)), "/")
            await self.in_thread(transport.close)
        self.assertEqual([s.avatar.name for s in self.sessions], ["alice", "bob"])
        self.assertTrue(self.sessions[1].avatar.read_only)

    @async_test
    async def test_wrong_key_refused(self) -> None:
        """A key not listed for the account, or listed for another account, is refused."""
        for user, key_file in [("alice", "stranger_key"), ("alice", "bob_key")]:
            with self.assertRaises(paramiko.AuthenticationException):
                await self.paramiko_login(user, key_file=key_file)

    @async_test
    async def test_sha1_rsa_signature_refused(self) -> None:
        """A listed RSA key signing with SHA-1 (ssh-rsa) or a mismatched name is refused."""
        checker = AccountPublicKeyChecker(self.accounts, Logger())
        key = Key(self.bob_key)
        blob = key.public().blob()

        def credentials(alg: bytes, signature_type: bytes) -> SSHPrivateKey:
            data = b"session id and request"
            return SSHPrivateKey(b"bob", alg, blob, data, key.sign(data, signature_type))

        good = await checker.requestAvatarId(credentials(b"rsa-sha2-512", b"rsa-sha2-512"))
        self.assertEqual(good, b"bob")
        for alg, signature_type in [
            (b"ssh-rsa", b"ssh-rsa"),
            (b"rsa-sha2-256", b"ssh-rsa"),
            (b"rsa-sha2-512", b"rsa-sha2-256"),
        ]:
            with self.assertRaises(UnauthorizedLogin):
                await checker.requestAvatarId(credentials(alg, signature_type))
        with self.assertRaises(ValidPublicKey):  # probe without signature: "this key would do"
            await checker.requestAvatarId(SSHPrivateKey(b"bob", b"rsa-sha2-256", blob, None, None))
        stranger = Key(self.stranger_key).public().blob()
        with self.assertRaises(UnauthorizedLogin):  # no "would do" for unlisted keys
            await checker.requestAvatarId(
                SSHPrivateKey(b"bob", b"ssh-ed25519", stranger, None, None)
            )

    @async_test
    async def test_shell_exec_and_forwarding_refused(self) -> None:
        """Shell, exec, pty and port forwarding are refused; the connection stays usable."""
        transport = await self.paramiko_login("alice", password=PASSWORD)
        try:

            def try_everything() -> list[str]:
                refused = []
                for name, attempt in [
                    ("exec", lambda c: c.exec_command("id")),
                    ("shell", lambda c: c.invoke_shell()),
                    ("pty", lambda c: c.get_pty()),
                ]:
                    channel = transport.open_session(timeout=10)
                    try:
                        attempt(channel)
                    except paramiko.SSHException:
                        refused.append(name)
                    channel.close()
                try:
                    transport.open_channel(
                        "direct-tcpip", ("127.0.0.1", 22), ("127.0.0.1", 1), timeout=10
                    )
                except paramiko.ChannelException:
                    refused.append("direct-tcpip")
                try:
                    transport.request_port_forward("127.0.0.1", 0)
                except paramiko.SSHException:
                    refused.append("tcpip-forward")
                refused.append(sftp_pwd(transport))
                return refused

            result = await self.in_thread(try_everything)
        finally:
            await self.in_thread(transport.close)
        self.assertEqual(result, ["exec", "shell", "pty", "direct-tcpip", "tcpip-forward", "/"])
        self.assertIn("refused exec request from alice", self.log_text())
        self.assertIn("refused direct-tcpip request from alice", self.log_text())

    @async_test
    async def test_legacy_only_client_refused(self) -> None:
        """A client offering only CBC ciphers, or only SHA-1 MACs, cannot connect."""
        gcm = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]
        for disabled in [
            {"ciphers": ["aes128-ctr", "aes192-ctr", "aes256-ctr", *gcm]},
            {
                "ciphers": gcm,
                "macs": [
                    "hmac-sha2-256",
                    "hmac-sha2-512",
                    "hmac-sha2-256-etm@openssh.com",
                    "hmac-sha2-512-etm@openssh.com",
                ],
            },
        ]:
            with self.assertRaises(paramiko.SSHException):
                await self.paramiko_login("alice", password=PASSWORD, disabled=disabled)

    @async_test
    async def test_account_added_while_running(self) -> None:
        """An account added by another store (the CLI) can log in without a restart."""
        AccountStore(self.accounts.path).add("carol", root_cap=ROOT_CAP, password="carol pw")
        transport = await self.paramiko_login("carol", password="carol pw")
        await self.in_thread(transport.close)
        AccountStore(self.accounts.path).remove("carol")
        with self.assertRaises(paramiko.AuthenticationException):
            await self.paramiko_login("carol", password="carol pw")


class PassphraseHostKeyTests(ServerTestCase):
    """A passphrase-protected host key loads and serves."""

    host_key_passphrase = "host key passphrase"

    @async_test
    async def test_login_with_encrypted_host_key(self) -> None:
        """The server presents the key that was decrypted with the passphrase."""
        key_text = (self.dir / "private" / "ssh_host_ed25519_key").read_text()
        self.assertIn("BEGIN OPENSSH PRIVATE KEY", key_text)
        transport = await self.paramiko_login("alice", key_file="alice_key")
        try:
            server_key = transport.get_remote_server_key()
            self.assertEqual(server_key.asbytes(), self.host_key.public().blob())
        finally:
            await self.in_thread(transport.close)


class OpenSSHTests(ServerTestCase):
    """The real OpenSSH client against the server."""

    def setUp(self) -> None:
        if SSH is None or SFTP is None:
            raise unittest.SkipTest("OpenSSH client (ssh, sftp) not installed")
        super().setUp()

    @async_test
    async def test_sftp_with_key_and_modern_algorithms(self) -> None:
        """sftp logs in with a key; the server proposes only modern algorithms."""
        out, err, code = await self.sftp_pwd(
            "alice@127.0.0.1", "-vv", "-i", str(self.dir / "alice_key"), "-o", "IdentitiesOnly=yes"
        )
        self.assertEqual(code, 0, err)
        self.assertIn("Remote working directory: /", out)
        proposal = err.split("peer server KEXINIT proposal", 1)[1].splitlines()[1:10]
        offered = dict(line.split(": ", 2)[1:] for line in proposal if line.count(": ") >= 2)
        self.assertEqual(offered["host key algorithms"], "ssh-ed25519")
        # OpenSSH asks for strict kex, so it is offered chacha20-poly1305 too.
        ciphers = ",".join(c.decode() for c in STRICT_KEX_CIPHERS)
        self.assertEqual(offered["ciphers ctos"], ciphers)
        self.assertEqual(offered["MACs stoc"], ",".join(m.decode() for m in MACS))
        self.assertEqual(offered["compression ctos"], "none")
        kex = offered["KEX algorithms"].split(",")
        self.assertEqual([k for k in kex if not k.startswith(("ext-info", "kex-strict"))], [
            k.decode() for k in KEY_EXCHANGES
        ])  # fmt: skip
        self.assertIn("kex-strict-s-v00@openssh.com", kex)
        self.assertIn("kex: algorithm: curve25519-sha256", err)
        self.assertIn(
            "cipher: chacha20-poly1305@openssh.com MAC: <implicit> compression: none", err
        )
        self.assertEqual(self.sessions[0].avatar.name, "alice")

    @async_test
    async def test_sftp_with_rsa_key(self) -> None:
        """OpenSSH signs with rsa-sha2-* because server-sig-algs lists them."""
        out, err, code = await self.sftp_pwd(
            "bob@127.0.0.1", "-v", "-i", str(self.dir / "bob_key"), "-o", "IdentitiesOnly=yes"
        )
        self.assertEqual(code, 0, err)
        self.assertIn("Remote working directory: /", out)

    @async_test
    async def test_sftp_with_password(self) -> None:
        """sftp logs in with a password given through SSH_ASKPASS."""
        askpass = self.dir / "askpass"
        askpass.write_text(f"#!/bin/sh\necho '{PASSWORD}'\n")
        askpass.chmod(0o700)
        out, err, code = await self.sftp_pwd(
            "alice@127.0.0.1",
            "-o",
            "BatchMode=no",  # must precede -b, which turns batch mode on
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=1",
            SSH_ASKPASS=str(askpass),
            SSH_ASKPASS_REQUIRE="force",
        )
        self.assertEqual(code, 0, err)
        self.assertIn("Remote working directory: /", out)

    @async_test
    async def test_wrong_key_refused(self) -> None:
        """sftp with an unlisted key is refused."""
        out, err, code = await self.sftp_pwd(
            "alice@127.0.0.1", "-i", str(self.dir / "stranger_key"), "-o", "IdentitiesOnly=yes"
        )
        self.assertNotEqual(code, 0)
        self.assertIn("Permission denied", err)

    @async_test
    async def test_exec_refused(self) -> None:
        """ssh cannot run a command or get a shell."""
        for command in (["true"], []):
            out, err, code = await self.run_process(
                SSH or "ssh",
                [
                    *self.openssh_args("-T", "-o", "BatchMode=yes"),
                    "-i",
                    str(self.dir / "alice_key"),
                    "-p",
                    str(self.port_number),
                    "alice@127.0.0.1",
                    *command,
                ],
            )
            self.assertNotEqual(code, 0)
            self.assertIn("request failed on channel 0", err)

    @async_test
    async def test_legacy_algorithms_refused(self) -> None:
        """Clients offering only CBC, SHA-1 MACs or SHA-1 key exchange get no connection."""
        for options in [
            ["-o", "Ciphers=aes128-cbc"],
            ["-o", "Ciphers=aes128-ctr", "-o", "MACs=hmac-sha1,hmac-sha1-etm@openssh.com"],
            ["-o", "KexAlgorithms=diffie-hellman-group14-sha1"],
            ["-o", "HostKeyAlgorithms=rsa-sha2-512"],
        ]:
            out, err, code = await self.sftp_pwd(
                "alice@127.0.0.1", *options, "-i", str(self.dir / "alice_key")
            )
            self.assertEqual(code, 255, options)
            self.assertIn("no matching", err, options)
        self.assertEqual(self.sessions, [])


class HostKeyTests(unittest.TestCase):
    """Generating and loading host keys."""

    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.path = self.dir / "private" / "ssh_host_ed25519_key"

    def test_generate_and_load(self) -> None:
        """A generated key is 0600 in a 0700 directory, with a matching .pub beside it."""
        generate_host_key(self.path)
        self.assertEqual(stat.S_IMODE(self.path.stat().st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(self.path.parent.stat().st_mode), 0o700)
        key = load_host_key(self.path)
        self.assertEqual(key.type(), "Ed25519")
        public = Key.fromFile(str(self.path) + ".pub")
        self.assertEqual(public, key.public())
        self.assertEqual(
            sorted(p.name for p in self.path.parent.iterdir()),
            ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"],
        )

    def test_never_overwritten(self) -> None:
        """Generating over an existing key fails and leaves it intact."""
        generate_host_key(self.path)
        before = self.path.read_bytes()
        with self.assertRaises(HostKeyError) as info:
            generate_host_key(self.path)
        self.assertIn("already exists", str(info.exception))
        self.assertEqual(self.path.read_bytes(), before)

    def test_passphrase_errors(self) -> None:
        """Missing or wrong passphrases give clear errors without echoing the passphrase."""
        generate_host_key(self.path, passphrase="right one")
        with self.assertRaises(HostKeyError) as info:
            load_host_key(self.path)
        self.assertIn("passphrase is needed", str(info.exception))
        with self.assertRaises(HostKeyError) as info:
            load_host_key(self.path, passphrase="wrong one")
        self.assertIn("wrong passphrase", str(info.exception))
        self.assertNotIn("wrong one", str(info.exception))
        self.assertEqual(load_host_key(self.path, passphrase=b"right one").type(), "Ed25519")

    def test_loose_permissions_refused(self) -> None:
        """A host key readable by others is refused, like sshd does."""
        generate_host_key(self.path)
        os.chmod(self.path, 0o644)
        with self.assertRaises(HostKeyError) as info:
            load_host_key(self.path)
        self.assertIn("chmod 600", str(info.exception))

    def test_only_ed25519(self) -> None:
        """Other key types are refused as host keys."""
        self.path.parent.mkdir(parents=True, mode=0o700)
        write_private_key(self.path, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        with self.assertRaises(HostKeyError):
            load_host_key(self.path)


class LoginThrottleTests(unittest.TestCase):
    """Growing delays computed on a fake clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.throttle = LoginThrottle(clock=self.clock)

    def test_delays_double_up_to_eight_seconds(self) -> None:
        """Each failure doubles the delay from 0.5 s to at most 8 s."""
        delays = []
        for _ in range(7):
            self.assertEqual(self.throttle.admit("10.0.0.1", "alice"), 0)
            delays.append(self.throttle.failed("10.0.0.1", "alice"))
            self.clock.advance(delays[-1])
        self.assertEqual(delays, [0.5, 1, 2, 4, 8, 8, 8])

    def test_parallel_attempts_wait_their_turn(self) -> None:
        """Attempts made while blocked wait, each reserving the next slot."""
        self.throttle.failed("10.0.0.1", "alice")
        self.throttle.failed("10.0.0.1", "alice")  # 2 failures: 1 s per attempt
        self.assertEqual(
            [self.throttle.admit("10.0.0.1", "alice") for _ in range(3)], [1.0, 2.0, 3.0]
        )

    def test_per_address_and_per_user(self) -> None:
        """Failures count against the address for any name and the name from any address."""
        self.throttle.failed("10.0.0.1", "alice")
        self.assertEqual(self.throttle.admit("10.0.0.1", "bob"), 0.5)
        self.assertEqual(self.throttle.admit("10.0.0.2", "alice"), 0.5)
        self.assertEqual(self.throttle.admit("10.0.0.2", "bob"), 0)

    def test_success_and_time_forget(self) -> None:
        """A good login clears the name (not the address); old failures are forgotten."""
        self.throttle.failed("10.0.0.1", "alice")
        self.clock.advance(1)
        self.throttle.succeeded("alice")
        self.assertEqual(self.throttle.failed("10.0.0.2", "alice"), 0.5)
        self.assertEqual(self.throttle.failed("10.0.0.1", "carol"), 1.0)
        self.clock.advance(901)
        self.assertEqual(self.throttle.failed("10.0.0.1", "carol"), 0.5)

    def test_bounded_memory(self) -> None:
        """No more than max_entries keys are remembered."""
        throttle = LoginThrottle(clock=self.clock, max_entries=10)
        for i in range(100):
            throttle.failed(f"10.0.0.{i}", f"user{i}")
        self.assertEqual(len(throttle._penalties), 10)


@implementer(ICredentialsChecker)
class RejectAllPasswords:
    """A checker that refuses every password at once."""

    credentialInterfaces = (IUsernamePassword,)

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes]:
        return defer.fail(UnauthorizedLogin("no"))


class FakeSSHTransport:
    """Just enough of an SSH server transport for the userauth service."""

    def __init__(self, factory: GatewaySSHFactory, host: str) -> None:
        self.factory = factory
        self.packets: list[tuple[int, bytes]] = []
        self.disconnected: list[int] = []
        peer = IPv4Address("TCP", host, 40000)
        self.transport = type("TCP", (), {"getPeer": lambda self: peer})()

    def isEncrypted(self, direction: str) -> bool:
        return True

    def sendPacket(self, kind: int, payload: bytes) -> None:
        self.packets.append((kind, payload))

    def sendDisconnect(self, reason: int, description: bytes) -> None:
        self.disconnected.append(reason)


class UserAuthDelayTests(unittest.TestCase):
    """The ssh-userauth service answers failed passwords after growing delays."""

    def setUp(self) -> None:
        self.clock = Clock()
        host_key = Key(ed25519.Ed25519PrivateKey.generate())
        accounts = AccountStore(accounts_path(self.mktemp()))
        self.factory = GatewaySSHFactory(
            reactor=self.clock,
            host_key=host_key,
            portal=Portal(AccountRealm(accounts, StubSFTPServer, Logger()), [RejectAllPasswords()]),
            throttle=LoginThrottle(clock=self.clock),
            log=Logger(observer=lambda e: None),
            limits=PreauthLimits(max_auth_tries=7),  # six failures on one connection
        )

    def connect(self, host: str) -> tuple[Any, FakeSSHTransport]:
        transport = FakeSSHTransport(self.factory, host)
        service = self.factory.getService(transport, b"ssh-userauth")()
        service.transport = transport
        service.serviceStarted()
        self.addCleanup(service.serviceStopped)
        return service, transport

    def attempt(self, service: Any, user: bytes = b"alice") -> None:
        service.ssh_USERAUTH_REQUEST(
            NS(user) + NS(b"ssh-connection") + NS(b"password") + b"\x00" + NS(b"guess")
        )

    def time_to_failure(self, service: Any, transport: FakeSSHTransport) -> float:
        before = len(transport.packets)
        self.attempt(service)
        waited = 0.0
        while len(transport.packets) == before:
            self.clock.advance(0.25)
            waited += 0.25
        self.assertEqual(transport.packets[-1][0], MSG_USERAUTH_FAILURE)
        return waited

    def test_growing_delays(self) -> None:
        """Failure replies come after 0.5, 1, 2, 4, 8, 8 seconds."""
        service, transport = self.connect("10.0.0.1")
        delays = [self.time_to_failure(service, transport) for _ in range(6)]
        self.assertEqual(delays, [0.5, 1, 2, 4, 8, 8])

    def test_other_connection_waits_too(self) -> None:
        """A second connection for the same name waits out the first one's penalty."""
        first, first_transport = self.connect("10.0.0.1")
        for _ in range(3):
            self.time_to_failure(first, first_transport)
        self.attempt(first)  # 4th failure: "alice" blocked for 4 s
        second, second_transport = self.connect("10.0.0.2")
        # waits out the 4 s, then its own failure (the 5th for "alice") costs 8 s
        self.assertEqual(self.time_to_failure(second, second_transport), 4 + 8)
        self.assertEqual(first_transport.packets[-1][0], MSG_USERAUTH_FAILURE)

    def test_disconnect_cancels_the_wait(self) -> None:
        """A connection closed during a delay gets no reply and leaves no timer behind."""
        service, transport = self.connect("10.0.0.1")
        self.attempt(service)
        service.serviceStopped()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(transport.packets, [])
