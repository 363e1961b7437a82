"""The status pages: each one's URL, JSON twin, data and sections."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import frozen

from gateway.web.data import NodeView
from gateway.web.layout import Column, Section


@frozen
class Page:
    """One HTML page at ``/<name>`` (the overview at ``/``) with its JSON twin ``/<name>.json``."""

    name: str
    title: str
    data: Callable[[NodeView], dict[str, Any]]
    sections: tuple[Section, ...]

    @property
    def url(self) -> str:
        """Where the page is."""
        return "/" if self.name == "overview" else f"/{self.name}"

    @property
    def json_url(self) -> str:
        """Where its JSON twin is."""
        return f"/{self.name}.json"


NODE = Section(
    "node",
    "Node",
    "node",
    (
        Column("Name", "nickname"),
        Column("Kind", "kind"),
        Column("Version", "version"),
        Column("Up since", "started", "time"),
        Column("Uptime", "uptime", "seconds"),
    ),
    rows=False,
)

GATEWAY_TOTALS = Section(
    "totals",
    "Totals",
    "totals",
    (
        Column("Storage servers", "servers", "count"),
        Column("Connected", "servers_connected", "count"),
        Column("Space available on servers", "available_space", "bytes"),
        Column("SFTP sessions open", "sessions", "count"),
        Column("SFTP sessions since start", "sessions_started", "count"),
        Column("Transfers in flight", "transfers", "count"),
        Column("Bytes received over SFTP", "bytes_received", "bytes"),
        Column("Bytes sent over SFTP", "bytes_sent", "bytes"),
        Column("Uploads waiting for the grid", "queue_depth", "count"),
        Column("Uploads finished (recent)", "uploads_finished", "count"),
        Column("Directory changes waiting for the grid", "directory_changes_pending", "count"),
        Column("Staging used", "staging_used", "bytes"),
        Column("Staging quota", "staging_quota", "bytes"),
        Column("Of staging: uploaded files kept to read back", "kept_copies", "bytes"),
        Column("Grid requests that waited for clients to pause", "background_held", "count"),
    ),
    rows=False,
)

ENCODING = Section(
    "encoding",
    "Encoding",
    "encoding",
    (
        Column("Shares needed (k)", "needed", "count"),
        Column("Servers of happiness", "happy", "count"),
        Column("Shares made (N)", "total", "count"),
    ),
    rows=False,
)

GRID = Section(
    "grid",
    "Storage servers",
    "grid",
    (
        Column("Server", "nickname"),
        Column("State", "state", "state"),
        Column("Last contact", "last_contact", "ago"),
        Column("Latency", "latency", "ms"),
        Column("Available space", "available_space", "bytes"),
        Column("Last error", "last_error"),
    ),
    empty="No storage servers.",
)

STORAGE = Section(
    "storage",
    "Storage server",
    "storage",
    (
        Column("Listening on", "listening"),
        Column("Announced location", "location"),
        Column("Space available", "available_space", "bytes"),
        Column("Space reserved", "reserved_space", "bytes"),
        Column("Corruption reports", "corruption_reports", "count"),
        Column("Lease expiry", "lease_expiry", "bool"),
    ),
    rows=False,
)

SESSIONS = Section(
    "sessions",
    "Open SFTP sessions",
    "sessions",
    (
        Column("#", "id", "count"),
        Column("User", "user"),
        Column("Client", "client"),
        Column("From", "remote_address"),
        Column("Since", "since", "ago"),
        Column("Bytes in", "bytes_in", "bytes"),
        Column("Bytes out", "bytes_out", "bytes"),
        Column("Open files", "open_handles", "count"),
    ),
    empty="No open sessions.",
)

IN_FLIGHT = Section(
    "in-flight",
    "In flight",
    "in_flight",
    (
        Column("Direction", "direction"),
        Column("User", "user"),
        Column("File", "file"),
        Column("Progress", "fraction", "progress"),
        Column("Done", "done", "bytes"),
        Column("Size", "total", "bytes"),
        # A change to a file in the grid stores "Size" bytes of a file this large.
        Column("Of a file of", "file_size", "bytes"),
        Column("Rate", "rate", "rate"),
        Column("ETA", "eta", "seconds"),
    ),
    empty="Nothing in flight.",
)

QUEUE = Section(
    "queue",
    "Upload queue (closed files on their way to the grid; the oldest 500)",
    "queue",
    (
        Column("File", "file"),
        Column("Size", "size", "bytes"),
        Column("Changed", "changed", "bytes"),
        Column("Uploading", "uploading", "bool"),
        Column("Attempts", "attempts", "count"),
        Column("Next retry", "next_retry", "time"),
        Column("Last error", "last_error"),
    ),
    empty="The queue is empty.",
)

FINISHED = Section(
    "finished",
    "Recently finished",
    "recently_finished",
    (
        Column("Finished", "finished_at", "ago"),
        Column("Direction", "direction"),
        Column("User", "user"),
        Column("File", "file"),
        Column("Bytes", "bytes", "bytes"),
        Column("Rate", "rate", "rate"),
    ),
    empty="Nothing finished yet.",
)

CHECKS = Section(
    "checks",
    "Recent checks and repairs",
    "checks",
    (
        Column("When", "when", "ago"),
        Column("Kind", "kind"),
        Column("What", "target"),
        Column("Healthy", "healthy", "bool"),
        Column("Result", "summary"),
    ),
    empty="No checks recorded since the node started.",
)

LEASES = Section(
    "leases",
    "Lease renewal",
    "lease_renewal",
    (
        Column("Every", "interval", "seconds"),
        Column("Next run", "next_run", "time"),
        Column("Last finished", "last_finished", "time"),
        Column("Objects", "objects", "count"),
        Column("Leases renewed", "leases_renewed", "count"),
        Column("Not found", "not_found", "count"),
        Column("Failures", "failures", "count"),
    ),
    rows=False,
)

SERVER_ERRORS = Section(
    "server-errors",
    "Servers reporting errors",
    "server_errors",
    (
        Column("Server", "nickname"),
        Column("State", "state", "state"),
        Column("Last contact", "last_contact", "ago"),
        Column("Last error", "last_error"),
    ),
    empty="No server errors.",
)

ERRORS = Section(
    "errors",
    "Recent warnings and errors",
    "errors",
    (
        Column("When", "when", "time"),
        Column("Level", "level"),
        Column("Where", "system"),
        Column("Message", "message"),
    ),
    empty="No warnings or errors since the node started.",
)

GATEWAY_PAGES = (
    Page("overview", "Overview", NodeView.overview, (NODE, ENCODING, GATEWAY_TOTALS, GRID)),
    Page("sftp", "SFTP", NodeView.sessions, (SESSIONS,)),
    Page("transfers", "Transfers", NodeView.transfers, (IN_FLIGHT, QUEUE, FINISHED)),
    Page("health", "Health", NodeView.health, (CHECKS, LEASES, SERVER_ERRORS, ERRORS)),
)

STORAGE_PAGES = (
    Page("overview", "Overview", NodeView.overview, (NODE, STORAGE)),
    Page("health", "Health", NodeView.health, (ERRORS,)),
)


def pages_for(kind: str) -> tuple[Page, ...]:
    """The pages a node of this kind serves."""
    return GATEWAY_PAGES if kind == "gateway" else STORAGE_PAGES
