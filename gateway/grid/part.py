"""The gateway's grid as node parts: an embedded storage server, and the storage client.

The storage client holds one :class:`~gateway.grid.interfaces.IStorageClient`
per server — the embedded one in-process, remote ones by NURL from
``private/servers`` — and polls each server's version (space, liveness) on a
timer, so the status page and the CLI can show the grid's health.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from attrs import frozen
from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.config import NodeConfig
from gateway.grid.http_client import HttpStorageClient
from gateway.grid.interfaces import IStorageClient, ServerHealth, ServerUnavailable
from gateway.grid.local import LocalStorageClient
from gateway.grid.storage_thread import StorageStopped, StorageThread
from gateway.intents.pacing import ClientActivity
from gateway.intents.turns import QUIET
from gateway.nodedir import SERVERS_FILE, NodeDir
from gateway.service import NodePart, StartupError
from storage.disk import DiskBackend
from storage.errors import StorageError
from storage.expiry import IDLE_UPLOAD_TIMEOUT
from storage.server import StorageServer
from storage.wire import InvalidNurl, parse_nurl

HEALTH_INTERVAL = 60.0

#: Seconds between health polls while some server is unreachable (to notice it coming back).
HEALTH_RETRY_INTERVAL = 5.0

CHECKPOINT_POLL = 1.0
"""Seconds between two looks at whether the embedded storage's checkpoint, put off while
clients were busy, may run now (:meth:`storage.disk.DiskBackend.ask_checkpoint`)."""


@frozen
class Encoding:
    """Erasure-coding parameters: k needed, happy servers, N total shares."""

    needed: int
    happy: int
    total: int

    def __str__(self) -> str:
        return f"{self.needed}/{self.happy}/{self.total}"


def read_server_list(nd: NodeDir) -> list[str]:
    """The NURLs in private/servers (comments and blank lines skipped), validated."""
    path = nd.secret(SERVERS_FILE)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    nurls = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            parse_nurl(text)
        except InvalidNurl as e:
            # The message of InvalidNurl never contains the swissnum.
            raise StartupError("storage client", f"{path} line {number}: {e}") from None
        nurls.append(text)
    return nurls


_log = Logger()


def _checkpoint_failed(failure: Failure) -> None:
    """A checkpoint asked for failed: the log is kept (the next one retries); said, unless
    the storage stopped meanwhile (closing checkpoints anyway)."""
    if not failure.check(StorageStopped):
        _log.failure("the embedded storage's checkpoint failed", failure)


def embedded_core(path: Path, reactor: Any) -> tuple[DiskBackend, StorageServer, StorageThread]:
    """The embedded storage core and its thread: a batched disk backend, whose group
    commit runs once per batch of calls."""
    backend = DiskBackend(path, batched=True, background=True)
    thread = StorageThread(reactor, backend.commits.drain)

    def checkpoint() -> None:  # in the reactor thread
        thread(partial(backend.checkpoint, everything=False)).addErrback(_checkpoint_failed)

    # A checkpoint (flushing the files: tens of milliseconds; the records not applied yet
    # stay in the log) runs in the storage thread, even when the log grew in a call the
    # reactor thread ran in place: it holds up the requests that need storage, not all.
    backend.checkpoint_when_asked(lambda: reactor.callFromThread(checkpoint))
    return backend, StorageServer(backend, reactor), thread


class EmbeddedStoragePart(NodePart):
    """A storage server inside the gateway, keeping shares under DIR/storage; every call
    on it runs in a thread of its own (:class:`StorageThread`)."""

    def __init__(self, reactor: Any, nd: NodeDir):
        super().__init__("embedded storage")
        self._reactor = reactor
        self._nd = nd
        self.server: StorageServer | None = None
        self.thread: StorageThread | None = None
        self._backend: DiskBackend | None = None
        self._timer: TimerService | None = None
        self._checkpoints: TimerService | None = None
        self._space: int | None = None
        self._activity: ClientActivity | None = None

    def hold_while_busy(self, activity: ClientActivity) -> None:
        """Let the storage's durable records wait to be written to its files while the
        gateway's clients are busy (:mod:`storage.applier`): foreground first."""
        self._activity = activity

    async def start(self) -> None:
        """Open the share store (discarding uploads a crash left incomplete)."""
        # Synchronous group commits, one per batch of calls, in the storage thread.
        backend, server, thread = embedded_core(self._nd.storage, self._reactor)
        self._backend, self.server, self.thread = backend, server, thread
        activity = self._activity
        if activity is not None:
            backend.hold_applying(lambda: activity.busy(QUIET))
        self._timer = TimerService(
            60.0, lambda: thread(lambda: server.abort_idle_uploads(IDLE_UPLOAD_TIMEOUT))
        )
        self._timer.clock = self._reactor
        self._timer.startService()
        # A checkpoint falling due while clients are busy waits for them to pause.
        self._checkpoints = TimerService(CHECKPOINT_POLL, self._ask_checkpoint)
        self._checkpoints.clock = self._reactor
        self._checkpoints.startService()

    def _ask_checkpoint(self) -> None:
        backend, thread, activity = self._backend, self.thread, self._activity
        if activity is not None and activity.busy(QUIET):
            return  # (past its bound, the write that grows the log asks by itself)
        if backend is not None and thread is not None and backend.checkpoint_wanted:
            thread(backend.ask_checkpoint).addErrback(_checkpoint_failed)

    async def stop(self) -> None:
        """Stop the timers; checkpoint the share store; end its thread."""
        for timer in (self._timer, self._checkpoints):
            if timer is not None:
                stopped = timer.stopService()
                if stopped is not None:
                    await stopped
        self._timer = self._checkpoints = None
        if self._backend is not None and self.thread is not None:
            await self.thread(self._backend.close)  # after every call handed over
            await self.thread.stop()

    def quiet(self) -> bool:
        """Whether the storage's thread has nothing to do now (nothing queued, running or
        unanswered)."""
        return self.thread is None or self.thread.idle

    def status(self) -> dict[str, Any]:
        """Space left on the embedded store (as of the thread's last idle moment)."""
        if self.server is None or self.thread is None:
            return {"running": False}
        if self.thread.idle:
            self._space = self.server.available_space()
        return {"running": True, "available_space": self._space}


class GridPart(NodePart):
    """The storage client: every server the gateway uses, with its health."""

    def __init__(
        self,
        reactor: Any,
        nd: NodeDir,
        config: NodeConfig,
        embedded: EmbeddedStoragePart | None,
    ):
        super().__init__("storage client")
        self._reactor = reactor
        self._nd = nd
        self._embedded = embedded
        self.encoding = Encoding(
            config.get("grid", "shares.needed"),
            config.get("grid", "shares.happy"),
            config.get("grid", "shares.total"),
        )
        self.servers: list[IStorageClient] = []
        self._poll: LoopingCall | None = None
        self._polling: Deferred[LoopingCall] | None = None
        self._last_full_poll: float | None = None
        #: Called when a poll finds a server reachable that was not (e.g. to retry uploads).
        self.on_server_back: list[Callable[[], None]] = []

    async def start(self) -> None:
        """Make a client per server and start polling their health."""
        servers: list[IStorageClient] = []
        if self._embedded is not None:
            assert self._embedded.server is not None, "embedded storage starts first"
            servers.append(
                LocalStorageClient(
                    self._embedded.server,
                    nickname="embedded",
                    clock=self._reactor,
                    thread=self._embedded.thread,
                )
            )
        for nurl in read_server_list(self._nd):
            servers.append(HttpStorageClient.from_nurl(self._reactor, nurl))
        if not servers:
            raise StartupError(
                "storage client",
                f"no storage servers: add NURLs to {self._nd.secret(SERVERS_FILE)} "
                "or set [grid] embedded = true",
            )
        self.servers = servers
        self._poll = LoopingCall(self._tick)
        self._poll.clock = self._reactor
        self._polling = self._poll.start(HEALTH_RETRY_INTERVAL, now=True)

    async def _tick(self) -> None:
        """Poll every HEALTH_INTERVAL, or every HEALTH_RETRY_INTERVAL while a server is down."""
        now = self._reactor.seconds()
        everyone_up = all(server.health.connected for server in self.servers)
        if (
            everyone_up
            and self._last_full_poll is not None
            and now - self._last_full_poll < HEALTH_INTERVAL
        ):
            return
        self._last_full_poll = now
        await self.check_health()

    async def check_health(self) -> None:
        """Ask every server for its version, concurrently; clients record the outcome."""
        from twisted.internet.defer import DeferredList

        async def ask(server: IStorageClient) -> None:
            try:
                await server.get_version()
            except (ServerUnavailable, StorageError):
                pass  # recorded in the client's health

        down = {id(s) for s in self.servers if not s.health.connected}
        await DeferredList(
            [Deferred.fromCoroutine(ask(s)) for s in self.servers], consumeErrors=True
        )
        if any(id(s) in down and s.health.connected for s in self.servers):
            for listener in list(self.on_server_back):
                listener()

    async def stop(self) -> None:
        """Stop polling and close connections."""
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        for server in self.servers:
            await server.close()

    def health(self) -> list[tuple[str, ServerHealth]]:
        """(nickname, health) of every server."""
        return [(server.nickname, server.health) for server in self.servers]

    def announce(self) -> list[str]:
        """What grid the gateway uses."""
        if self._embedded is not None and len(self.servers) == 1:
            return [f"Grid: embedded storage (shares {self.encoding})"]
        return [f"Grid: {len(self.servers)} storage servers (shares {self.encoding})"]

    def status(self) -> dict[str, Any]:
        """Every server's health; nicknames only, never NURLs."""
        return {
            "encoding": str(self.encoding),
            "servers": [
                {
                    "nickname": nickname,
                    "connected": health.connected,
                    "last_error": health.last_error,
                    "latency": health.last_latency,
                    "available_space": health.available_space,
                    "last_contact": health.last_contact,
                }
                for nickname, health in self.health()
            ],
        }
