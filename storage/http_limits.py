"""Limits that keep the storage HTTP server standing under abuse, enforced below twisted.web.

:class:`LimitedSite` is the twisted.web ``Site`` of the storage protocol; each
connection is a :class:`LimitedChannel`, which enforces :class:`HttpLimits`
while it parses, before any request reaches a resource:

- **Connections.** At most ``max_connections`` are served at once. The next
  eighth of that many (at least one) are answered ``503`` with ``Retry-After``
  once their request head has arrived; beyond that a connection is closed at
  once, before its TLS handshake.
- **Request heads.** The request line and headers together may take at most
  ``max_header_size`` bytes and :data:`MAX_HEADER_LINES` lines (``431``;
  ``414`` when the request line alone is too long).
- **Time.** A request head must be complete within ``request_timeout`` of the
  connection opening or of the previous response; a body must not pause for
  longer than that, and must average :data:`MIN_BODY_RATE` after the first
  ``request_timeout`` (``408``). An idle persistent connection is closed after
  ``request_timeout``. Time spent waiting for a slow *reader* is not counted.
- **Authorization and bodies.** When the head is complete the
  :class:`IRequestGate` (the storage resource) says whether the request may go
  on and how many body bytes it may send: a wrong swissnum is answered ``401``,
  an announced body over the limit ``413``, before a byte of the body is read
  or stored; a chunked body is cut off with ``413`` as soon as it passes the
  limit.

A refused request is answered at once with ``Connection: close`` and the
connection closed (cut off ``request_timeout`` later if the client does not
close its side): the body is never read. Refusals are logged once per source
address per minute by :class:`RefusalLog`, with the number left unlogged.
"""

from __future__ import annotations

import http as stdlib_http
from collections import OrderedDict
from typing import Any, cast

from attrs import define, field, frozen
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource
from zope.interface import Interface

DEFAULT_MAX_HEADER_SIZE = 16 * 1024
"""Request line plus headers, in bytes (Twisted's own limit; Apache allows 8190 per line)."""

DEFAULT_MAX_BODY_SIZE = 72 * 1024 * 1024
"""Largest request body: above a whole 69,105,000-byte mutable share in one read-test-write."""

DEFAULT_REQUEST_TIMEOUT = 60.0
"""Seconds for a request head, between body bytes, and of keep-alive idleness (nginx's 60 s)."""

DEFAULT_MAX_CONNECTIONS = 512
"""Connections served at once (nginx's default ``worker_connections``)."""

MAX_HEADER_LINES = 100
"""Most header lines in one request (Apache's ``LimitRequestFields``)."""

MIN_BODY_RATE = 1024
"""Bytes per second a body must average once its first ``request_timeout`` has passed."""

REFUSAL_INTERVAL = 60.0
"""Seconds between two log lines about refusals of one source address."""


def _positive(instance: object, attribute: Any, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


@frozen
class HttpLimits:
    """The limits one storage HTTP server enforces (node.cfg ``[storage]``)."""

    max_header_size: int = field(default=DEFAULT_MAX_HEADER_SIZE, validator=_positive)
    max_body_size: int = field(default=DEFAULT_MAX_BODY_SIZE, validator=_positive)
    request_timeout: float = field(default=DEFAULT_REQUEST_TIMEOUT, validator=_positive)
    max_connections: int = field(default=DEFAULT_MAX_CONNECTIONS, validator=_positive)

    @property
    def refusal_slots(self) -> int:
        """Connections over ``max_connections`` that are still answered 503."""
        return max(1, self.max_connections // 8)


@frozen
class Refusal:
    """A request answered at once with ``code`` and closed (``message`` holds no secret)."""

    code: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()


class IRequestGate(Interface):
    """Decides, from a complete request head, whether the request may go on."""

    def admit(method: bytes, uri: bytes, headers: Headers, length: int | None) -> Refusal | int:
        """A refusal, or how many body bytes the request may send (``length`` None: chunked)."""


@define
class _Source:
    since: float
    unlogged: int = 0


@define
class RefusalLog:
    """Logs refusals at most once per source address per ``interval`` seconds."""

    log: Logger = field(factory=Logger)
    interval: float = REFUSAL_INTERVAL
    max_sources: int = 4096
    _sources: OrderedDict[str, _Source] = field(factory=OrderedDict, init=False)

    def note(self, now: float, source: str, code: int, reason: str) -> None:
        """Count one refusal of a request from ``source``; log it unless one was lately."""
        entry = self._sources.get(source)
        if entry is not None and now - entry.since < self.interval:
            entry.unlogged += 1
            return
        unlogged = 0 if entry is None else entry.unlogged
        self._sources.pop(source, None)
        self._sources[source] = _Source(now)
        while len(self._sources) > self.max_sources:
            self._sources.popitem(last=False)
        self.log.warn(
            "storage server refused a request from {source}: {code} {reason}"
            " ({unlogged} more refused from there since the last such line)",
            source=source,
            code=code,
            reason=reason,
            unlogged=unlogged,
        )


class GatedRequest(server.Request):
    """A request whose body bytes are counted against the limit its gate gave."""

    channel: LimitedChannel

    def handleContentChunk(self, data: bytes) -> None:
        """Keep a body chunk only while the body stays within its limit."""
        if self.channel.body_chunk(len(data)):
            super().handleContentChunk(data)


_HEAD, _BODY, _HANDLING, _CLOSING = "head", "body", "handling", "closing"


class LimitedChannel(http.HTTPChannel):
    """An HTTP/1.1 connection that enforces its site's :class:`HttpLimits` (see the module)."""

    site: LimitedSite
    _mode = "serve"  # or "refuse" (over capacity: 503) or "drop"
    _refused = False
    _phase = _HEAD
    _phase_start = 0.0
    _last_byte = 0.0
    _head_bytes = 0
    _head_lines = 0
    _head_size = 0
    _body_limit = 0
    _body_received = 0
    _timer: IDelayedCall | None = None

    # --- connection -------------------------------------------------------------------

    @property
    def _transport(self) -> ITCPTransport:
        return cast(ITCPTransport, self.transport)

    def connectionMade(self) -> None:
        """Take a connection slot (or refuse the connection) and start the head deadline."""
        self._mode = self.site.connection_opened()
        limits = self.site.limits
        self.MAX_LENGTH = limits.max_header_size
        self.totalHeadersSize = limits.max_header_size + 1  # ours is checked first
        self.maxHeaders = MAX_HEADER_LINES + 1
        if self._mode == "drop":
            self._refused = True
            self._note(503, "connection limit reached (dropped)")
            self._transport.abortConnection()
            return
        super().connectionMade()
        self._start(_HEAD)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Give the slot back and stop the timer."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.site.connection_closed(self._mode)
        super().connectionLost(reason)

    def dataReceived(self, data: bytes) -> None:
        """Parse bytes, unless the connection was refused (then they are dropped unread)."""
        if self._refused:
            return
        self._last_byte = self.site.clock.seconds()
        if self._phase == _HEAD:
            self._head_bytes += len(data)
        super().dataReceived(data)

    # --- the request head -------------------------------------------------------------

    def lineReceived(self, line: bytes) -> None:
        """Count a head line against the size and line limits before parsing it."""
        if self._refused:
            return
        self._head_lines += 1
        self._head_size += len(line) + 2
        limits = self.site.limits
        if self._head_size > limits.max_header_size:
            self._head_too_big(request_line=self._head_lines == 1)
            return
        if self._head_lines > MAX_HEADER_LINES + 2:  # the request line and the blank line
            self._refuse(Refusal(431, f"more than {MAX_HEADER_LINES} header lines"))
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        """A head line longer than the whole head may be."""
        self._head_too_big(request_line=self._head_lines == 0)

    def _head_too_big(self, request_line: bool) -> None:
        if request_line:
            self._refuse(Refusal(414, "request line too long"))
        else:
            size = self.site.limits.max_header_size
            self._refuse(Refusal(431, f"request head over {size} bytes"))

    def allHeadersReceived(self) -> None:
        """Ask the gate (authorization, body limit) before a byte of the body is read."""
        if self._mode == "refuse":
            retry = (("Retry-After", "1"),)
            self._refuse(Refusal(503, "the server is at its connection limit", retry))
            return
        request = self.requests[-1]
        verdict = self.site.gate.admit(
            self._command, self._path, request.requestHeaders, self.length
        )
        if isinstance(verdict, Refusal):
            self._refuse(verdict)
            return
        if self.length is not None and self.length > verdict:
            self._refuse(Refusal(413, f"request body larger than {verdict} bytes"))
            return
        self._body_limit = verdict
        self._body_received = 0
        self._start(_BODY)
        super().allHeadersReceived()

    def _respondToBadRequestAndDisconnect(self) -> None:
        """Twisted's answer to a malformed request, logged and with a body."""
        self._refuse(Refusal(400, "malformed request"))

    # --- the body ---------------------------------------------------------------------

    def body_chunk(self, size: int) -> bool:
        """Count ``size`` body bytes; refuse the request (413) once past its limit."""
        if self._refused:
            return False
        self._body_received += size
        if self._body_received > self._body_limit:
            self._refuse(Refusal(413, f"request body larger than {self._body_limit} bytes"))
            return False
        return True

    def rawDataReceived(self, data: bytes) -> None:
        """Body bytes (or pipelined requests buffered while one is handled)."""
        if not self._refused:
            super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        """The request is complete: no deadline while it is handled."""
        if self._refused:
            return
        self._start(_HANDLING)
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        """The response is written: the next request's head is due (pipelined ones parse now)."""
        if not self._refused:
            self._start(_HEAD if self.persistent else _CLOSING)
        super().requestDone(request)

    # --- deadlines --------------------------------------------------------------------

    def _start(self, phase: str) -> None:
        now = self.site.clock.seconds()
        self._phase, self._phase_start = phase, now
        if phase == _HEAD:
            self._head_bytes = self._head_lines = self._head_size = 0
        deadline = self._deadline()
        if deadline is None:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(max(0.0, deadline - now))
        else:
            self._timer = self.callLater(max(0.0, deadline - now), self._expired)

    def _deadline(self) -> float | None:
        timeout = self.site.limits.request_timeout
        if self._phase == _BODY:
            rate_bound = self._phase_start + timeout + self._body_received / MIN_BODY_RATE
            return min(self._last_byte + timeout, rate_bound)
        if self._phase in (_HEAD, _CLOSING):
            return self._phase_start + timeout
        return None

    def _expired(self) -> None:
        self._timer = None
        now = self.site.clock.seconds()
        deadline = self._deadline()
        if deadline is None:
            return
        if now < deadline or (self._phase == _HEAD and self._waitingForTransport):
            # Still in time, or a response is still being read: no deadline for readers.
            wait = deadline - now if now < deadline else self.site.limits.request_timeout
            self._timer = self.callLater(wait, self._expired)
        elif self._phase == _CLOSING:
            self._transport.abortConnection()
        elif self._phase == _HEAD and self._head_bytes == 0:
            self._close()  # an idle persistent connection: closed without a word
        else:
            self._refuse(Refusal(408, "request not received in time"))

    # --- refusing ---------------------------------------------------------------------

    def _note(self, code: int, reason: str) -> None:
        source = str(getattr(self._transport.getPeer(), "host", "unknown"))
        self.site.refusals.note(self.site.clock.seconds(), source, code, reason)

    def _refuse(self, refusal: Refusal) -> None:
        """Answer ``refusal`` now, log it (rate-limited), close; later bytes are dropped."""
        if self._refused:
            return
        self._refused = True
        self._note(refusal.code, refusal.message)
        body = refusal.message.encode("utf-8") + b"\n"
        phrase = stdlib_http.HTTPStatus(refusal.code).phrase
        lines = [
            f"HTTP/1.1 {refusal.code} {phrase}",
            "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {len(body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in refusal.headers),
        ]
        self._transport.write("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body)
        self._close()

    def _close(self) -> None:
        self._start(_CLOSING)
        self.loseConnection()


@define(eq=False)
class _Counts:
    served: int = 0
    refusing: int = 0


class LimitedSite(server.Site):
    """The storage protocol's ``Site``: :class:`LimitedChannel` connections, no access log.

    Twisted's access log would write one line per request: a 1 GiB download
    is tens of thousands of block reads, and formatting, scrubbing and writing
    those lines took 8 % of a storage node's time serving them. Failures and
    (rate-limited) refusals are still logged.
    """

    protocol = LimitedChannel  # type: ignore[assignment]
    displayTracebacks = False

    def __init__(
        self, resource: IResource, gate: IRequestGate, limits: HttpLimits, clock: IReactorTime
    ) -> None:
        super().__init__(
            resource,
            requestFactory=GatedRequest,
            timeout=None,
            reactor=clock,
            parsePOSTFormSubmission=False,
        )
        self.gate = gate
        self.limits = limits
        self.refusals = RefusalLog()
        self.counts = _Counts()

    @property
    def clock(self) -> IReactorTime:
        """The clock of every deadline (the site's ``reactor``)."""
        return self.reactor

    def connection_opened(self) -> str:
        """Take a slot for a new connection: ``serve``, ``refuse`` (503) or ``drop``."""
        if self.counts.served < self.limits.max_connections:
            self.counts.served += 1
            return "serve"
        if self.counts.refusing < self.limits.refusal_slots:
            self.counts.refusing += 1
            return "refuse"
        return "drop"

    def connection_closed(self, mode: str) -> None:
        """Give back the slot a connection took."""
        if mode == "serve":
            self.counts.served -= 1
        elif mode == "refuse":
            self.counts.refusing -= 1

    def log(self, request: http.Request) -> None:
        """Requests are not logged one by one."""


__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_HEADER_SIZE",
    "DEFAULT_REQUEST_TIMEOUT",
    "MAX_HEADER_LINES",
    "MIN_BODY_RATE",
    "GatedRequest",
    "HttpLimits",
    "IRequestGate",
    "LimitedChannel",
    "LimitedSite",
    "Refusal",
    "RefusalLog",
]
