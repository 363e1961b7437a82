"""The audit log as a part of a gateway node: opened before SFTP listens, closed after it stops.

With ``[audit] enabled = false`` (the default) a node has no audit part and
records nothing (:data:`~gateway.audit.events.NO_AUDIT`). Enabled, the file
must open at start, else the node does not start (an audit log that was asked
for is never silently missing); once running, a file that cannot be written
loses events but not operations (:mod:`gateway.audit.writer`).
"""

from __future__ import annotations

from typing import Any

import gateway
from gateway.audit.events import NO_AUDIT, Client, IAuditLog
from gateway.audit.writer import AuditFile
from gateway.config import NodeConfig
from gateway.logfile import Scrubber
from gateway.nodedir import NodeDir
from gateway.service import NodePart, StartupError

__all__ = ["AuditPart", "audit_log"]


class AuditPart(NodePart):
    """Opens the audit log at start (``gateway_start``) and closes it at stop
    (``gateway_stop``)."""

    def __init__(self, reactor: Any, nd: NodeDir, config: NodeConfig, scrubber: Scrubber):
        super().__init__("audit")
        self.file = AuditFile(
            nd.root / config.get("audit", "path"),
            max_size=config.get("audit", "max_size"),
            keep=config.get("audit", "keep"),
            clock=reactor,
            scrub=scrubber.scrub,
        )

    async def start(self) -> None:
        """Open the file, or refuse to start saying why."""
        try:
            self.file.open()
        except OSError as e:
            raise StartupError(
                "audit", f"cannot open the audit log {self.file.path}: {e.strerror or e}"
            ) from None
        self.file.record("gateway_start", Client(), version=gateway.__version__)

    async def stop(self) -> None:
        """Record the stop and close the file (connections still open are logged out after
        this, when the reactor closes them: those events open the file again)."""
        self.file.record("gateway_stop", Client())
        self.file.close()

    def status(self) -> dict[str, Any]:
        """Where the audit log is, its size, and the events lost while it cannot be written."""
        return {"path": str(self.file.path), "size": self.file.size, "lost": self.file.lost}


def audit_log(part: AuditPart | None) -> IAuditLog:
    """What the SFTP frontend records its events to."""
    return part.file if part is not None else NO_AUDIT
