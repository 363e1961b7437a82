"""Limits on SSH connections that have not logged in yet (issue #18, "pre-auth limits").

An SSH server does its most expensive work (key exchange, password hashing)
for clients it does not know yet, so connections that have not logged in are
admitted sparingly, as OpenSSH's ``MaxStartups``, ``PerSourceMaxStartups`` and
``LoginGraceTime`` admit them:

- :class:`ConnectionGate` decides, when a TCP connection arrives and before a
  byte is sent, whether it is served. It refuses a source (an IPv4 address, an
  IPv6 /64) that already has ``per_source_max_startups`` connections waiting
  to log in, or that opened more than ``per_source_burst`` connections plus
  ``per_source_rate`` a second that did not log in (a connection that logs in
  gives its token back) (a token bucket: what ssh-audit's DHEat rate test
  measures, CVE-2002-20001); and, counting every connection waiting to log in,
  drops new ones at random from ``start`` on with a probability growing from
  ``rate`` % to 100 % at ``full`` (:class:`MaxStartups`). A refused connection
  gets one line, as from OpenSSH (``Exceeded MaxStartups``, ``Not allowed at
  this time``), and is closed.
- Each admitted connection holds a :class:`Startup` until it logs in or goes;
  the transport closes it when ``login_grace_time`` runs out first.
- A source at ``per_source_max_startups`` whose idlest waiting connection has
  sent nothing for ``idle_eviction`` seconds gets that one closed to make
  room, instead of being refused: so a client that holds idle connections
  open (300 of them, say) cannot lock a legitimate login from the same address
  out for the whole grace time.
- :class:`RefusalLog` logs refusals once per source per minute, with the
  number refused since the last line, so a flood cannot flood the log.
"""

from __future__ import annotations

import ipaddress
import random
from collections import OrderedDict
from collections.abc import Callable

from attrs import define, field, frozen
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

__all__ = [
    "EXCEEDED_MAX_STARTUPS",
    "NOT_ALLOWED",
    "ConnectionGate",
    "MaxStartups",
    "PreauthLimits",
    "RefusalLog",
    "Refusal",
    "RefusedConnection",
    "Startup",
    "source_of",
]

#: The line a connection refused by ``max_startups`` gets (OpenSSH's words).
EXCEEDED_MAX_STARTUPS = b"Exceeded MaxStartups\r\n"
#: The line a connection refused by a per-source limit gets (OpenSSH's words).
NOT_ALLOWED = b"Not allowed at this time\r\n"


@frozen
class MaxStartups:
    """OpenSSH's ``MaxStartups start:rate:full`` for connections waiting to log in."""

    start: int = 10
    rate: int = 30
    full: int = 100

    def drop_probability(self, pending: int) -> float:
        """The chance that a new connection is refused while ``pending`` are waiting."""
        if pending >= self.full:
            return 1.0
        if pending < self.start:
            return 0.0
        growth = (100 - self.rate) * (pending - self.start) / (self.full - self.start)
        return (self.rate + growth) / 100


@frozen
class PreauthLimits:
    """The ``[sftp]`` pre-auth limits of a node (see ``docs/configuration.rst``)."""

    login_grace_time: float = 120.0
    max_startups: MaxStartups = MaxStartups()
    per_source_max_startups: int = 5
    per_source_rate: float = 5.0
    per_source_burst: int = 10
    max_auth_tries: int = 6
    #: Seconds without a byte after which a waiting connection may be closed for a new one
    #: from its source (longer than the longest delay after a failed password).
    idle_eviction: float = 10.0


def source_of(host: str) -> str:
    """The source a limit counts: an IPv4 address, or the /64 network of an IPv6 one."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@define
class _Logged:
    at: float
    suppressed: int = 0


@define
class RefusalLog:
    """Logs refused connections at most once per source per ``interval`` seconds.

    The first refusal of a source is logged at once; the ones after it are only
    counted, and the next line (once ``interval`` has passed) says how many.
    At most ``max_sources`` sources are remembered.
    """

    clock: IReactorTime
    log: Logger
    interval: float = 60.0
    max_sources: int = 10_000
    _logged: OrderedDict[str, _Logged] = field(init=False, factory=OrderedDict)

    def refused(self, source: str, reason: str) -> None:
        """A connection from ``source`` was refused (or closed) for ``reason``."""
        now = self.clock.seconds()
        entry = self._logged.get(source)
        if entry is not None and now - entry.at < self.interval:
            entry.suppressed += 1
            return
        more = entry.suppressed if entry is not None else 0
        self._logged[source] = _Logged(now)
        self._logged.move_to_end(source)
        while len(self._logged) > self.max_sources:
            self._logged.popitem(last=False)
        self.log.warn(
            "SSH connection from {source} refused: {reason}{more}",
            source=source,
            reason=reason,
            more=f" ({more} more refused since the last message)" if more else "",
        )


@define
class _Bucket:
    tokens: float
    at: float


@define(eq=False)
class Startup:
    """An admitted connection that has not logged in yet; :meth:`done` when it has, or
    has gone (only the first call counts). Its transport sets ``last_active`` as bytes
    arrive and ``evict`` to close it."""

    gate: ConnectionGate = field(repr=False)
    source: str
    last_active: float
    finished: bool = False
    evict: Callable[[], None] | None = field(default=None, repr=False)

    def done(self) -> None:
        """The connection logged in or went: it no longer counts as waiting."""
        if not self.finished:
            self.finished = True
            self.gate.finished(self)

    def logged_in(self) -> None:
        """The connection logged in: it no longer waits, and it gives back the token it
        took, so a client that logs in (rclone's dozen parallel connections, a test suite)
        is never held by the per-source rate, which is for connections that never do."""
        if not self.finished:
            self.gate.refund(self.source)
        self.done()


@frozen
class Refusal:
    """Why a connection is refused: the line it is sent and the reason logged."""

    line: bytes
    reason: str


@define
class ConnectionGate:
    """Admits or refuses new connections by the limits (see the module)."""

    limits: PreauthLimits
    clock: IReactorTime
    refusals: RefusalLog
    random: Callable[[], float] = random.random
    max_sources: int = 10_000
    #: Connections admitted that have not logged in yet.
    pending: int = 0
    #: Connections refused since the start.
    refused: int = 0
    _waiting: dict[str, list[Startup]] = field(init=False, factory=dict)
    _buckets: OrderedDict[str, _Bucket] = field(init=False, factory=OrderedDict)

    def admit(self, host: str) -> Startup | Refusal:
        """A :class:`Startup` for a connection from ``host``, or why it is refused."""
        source = source_of(host)
        refusal = self._refusal(source)
        if refusal is not None:
            self.refused += 1
            self.refusals.refused(source, refusal.reason)
            return refusal
        self._take_token(source)
        self.pending += 1
        startup = Startup(self, source, self.clock.seconds())
        self._waiting.setdefault(source, []).append(startup)
        return startup

    def _refusal(self, source: str) -> Refusal | None:
        limits = self.limits
        startups = limits.max_startups
        if self.pending >= startups.full:
            return Refusal(
                EXCEEDED_MAX_STARTUPS, f"{self.pending} connections waiting to log in (full)"
            )
        waiting = len(self._waiting.get(source, ()))
        if waiting >= limits.per_source_max_startups and not self._evict_idlest(source):
            return Refusal(NOT_ALLOWED, f"{waiting} of its connections waiting to log in")
        if self._tokens(source) < 1:
            return Refusal(
                NOT_ALLOWED,
                f"more than {limits.per_source_burst} connections plus"
                f" {limits.per_source_rate:g} a second",
            )
        if self.random() < startups.drop_probability(self.pending):
            return Refusal(
                EXCEEDED_MAX_STARTUPS,
                f"{self.pending} connections waiting to log in (dropped at random)",
            )
        return None

    def _tokens(self, source: str) -> float:
        """The connections ``source`` may open now (its bucket refilled to this instant)."""
        now = self.clock.seconds()
        bucket = self._buckets.get(source)
        if bucket is None:
            return float(self.limits.per_source_burst)
        refill = (now - bucket.at) * self.limits.per_source_rate
        bucket.tokens = min(float(self.limits.per_source_burst), bucket.tokens + refill)
        bucket.at = now
        return bucket.tokens

    def _take_token(self, source: str) -> None:
        tokens = self._tokens(source)
        self._buckets[source] = _Bucket(tokens - 1, self.clock.seconds())
        self._buckets.move_to_end(source)
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)

    def refund(self, source: str) -> None:
        """Give ``source`` back the token a connection that logged in took."""
        bucket = self._buckets.get(source)
        if bucket is not None:
            bucket.tokens = min(float(self.limits.per_source_burst), bucket.tokens + 1)

    def _evict_idlest(self, source: str) -> bool:
        """Close the idlest waiting connection of ``source`` if it has been idle long enough."""
        waiting = self._waiting.get(source, [])
        idlest = min(waiting, key=lambda s: s.last_active, default=None)
        if idlest is None or idlest.evict is None:
            return False
        if self.clock.seconds() - idlest.last_active < self.limits.idle_eviction:
            return False
        evict = idlest.evict
        idlest.done()
        evict()
        self.refusals.refused(source, "an idle connection closed to make room for a new one")
        return True

    def finished(self, startup: Startup) -> None:
        """A connection no longer waits to log in (use :meth:`Startup.done`)."""
        self.pending -= 1
        waiting = self._waiting.get(startup.source, [])
        if startup in waiting:
            waiting.remove(startup)
        if not waiting:
            self._waiting.pop(startup.source, None)

    def status(self) -> dict[str, int]:
        """Connections waiting to log in now, and refused since the start."""
        return {"waiting_to_log_in": self.pending, "refused": self.refused}


class RefusedConnection(Protocol):
    """What a refused connection gets: one line (``Exceeded MaxStartups``…), then the close."""

    def __init__(self, line: bytes) -> None:
        self.line = line

    def connectionMade(self) -> None:
        """Say why, and close."""
        assert self.transport is not None
        self.transport.write(self.line)
        self.transport.loseConnection()
