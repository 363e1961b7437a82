"""The SFTP server as a node part: SSH on the configured address, sessions on the volumes.

When the node keeps an audit log, logins are recorded by the SSH layer
(:mod:`gateway.sftp.login_audit`) and each session's changes by its filesystem
(:mod:`gateway.sftp.audited`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.conch.interfaces import ISFTPServer
from twisted.logger import Logger

from gateway.accounts import AccountFileError, AccountStore, accounts_path
from gateway.audit.events import NO_AUDIT, Client, IAuditLog, NoAudit
from gateway.config import NodeConfig
from gateway.fs.gridfs import GridFilesystem
from gateway.fs.interfaces import IFilesystem
from gateway.fs.part import FilesystemPart
from gateway.listening import bound_address, hostport, listen_tcp
from gateway.nodedir import HOST_KEY_FILE, NodeDir
from gateway.service import NodePart, StartupError
from gateway.sftp.account_limits import AccountLimits
from gateway.sftp.audited import AuditedFilesystem, SessionAudit
from gateway.sftp.avatar import AccountAvatar
from gateway.sftp.busypoll import BusyPoll, never_busy
from gateway.sftp.hostkey import HostKeyError, fingerprint, load_host_key
from gateway.sftp.preauth import MaxStartups, PreauthLimits
from gateway.sftp.server import GatewaySFTPServer
from gateway.sftp.sessions import SessionRegistry
from gateway.sftp.ssh import GatewaySSHFactory, make_ssh_factory
from gateway.sftp.tcpflush import ReplyFlushingPort


def preauth_limits(config: NodeConfig) -> PreauthLimits:
    """The ``[sftp]`` pre-auth limits of a configuration."""
    start, rate, full = config.get("sftp", "max_startups")
    return PreauthLimits(
        login_grace_time=config.get("sftp", "login_grace_time"),
        max_startups=MaxStartups(start, rate, full),
        per_source_max_startups=config.get("sftp", "per_source_max_startups"),
        per_source_rate=config.get("sftp", "per_source_rate"),
        per_source_burst=config.get("sftp", "per_source_burst"),
        max_auth_tries=config.get("sftp", "max_auth_tries"),
    )


def account_limits(config: NodeConfig) -> AccountLimits:
    """The ``[sftp]`` per-account caps of a configuration."""
    return AccountLimits(
        max_connections=config.get("sftp", "max_connections_per_account"),
        max_sessions=config.get("sftp", "max_sessions_per_account"),
    )


class SFTPPart(NodePart):
    """Listens for SSH and serves each account's root over SFTP."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        nd: NodeDir,
        config: NodeConfig,
        fs: FilesystemPart,
        audit: IAuditLog = NO_AUDIT,
        quiet: Callable[[], bool] = never_busy,
    ):
        super().__init__("sftp")
        self._audit = audit
        self._reactor = reactor
        self._nd = nd
        self._fs = fs
        self._host: str = config.get("sftp", "host")
        self._port: int = config.get("sftp", "port")
        self._passphrase_file: str = config.get("sftp", "host_key_passphrase_file")
        self._limits = preauth_limits(config)
        self._account_limits = account_limits(config)
        #: Connections poll for their client's next request so long (gateway.sftp.busypoll).
        self.busy = BusyPoll(config.get("sftp", "busy_poll"), quiet)
        self._factory: GatewaySSHFactory | None = None
        self._listening: Any = None
        self._fingerprint = ""
        self.accounts = AccountStore(accounts_path(nd.root))
        self.sessions = SessionRegistry(reactor)

    def _passphrase(self) -> bytes | None:
        if not self._passphrase_file:
            return None
        path = self._nd.root / self._passphrase_file
        try:
            return path.read_bytes().strip()
        except OSError as e:
            raise StartupError(
                "sftp", f"cannot read host key passphrase file {path}: {e.strerror}"
            ) from None

    def sftp_server(self, avatar: AccountAvatar) -> ISFTPServer:
        """The SFTP server of one session."""
        volume = self._fs.volume(avatar.root_cap)
        fs: IFilesystem = GridFilesystem(volume, read_only=avatar.read_only)
        session = self.sessions.start(
            avatar.name,
            avatar.client_version,
            avatar.remote_address,
            # Uploads waiting to start hold back while the session's client is busy.
            activity=volume.queue.client_active,
        )
        if not isinstance(self._audit, NoAudit):
            client = Client(avatar.name, avatar.remote_address, avatar.remote_port, session.id)
            fs = AuditedFilesystem(fs, SessionAudit(self._audit, client))
        return GatewaySFTPServer(
            fs, user=avatar.name, rename_overwrites=avatar.rename_overwrites, session=session
        )

    async def start(self) -> None:
        """Load the host key and accounts, then listen."""
        try:
            key = load_host_key(self._nd.secret(HOST_KEY_FILE), self._passphrase())
        except HostKeyError as e:
            raise StartupError("sftp", str(e)) from None
        self._fingerprint = fingerprint(key.public())
        try:
            self.accounts.load()
        except AccountFileError as e:
            raise StartupError("sftp", str(e)) from None
        factory = make_ssh_factory(
            reactor=self._reactor,
            host_key=key,
            accounts=self.accounts,
            sftp_server_factory=self.sftp_server,
            log=self.log,
            limits=self._limits,
            account_limits=self._account_limits,
            audit=self._audit,
        )
        self._factory = factory
        self._listening = listen_tcp(
            self._reactor,
            factory,
            self._host,
            self._port,
            "sftp",
            choose="choose another port with --sftp-port N (or [sftp] port in node.cfg)",
            port_type=ReplyFlushingPort,
        )
        if isinstance(self._listening, ReplyFlushingPort):
            # What serving clients costs is not background work's (its turns).
            self._listening.served = self._fs.queue.activity.serving
            self._listening.busy = self.busy

    async def stop(self) -> None:
        """Stop accepting connections."""
        if self._listening is not None:
            stopped = self._listening.stopListening()
            self._listening = None
            if stopped is not None:
                await stopped

    def announce(self) -> list[str]:
        """How to connect, and the host key clients should see at their first connection."""
        host, port = bound_address(self._listening)
        try:
            names = [a.name for a in self.accounts.list()]
        except AccountFileError:
            names = []
        user = names[0] if len(names) == 1 else "USER"
        address = f"[{host}]" if ":" in host else host
        return [
            f"SFTP: sftp -P {port} {user}@{address}  (listening on {hostport(host, port)})",
            f"      sshfs -p {port} {user}@{address}: MOUNTPOINT",
            f"      host key: ED25519 {self._fingerprint}",
        ]

    def status(self) -> dict[str, Any]:
        """The listening address and number of accounts."""
        if self._listening is None:
            return {"running": False}
        host, port = bound_address(self._listening)
        try:
            accounts: int | str = len(self.accounts.list())
        except AccountFileError:
            accounts = "the accounts file is damaged"
        gate = self._factory.gate.status() if self._factory is not None else {}
        return {
            "listening": hostport(host, port),
            "accounts": accounts,
            "sessions": len(self.sessions.sessions),
            **gate,
            **self.busy.status(),
        }
