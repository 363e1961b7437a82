"""The SFTP sessions open now and the file transfers in them, for the status page.

The SFTP part keeps one :class:`SessionRegistry`. Each SFTP session gets a
:class:`Session` (user, the client's SSH version line, remote address, start,
bytes in and out, open handles); :class:`~gateway.sftp.server.GatewaySFTPServer`
reports each file handle's opening, bytes and close to it, and the protocol
(:class:`~gateway.sftp.protocol.GatewayFileTransferServer`) reports how long
each request took. Finished transfers are kept in a short
list. Nothing here holds a capability or a password.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import count
from typing import Any

from attrs import define, field, frozen
from twisted.internet.interfaces import IReactorTime
from zope.interface import Attribute, Interface, implementer

from gateway.metrics import LatencyHistogram, Progress

#: Request latency buckets (seconds): sub-millisecond stats to minute-long closes.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                   10, 30, 60)  # fmt: skip

#: A client's version line is shown up to this many characters.
MAX_VERSION_LENGTH = 200


class ISessionObserver(Interface):
    """What an SFTP session reports about its work."""

    id = Attribute("int: the session's number on this node.")

    def opened(handle: object, path: str, writing: bool, size: int | None) -> None:
        """A file handle was opened (``size``: the file's size when reading)."""

    def transferred(handle: object, count: int, received: bool) -> None:
        """``count`` bytes of file data were written by (received) or read by the client."""

    def closed(handle: object) -> None:
        """A file handle was closed or aborted."""

    def request(operation: str, seconds: float) -> None:
        """A request of this kind (``"read"``, ``"open"``…) was answered after ``seconds``."""

    def ended() -> None:
        """The session is over."""


@define(eq=False)
class Transfer:
    """One open file handle: a client uploading (writing) or downloading (reading) a file."""

    session: Session
    path: str
    writing: bool
    progress: Progress

    def to_json(self) -> dict[str, Any]:
        """The Transfers page's row."""
        return {
            "session": self.session.id,
            "user": self.session.user,
            "file": self.path,
            "direction": "upload" if self.writing else "download",
            **self.progress.to_json(),
        }


@frozen
class FinishedTransfer:
    """A transfer whose handle was closed."""

    user: str
    file: str
    direction: str
    bytes: int
    seconds: float
    finished_at: float

    def to_json(self) -> dict[str, Any]:
        """The Transfers page's row."""
        return {
            "user": self.user,
            "file": self.file,
            "direction": self.direction,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "rate": round(self.bytes / self.seconds, 1) if self.seconds > 0 else None,
            "finished_at": self.finished_at,
        }


@implementer(ISessionObserver)
@define(eq=False)
class Session:
    """One SFTP session: who, from where, since when, how much."""

    registry: SessionRegistry = field(repr=False)
    id: int
    user: str
    client_version: str
    remote_address: str
    since: float
    bytes_in: int = 0
    bytes_out: int = 0
    transfers: dict[object, Transfer] = field(factory=dict, repr=False)
    #: Told of every request served (the upload queue holds background uploads meanwhile).
    activity: Callable[[], None] | None = field(default=None, repr=False)

    def opened(self, handle: object, path: str, writing: bool, size: int | None) -> None:
        """Start a transfer for the handle."""
        total = None if writing else size
        self.transfers[handle] = Transfer(
            self, path, writing, Progress(self.registry.clock, total=total)
        )

    def transferred(self, handle: object, count: int, received: bool) -> None:
        """Count file bytes, for the session, its transfer and the node."""
        if received:
            self.bytes_in += count
            self.registry.bytes_received += count
        else:
            self.bytes_out += count
            self.registry.bytes_sent += count
        transfer = self.transfers.get(handle)
        if transfer is not None:
            transfer.progress.advance(count)

    def closed(self, handle: object) -> None:
        """The transfer is over: keep it among the recently finished."""
        transfer = self.transfers.pop(handle, None)
        if transfer is not None:
            self.registry.finish(transfer)

    def request(self, operation: str, seconds: float) -> None:
        """Record a request's latency (and that the client is active)."""
        self.registry.observe(operation, seconds)
        if self.activity is not None:
            self.activity()

    def ended(self) -> None:
        """Forget the session (its still-open transfers end with it)."""
        for handle in list(self.transfers):
            self.registry.finish(self.transfers.pop(handle))
        self.registry.sessions.pop(self.id, None)

    def to_json(self) -> dict[str, Any]:
        """The SFTP page's row."""
        return {
            "id": self.id,
            "user": self.user,
            "client": self.client_version,
            "remote_address": self.remote_address,
            "since": self.since,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "open_handles": len(self.transfers),
        }


@define(eq=False)
class SessionRegistry:
    """Every SFTP session of a node, its transfers, and node-wide SFTP counters."""

    clock: IReactorTime
    keep_finished: int = 50
    sessions: dict[int, Session] = field(factory=dict)
    finished: deque[FinishedTransfer] = field(init=False)
    bytes_received: int = 0
    bytes_sent: int = 0
    sessions_started: int = 0
    latency: LatencyHistogram = field(init=False)
    _ids: Any = field(init=False, factory=lambda: count(1))

    def __attrs_post_init__(self) -> None:
        self.finished = deque(maxlen=self.keep_finished)
        # The node's status part collects it into its own registry.
        self.latency = LatencyHistogram(
            "gateway_sftp_request_seconds",
            "Time from an SFTP request's arrival to its reply, by operation.",
            "operation",
            LATENCY_BUCKETS,
        )

    def observe(self, operation: str, seconds: float) -> None:
        """Count a request's latency in the histogram of its operation."""
        self.latency.observe(operation, seconds)

    def start(
        self,
        user: str,
        client_version: str | None,
        remote_address: str | None,
        activity: Callable[[], None] | None = None,
    ) -> Session:
        """A new session of ``user``; ``activity`` is called for each request it serves."""
        session = Session(
            self,
            next(self._ids),
            user,
            (client_version or "unknown")[:MAX_VERSION_LENGTH],
            remote_address or "unknown",
            float(self.clock.seconds()),
            activity=activity,
        )
        self.sessions[session.id] = session
        self.sessions_started += 1
        return session

    def finish(self, transfer: Transfer) -> None:
        """Move a transfer to the recently finished list."""
        progress = transfer.progress
        self.finished.append(
            FinishedTransfer(
                transfer.session.user,
                transfer.path,
                "upload" if transfer.writing else "download",
                progress.done,
                float(self.clock.seconds()) - progress.started,
                float(self.clock.seconds()),
            )
        )

    def transfers(self) -> list[Transfer]:
        """Every transfer in flight, oldest first."""
        every = [t for s in self.sessions.values() for t in s.transfers.values()]
        return sorted(every, key=lambda t: t.progress.started)

    def status(self) -> dict[str, Any]:
        """Sessions, transfers in flight and recently finished ones."""
        return {
            "sessions": [s.to_json() for s in self.sessions.values()],
            "transfers": [t.to_json() for t in self.transfers()],
            "recently_finished": [f.to_json() for f in reversed(self.finished)],
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
            "sessions_started": self.sessions_started,
        }
