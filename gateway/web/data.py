"""The JSON twin of every status page, gathered from a running node's parts.

Each function returns JSON-able data built from what the parts expose for
display (health records, session registry, queue state, part summaries), never
from configuration or key files: no capability, password, swissnum, NURL or
key is ever read here. As a second line of defence every string is passed
through the log :class:`~gateway.logfile.Scrubber` before it is served.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field
from twisted.internet.interfaces import IReactorTime

from gateway import __version__
from gateway.fs.part import FilesystemPart
from gateway.grid.part import EmbeddedStoragePart, GridPart
from gateway.logfile import Scrubber
from gateway.metrics import CheckHistory, RecentErrors
from gateway.service import Node, NodePart
from gateway.sftp.part import SFTPPart
from gateway.storage_node import StorageServerPart
from gateway.uploads.queue import UploadQueue

#: Queued uploads the Transfers page lists, oldest first (its data is rendered every second
#: while the page is open; the Overview counts them all).
QUEUE_SHOWN = 500


def scrubbed(value: Any, scrubber: Scrubber) -> Any:
    """``value`` with every string in it scrubbed of secret-shaped text."""
    if isinstance(value, str):
        return scrubber.scrub(value)
    if isinstance(value, dict):
        return {scrubber.scrub(str(k)): scrubbed(v, scrubber) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrubbed(v, scrubber) for v in value]
    return value


def _find(node: Node, kind: type[NodePart]) -> Any:
    return next((part for part in node.parts if isinstance(part, kind)), None)


def server_state(connected: bool, last_contact: float | None, last_error: str | None) -> str:
    """A server's connection state in one word."""
    if connected:
        return "connected"
    if last_contact is None and last_error is None:
        return "connecting"
    return "unreachable"


@define
class NodeView:
    """Reads one node for its pages: overview, SFTP, transfers, health, all parts."""

    node: Node
    clock: IReactorTime
    errors: RecentErrors
    started: float = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.started = float(self.clock.seconds())

    # -- the parts ----------------------------------------------------------------

    @property
    def grid(self) -> GridPart | None:
        """The storage client, on a gateway."""
        return _find(self.node, GridPart)

    @property
    def sftp(self) -> SFTPPart | None:
        """The SFTP part, on a gateway."""
        return _find(self.node, SFTPPart)

    @property
    def queue(self) -> UploadQueue | None:
        """The upload queue, on a gateway."""
        return _find(self.node, UploadQueue)

    def _common(self) -> dict[str, Any]:
        now = float(self.clock.seconds())
        return {
            "now": now,
            "node": {
                "kind": self.node.kind,
                "nickname": self.node.nickname,
                "version": __version__,
                "started": self.started,
                "uptime": round(now - self.started, 1),
            },
        }

    # -- pages ----------------------------------------------------------------------

    def servers(self) -> list[dict[str, Any]]:
        """Every storage server the gateway uses, with its health (nicknames only)."""
        grid = self.grid
        if grid is None:
            return []
        return [
            {
                "nickname": nickname,
                "state": server_state(health.connected, health.last_contact, health.last_error),
                "connected": health.connected,
                "last_contact": health.last_contact,
                "latency": health.last_latency,
                "available_space": health.available_space,
                "last_error": health.last_error,
            }
            for nickname, health in grid.health()
        ]

    def overview(self) -> dict[str, Any]:
        """Node, encoding, totals and the grid."""
        data = self._common()
        servers = self.servers()
        grid, sftp, queue = self.grid, self.sftp, self.queue
        fs = _find(self.node, FilesystemPart)
        totals: dict[str, Any] = {
            "servers": len(servers),
            "servers_connected": sum(1 for s in servers if s["connected"]),
            "available_space": sum(s["available_space"] or 0 for s in servers),
        }
        if sftp is not None:
            registry = sftp.sessions
            totals.update(
                sessions=len(registry.sessions),
                sessions_started=registry.sessions_started,
                transfers=len(registry.transfers()),
                bytes_received=registry.bytes_received,
                bytes_sent=registry.bytes_sent,
            )
        if queue is not None:
            totals.update(queue_depth=len(queue.pending()), uploads_finished=len(queue.finished))
        if fs is not None and fs.staging is not None:
            totals.update(staging_used=fs.staging.used, staging_quota=fs.staging.quota)
            totals.update(kept_copies=fs.kept.used, background_held=fs.turns.held)
        if fs is not None and fs.store is not None and fs.store.write_back is not None:
            totals.update(directory_changes_pending=fs.store.write_back.pending())
        storage = _find(self.node, StorageServerPart)
        if storage is not None:
            data["storage"] = storage.status()
        embedded = _find(self.node, EmbeddedStoragePart)
        data.update(
            encoding=(
                {
                    "needed": grid.encoding.needed,
                    "happy": grid.encoding.happy,
                    "total": grid.encoding.total,
                    "text": str(grid.encoding),
                }
                if grid is not None
                else None
            ),
            embedded_grid=embedded is not None,
            totals=totals,
            grid=servers,
            recent_errors=len(self.errors.records),
        )
        return data

    def sessions(self) -> dict[str, Any]:
        """Open SFTP sessions."""
        data = self._common()
        sftp = self.sftp
        data["sessions"] = (
            [s.to_json() for s in sftp.sessions.sessions.values()] if sftp is not None else []
        )
        data["listening"] = sftp.status().get("listening") if sftp is not None else None
        return data

    def transfers(self) -> dict[str, Any]:
        """SFTP transfers and grid uploads in flight, the upload queue, recently finished."""
        data = self._common()
        sftp, queue = self.sftp, self.queue
        registry = sftp.sessions.status() if sftp is not None else {}
        in_flight = list(registry.get("transfers", []))
        queued = queue.status() if queue is not None else {"pending": [], "recently_finished": []}
        for job in queued["pending"]:
            if job["progress"] is not None:
                in_flight.append(
                    {
                        "direction": "to grid",
                        "user": None,
                        "file": job["file"],
                        # A partial update stores ``total`` (changed) bytes of the file.
                        "file_size": job["size"] if job.get("changed") is not None else None,
                        **job["progress"],
                    }
                )
        finished: list[dict[str, Any]] = list(registry.get("recently_finished", [])) + [
            {
                "direction": "to grid",
                "file": f["file"],
                "bytes": f["size"],
                "finished_at": f["finished_at"],
                "attempts": f["attempts"],
            }
            for f in queued["recently_finished"]
        ]
        finished.sort(key=lambda f: f["finished_at"], reverse=True)
        shown = queued["pending"][:QUEUE_SHOWN]
        data.update(
            in_flight=in_flight,
            queue=[{k: v for k, v in job.items() if k != "progress"} for job in shown],
            queue_total=len(queued["pending"]),
            recently_finished=finished[:50],
        )
        return data

    def health(self) -> dict[str, Any]:
        """Check/repair results, lease renewal, server errors and recent log errors."""
        data = self._common()
        checks: list[dict[str, Any]] = [
            {
                "when": r.when,
                "kind": r.kind,
                "target": r.target,
                "healthy": r.healthy,
                "summary": r.summary,
                "part": part.name,
            }
            for part in self.node.parts
            if isinstance(history := getattr(part, "check_history", None), CheckHistory)
            for r in history.records
        ]
        checks.sort(key=lambda r: r["when"], reverse=True)
        leases = next((p.status() for p in self.node.parts if p.name == "leases"), None)
        data.update(
            checks=checks,
            lease_renewal=_lease_summary(leases),
            server_errors=[s for s in self.servers() if s["last_error"]],
            errors=[
                {"when": e.when, "level": e.level, "system": e.system, "message": e.message}
                for e in reversed(self.errors.records)
            ],
        )
        return data

    def everything(self) -> dict[str, Any]:
        """Every part's own summary (``/status.json``)."""
        now = float(self.clock.seconds())
        return {
            "kind": self.node.kind,
            "nickname": self.node.nickname,
            "version": __version__,
            "uptime_seconds": round(now - self.started, 1),
            "parts": {part.name: part.status() for part in self.node.parts},
        }


def _lease_summary(status: dict[str, Any] | None) -> dict[str, Any] | None:
    if status is None:
        return None
    last = status.get("last") or {}
    return {
        "interval": status.get("interval_seconds"),
        "next_run": status.get("next_run"),
        "last_finished": last.get("finished"),
        "objects": last.get("objects"),
        "leases_renewed": last.get("leases_renewed"),
        "not_found": last.get("not_found"),
        "failures": len(last.get("failures") or []) if last else None,
    }
