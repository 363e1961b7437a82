"""The storage server's HTTP limits in process, with a controlled clock: deadlines to the
second, refusal logging, connection slots, and the Twisted names the limits rely on.

The same behaviour over real TLS against a real node process is in
``test_limits_node.py``; here time is a ``task.Clock``, so the edges are exact.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import pytest
from twisted.logger import Logger, LogLevel
from twisted.web import http

from storage.http_limits import MIN_BODY_RATE, HttpLimits, LimitedChannel, RefusalLog
from tests.storage.http_fuzz import (
    LIMITS,
    VERSION,
    SiteUnderTest,
    check_input,
    request,
    site_under_test,
)

T = LIMITS.request_timeout
SI = "aaaaaaaaaaaaaaaaaaaaaaaaaa"


@pytest.fixture
def site() -> Iterator[SiteUnderTest]:
    """A fresh storage site with the fuzzing limits (4 KiB heads, 64 KiB bodies, 10 s)."""
    with site_under_test() as s:
        yield s


def test_twisted_names_the_limits_rely_on() -> None:
    """LimitedChannel overrides or reads these HTTPChannel names; a Twisted that renamed one
    would silently bypass a limit, so this fails first."""
    for name in (
        "lineReceived",
        "lineLengthExceeded",
        "allHeadersReceived",
        "allContentReceived",
        "rawDataReceived",
        "requestDone",
        "_respondToBadRequestAndDisconnect",
        "loseConnection",
    ):
        assert callable(getattr(http.HTTPChannel, name)), name
    source = inspect.getsource(http.HTTPChannel)
    for attribute in ("self._command", "self._path", "self._waitingForTransport", "self.length"):
        assert attribute in source, attribute
    assert "self.totalHeadersSize" in source and "self.maxHeaders" in source


def test_head_deadline_to_the_second(site: SiteUnderTest) -> None:
    """A head still incomplete at request_timeout gets 408; one byte earlier it is waited for."""
    conn = site.connect()
    conn.send(b"GET /storage/v1/version HTTP/1.1\r\n")
    site.clock.advance(T - 0.01)
    assert conn.take() == [] and conn.transport.connected
    site.clock.advance(0.02)
    assert [r.code for r in conn.take()] == [408]
    assert not conn.transport.connected


def test_idle_keep_alive_is_closed_silently(site: SiteUnderTest) -> None:
    """A persistent connection with no new request is closed after request_timeout, unanswered;
    the deadline counts from the last response."""
    conn = site.connect()
    site.clock.advance(T / 2)
    conn.send(VERSION)
    assert [r.code for r in conn.take()] == [200]
    site.clock.advance(T - 0.01)
    assert conn.transport.connected
    site.clock.advance(0.02)
    assert conn.take() == [] and not conn.transport.connected


def test_body_must_keep_coming(site: SiteUnderTest) -> None:
    """A body that pauses for request_timeout gets 408; one that keeps trickling above the
    minimum rate is waited for; one below it gets 408 once its grace is over."""
    head = request(b"PATCH", f"/storage/v1/immutable/{SI}/0", body=b"x" * 60000)
    head = head[: head.index(b"\r\n\r\n") + 4]
    stalled = site.connect()
    stalled.send(head + b"x" * 100)
    site.clock.advance(T + 0.01)
    assert [r.code for r in stalled.take()] == [408]

    slow = site.connect()
    slow.send(head)
    sent = 0
    for _ in range(int(3 * T)):  # half the minimum rate: in time for the grace, not after
        site.clock.advance(1)
        if not slow.transport.connected:
            break
        slow.send(b"x" * (MIN_BODY_RATE // 2))
        sent += MIN_BODY_RATE // 2
    assert [r.code for r in slow.take()] == [408]
    assert T * MIN_BODY_RATE // 2 <= sent < 3 * T * MIN_BODY_RATE // 2


def test_a_slow_reader_is_not_timed_out(site: SiteUnderTest) -> None:
    """While the server waits to send a response (the client reads slowly), no deadline runs."""
    conn = site.connect()
    conn.send(VERSION)
    conn.protocol.pauseProducing()  # the transport's buffer is full
    site.clock.advance(T * 5)
    assert conn.transport.connected
    conn.protocol.resumeProducing()
    site.clock.advance(T * 2)
    assert not conn.transport.connected


def test_connection_slots(site: SiteUnderTest) -> None:
    """max_connections served; the next eighth (at least one) answered 503; beyond, dropped;
    slots come back when connections close."""
    limits = HttpLimits(max_connections=2)
    site.site.limits = limits
    served = [site.connect(), site.connect()]
    refused = site.connect()
    dropped = site.connect()
    assert not dropped.transport.connected
    refused.send(VERSION)
    answer = refused.take()
    assert [r.code for r in answer] == [503] and answer[0].headers[b"retry-after"] == b"1"
    served[0].close()
    fresh = site.connect()
    fresh.send(VERSION)
    assert [r.code for r in fresh.take()] == [200]
    for conn in (served[1], fresh):
        conn.close()
    assert site.site.counts.served == 0 and site.site.counts.refusing == 0


def test_refusals_are_answered_before_the_body_is_read(site: SiteUnderTest) -> None:
    """Wrong swissnum, or a body announced over the limit: answered from the head alone, the
    connection closed, and no body buffered."""
    patch = request(b"PATCH", f"/storage/v1/immutable/{SI}/0", body=b"x")[:-1]
    for data, code in (
        (
            b"POST /storage/v1/immutable/x HTTP/1.1\r\nAuthorization: Tahoe-LAFS eA==\r\n"
            b"Content-Length: 1000000000\r\n\r\n\xff",
            401,
        ),
        (patch.replace(b"Content-Length: 1", b"Content-Length: 70000") + b"x" * 100, 413),
    ):
        conn = site.connect()
        conn.send(data)
        assert [r.code for r in conn.take()] == [code]
        assert not conn.transport.connected
        assert all(r.content is None for r in conn.protocol.requests)


def test_refusal_log_once_per_source_per_minute() -> None:
    """The first refusal of a source is logged; more within a minute are only counted, and the
    next line says how many there were."""
    events: list[dict[str, object]] = []
    log = RefusalLog(log=Logger(observer=events.append))
    for t in range(0, 59, 3):
        log.note(float(t), "192.0.2.1", 401, "wrong swissnum")
    log.note(10.0, "192.0.2.2", 408, "late")
    log.note(61.0, "192.0.2.1", 413, "too big")
    lines = [(e["source"], e["code"], e["unlogged"]) for e in events]
    assert lines == [("192.0.2.1", 401, 0), ("192.0.2.2", 408, 0), ("192.0.2.1", 413, 19)]
    assert all(e["log_level"] == LogLevel.warn for e in events)


def test_refusal_log_is_bounded() -> None:
    """The log remembers a bounded number of sources, forgetting the oldest."""
    log = RefusalLog(log=Logger(observer=lambda e: None), max_sources=10)
    for i in range(100):
        log.note(0.0, f"10.0.0.{i}", 401, "wrong swissnum")
    assert len(log._sources) == 10


def test_limits_are_positive() -> None:
    """HttpLimits refuses zero or negative limits."""
    with pytest.raises(ValueError):
        HttpLimits(request_timeout=0)
    with pytest.raises(ValueError):
        HttpLimits(max_connections=-1)
    assert HttpLimits(max_connections=4).refusal_slots == 1
    assert HttpLimits().refusal_slots == 64


def test_pipelined_requests_each_get_their_deadline(site: SiteUnderTest) -> None:
    """Two requests in one read are both answered, and the connection then idles normally."""
    responses = check_input(site, VERSION + VERSION)
    assert [r.code for r in responses] == [200, 200]
    assert isinstance(site.connect().protocol, LimitedChannel)
