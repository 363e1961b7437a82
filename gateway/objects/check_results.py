"""What a check or verify found: per share, per version of a mutable object, per object.

Health, as Tahoe-LAFS defines it for our formats:

- *recoverable*: at least ``k`` distinct usable shares of one version exist;
- *healthy*: all ``n`` shares of the newest (and only) version are usable and
  spread so that servers-of-happiness reaches ``happy``.

Literal caps hold their data and are always healthy. Results are frozen value
objects with a ``to_json()`` for the CLI and the status page: they name storage
indexes (public) and servers, never a read or write cap.

The checks themselves are :mod:`gateway.objects.checker`'s.
"""

from __future__ import annotations

import enum
from typing import Any

from attrs import field, frozen

from gateway.grid.interfaces import IStorageClient
from gateway.objects.caps import b32encode
from gateway.objects.placement import happiness

__all__ = ["USABLE", "CheckResult", "ShareReport", "ShareStatus", "VersionReport"]


class ShareStatus(enum.Enum):
    """What a check or verify learned about one share on one server."""

    PRESENT = "present"
    """Listed by its server (and for a mutable share, its signed header is valid); not read."""
    GOOD = "good"
    """Every block was downloaded and matched its hashes."""
    CORRUPT = "corrupt"
    """Some part failed its hash or signature; the server was told."""
    UNREADABLE = "unreadable"
    """Listed, but the server failed while it was being read (not known good or bad)."""


USABLE = frozenset({ShareStatus.PRESENT, ShareStatus.GOOD})


def _server_json(server: IStorageClient) -> dict[str, str]:
    return {"server_id": b32encode(server.server_id), "nickname": str(server.nickname)}


@frozen
class ShareReport:
    """One share on one server: its number, its version (mutable only) and its status."""

    share_number: int
    server: IStorageClient = field(eq=False, repr=False)
    status: ShareStatus
    seqnum: int | None = None
    ueb_hash: bytes | None = field(default=None, repr=False)
    reason: str | None = None

    @property
    def usable(self) -> bool:
        """Counts towards health (present or good)."""
        return self.status in USABLE

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (server id in base32, no secrets)."""
        out: dict[str, Any] = {"share_number": self.share_number, "status": self.status.value}
        out.update(_server_json(self.server))
        if self.seqnum is not None:
            out["seqnum"] = self.seqnum
        if self.reason is not None:
            out["reason"] = self.reason
        return out


@frozen
class VersionReport:
    """One version of a mutable object seen on the grid, and how many usable shares it has."""

    seqnum: int
    ueb_hash: bytes = field(repr=False)
    k: int
    n: int
    share_numbers: frozenset[int]

    @property
    def recoverable(self) -> bool:
        """At least ``k`` distinct usable shares of this version exist."""
        return len(self.share_numbers) >= self.k

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "seqnum": self.seqnum,
            "root_hash": b32encode(self.ueb_hash),
            "k": self.k,
            "n": self.n,
            "shares": len(self.share_numbers),
            "recoverable": self.recoverable,
        }


@frozen
class CheckResult:
    """What a check (or verify) found for one object.

    ``shares`` lists every share found on every server. For a mutable object the
    counts, health and happiness refer to its newest version; ``k`` and ``n``
    are that version's (None when nothing was found).
    """

    kind: str
    """``literal``, ``immutable``, ``mutable`` or ``directory``."""
    storage_index: bytes | None
    verified: bool
    k: int | None
    n: int | None
    happy: int | None
    servers_queried: int
    shares: tuple[ShareReport, ...] = ()
    unreachable: tuple[IStorageClient, ...] = field(default=(), eq=False, repr=False)
    versions: tuple[VersionReport, ...] = ()
    """Mutable objects only: every valid version found, newest first."""

    @classmethod
    def literal(cls) -> CheckResult:
        """A literal file: nothing on the grid, always healthy."""
        return cls("literal", None, False, None, None, None, 0)

    @property
    def newest(self) -> VersionReport | None:
        """The newest version found (mutable objects only)."""
        return self.versions[0] if self.versions else None

    @property
    def current_shares(self) -> tuple[ShareReport, ...]:
        """Usable shares of the object (of its newest version, for a mutable one)."""
        newest = self.newest
        return tuple(
            s
            for s in self.shares
            if s.usable
            and (newest is None or (s.seqnum, s.ueb_hash) == (newest.seqnum, newest.ueb_hash))
        )

    @property
    def good_share_numbers(self) -> frozenset[int]:
        """Distinct share numbers with at least one usable copy."""
        return frozenset(s.share_number for s in self.current_shares)

    @property
    def shares_found(self) -> int:
        """Every share copy any server listed (including corrupt and stale ones)."""
        return len(self.shares)

    @property
    def shares_good(self) -> int:
        """Distinct usable shares (of the newest version)."""
        return len(self.good_share_numbers)

    @property
    def corrupt_shares(self) -> tuple[ShareReport, ...]:
        """Shares that failed a hash or signature check."""
        return tuple(s for s in self.shares if s.status is ShareStatus.CORRUPT)

    @property
    def holders(self) -> dict[IStorageClient, set[int]]:
        """Server → usable share numbers (of the newest version)."""
        out: dict[IStorageClient, set[int]] = {}
        for s in self.current_shares:
            out.setdefault(s.server, set()).add(s.share_number)
        return out

    @property
    def distinct_servers(self) -> int:
        """Servers holding at least one usable share."""
        return len(self.holders)

    @property
    def happiness(self) -> int:
        """Servers-of-happiness of the usable shares."""
        return happiness(self.holders)

    @property
    def recoverable(self) -> bool:
        """Enough shares of some version exist to rebuild the object."""
        if self.kind == "literal":
            return True
        if self.versions:
            return any(v.recoverable for v in self.versions)
        return self.k is not None and self.shares_good >= self.k

    @property
    def healthy(self) -> bool:
        """All ``n`` shares (of the only version) are usable, on ``happy`` servers' worth."""
        if self.kind == "literal":
            return True
        if self.n is None or self.happy is None or len(self.versions) > 1:
            return False
        return self.shares_good >= self.n and self.happiness >= self.happy

    def summary(self) -> str:
        """One line for a terminal."""
        if self.kind == "literal":
            return "healthy (literal)"
        state = (
            "healthy"
            if self.healthy
            else ("not healthy" if self.recoverable else "NOT RECOVERABLE")
        )
        corrupt = f", {len(self.corrupt_shares)} corrupt" if self.corrupt_shares else ""
        return (
            f"{state}: {self.shares_good} of {self.n or '?'} shares (need {self.k or '?'}),"
            f" on {self.distinct_servers} server(s), happiness {self.happiness}{corrupt}"
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict for the CLI and status page (no capabilities)."""
        sharemap: dict[str, list[str]] = {}
        for s in self.current_shares:
            sharemap.setdefault(str(s.share_number), []).append(b32encode(s.server.server_id))
        return {
            "kind": self.kind,
            "storage_index": b32encode(self.storage_index) if self.storage_index else None,
            "verified": self.verified,
            "healthy": self.healthy,
            "recoverable": self.recoverable,
            "summary": self.summary(),
            "k": self.k,
            "n": self.n,
            "happy": self.happy,
            "shares_found": self.shares_found,
            "shares_good": self.shares_good,
            "distinct_servers": self.distinct_servers,
            "happiness": self.happiness,
            "servers_queried": self.servers_queried,
            "servers_unreachable": [_server_json(s) for s in self.unreachable],
            "sharemap": sharemap,
            "shares": [s.to_json() for s in self.shares],
            "corrupt_shares": [s.to_json() for s in self.corrupt_shares],
            "versions": [v.to_json() for v in self.versions],
        }
