"""The parts of a storage node: the storage core on disk behind the HTTPS storage protocol."""

from __future__ import annotations

from typing import Any

from twisted.application.internet import TimerService
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort

from gateway.config import NodeConfig
from gateway.listening import bound_address, hostport, listen_failure
from gateway.nodedir import NURL_FILE, SWISSNUM_FILE, NodeDir, write_private
from gateway.service import NodePart, StartupError
from gateway.threads import reactor_threads
from storage.disk import DiskBackend
from storage.expiry import LeaseExpirer, expiry_service, idle_upload_service
from storage.http_limits import HttpLimits
from storage.http_server import listen_storage, make_storage_site
from storage.server import StorageServer
from storage.tls import CERT_FILENAME, KEY_FILENAME, TlsCredentials, read_tls_credentials
from storage.wire import format_nurl


def read_secret_file(nd: NodeDir, name: str, part: str) -> bytes:
    """A secret from private/, or a StartupError naming the missing or unreadable file."""
    path = nd.secret(name)
    try:
        data = path.read_bytes().strip()
    except FileNotFoundError:
        raise StartupError(part, f"missing key file {path}") from None
    except OSError as e:
        raise StartupError(part, f"cannot read {path}: {e.strerror}") from None
    if not data:
        raise StartupError(part, f"key file {path} is empty")
    return data


class StorageServerPart(NodePart):
    """Serves the storage core over HTTPS and keeps its timers (idle uploads, lease expiry)."""

    def __init__(self, reactor: Any, nd: NodeDir, config: NodeConfig):
        super().__init__("storage server")
        self._reactor = reactor
        self._nd = nd
        self._host: str = config.get("storage", "host")
        self._port: int = config.get("storage", "port")
        self._location: str = config.get("storage", "location")
        self._reserved: int = config.get("storage", "reserved_space")
        self._expire: bool = config.get("storage", "expire.enabled")
        self._limits = HttpLimits(
            max_header_size=config.get("storage", "max_header_size"),
            max_body_size=config.get("storage", "max_body_size"),
            request_timeout=config.get("storage", "request_timeout"),
            max_connections=config.get("storage", "max_connections"),
        )
        self._listening: IListeningPort | None = None
        self._timers: list[TimerService] = []
        self.server: StorageServer | None = None
        self._backend: DiskBackend | None = None
        self.nurl = ""

    def _credentials(self) -> TlsCredentials:
        for name in (KEY_FILENAME, CERT_FILENAME):
            read_secret_file(self._nd, name, self.name or "storage server")
        try:
            return read_tls_credentials(self._nd.private)
        except ValueError as e:
            raise StartupError("storage server", f"bad TLS key or certificate: {e}") from None

    async def start(self) -> None:
        """Open the share store, then listen with TLS."""
        credentials = self._credentials()
        swissnum = read_secret_file(self._nd, SWISSNUM_FILE, "storage server")
        self._backend = DiskBackend(
            self._nd.storage, reactor_threads(self._reactor), background=True
        )
        self.server = StorageServer(self._backend, self._reactor, reserved_space=self._reserved)
        site = make_storage_site(self.server, swissnum, clock=self._reactor, limits=self._limits)
        try:
            self._listening, _ = await listen_storage(
                self._reactor, site, credentials, swissnum, self._host, self._port
            )
        except CannotListenError as e:
            raise listen_failure(
                e,
                "storage server",
                self._host,
                self._port,
                "stop that program: the port is part of this server's NURL, which gateways use",
            ) from None
        location_host, location_port = self._location.rsplit(":", 1)
        self.nurl = format_nurl(
            credentials.spki_hash, location_host.strip("[]"), int(location_port), swissnum
        )
        nurl_path = self._nd.secret(NURL_FILE)
        if not nurl_path.exists() or nurl_path.read_text().strip() != self.nurl:
            write_private(nurl_path, self.nurl.encode() + b"\n")
        self._timers = [idle_upload_service(self.server)]
        if self._expire:
            self._timers.append(expiry_service(LeaseExpirer(self.server.backend, self._reactor)))
        for timer in self._timers:
            timer.startService()

    async def stop(self) -> None:
        """Stop the timers and stop listening; checkpoint the share store."""
        for timer in self._timers:
            stopped = timer.stopService()
            if stopped is not None:
                await stopped
        self._timers = []
        if self._listening is not None:
            stopped = self._listening.stopListening()
            self._listening = None
            if stopped is not None:
                await stopped
        if self._backend is not None:
            await self._backend.commits.idle()  # every completion durable and answered
            self._backend.close()

    def announce(self) -> list[str]:
        """Where the server listens, and its NURL (a secret: shown to the operator only)."""
        assert self._listening is not None
        host, port = bound_address(self._listening)
        return [
            f"Storage server: listening on {hostport(host, port)} (HTTPS)",
            f"Storage NURL: {self.nurl}",
        ]

    def status(self) -> dict[str, Any]:
        """Space and advisories; never the NURL (it holds the swissnum)."""
        if self.server is None or self._listening is None:
            return {"running": False}
        host, port = bound_address(self._listening)
        return {
            "running": True,
            "listening": hostport(host, port),
            "location": self._location,
            "available_space": self.server.available_space(),
            "reserved_space": self._reserved,
            "corruption_reports": len(self.server.corruption_reports),
            "lease_expiry": self._expire,
        }
