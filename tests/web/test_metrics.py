"""Progress, rates and the recent-errors observer, on a fake clock."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import Logger, LogPublisher

from gateway.logfile import Scrubber
from gateway.metrics import CheckHistory, LatencyHistogram, Progress, RecentErrors


def test_progress_rate_and_eta_follow_the_last_seconds() -> None:
    """10 MB/s for 5 s: rate 10 MB/s, half done, ETA 5 s; a stall brings the rate down."""
    clock = Clock()
    progress = Progress(clock, total=100_000_000)
    for _ in range(10):
        clock.advance(0.5)
        progress.advance(5_000_000)
    assert progress.fraction() == 0.5
    assert abs(progress.rate() - 10_000_000) < 1
    assert abs((progress.eta() or 0) - 5.0) < 0.01
    clock.advance(5)
    progress.advance(0)
    assert progress.rate() < 5_000_000


def test_recent_errors_keep_warnings_scrubbed() -> None:
    """Info is ignored; a warning naming a capability or a NURL is kept, redacted."""
    publisher = LogPublisher()
    errors = RecentErrors(Scrubber(), keep=2)
    publisher.addObserver(errors)
    log = Logger(namespace="test", observer=publisher)
    log.info("fine")
    log.warn("bad cap {cap}", cap="GG:DIR:abcdefghijklmnopqrstuvwxyz234567")
    log.error("bad server pb://hash@127.0.0.1:1/swissnumsecret#v=1")
    assert [e.level for e in errors.records] == ["warn", "error"]
    text = " ".join(e.message for e in errors.records)
    assert "abcdefghijkl" not in text and "swissnumsecret" not in text


def test_check_history_is_bounded() -> None:
    """Only the last ``keep`` outcomes stay."""
    history = CheckHistory(Clock(), keep=2)
    for name in ("a", "b", "c"):
        history.record("check", name, True, "healthy")
    assert [r.target for r in history.records] == ["b", "c"]


def test_latency_histogram_exports_what_prometheus_clients_histogram_does() -> None:
    """The same durations give the same bucket, count and sum samples as
    ``prometheus_client``'s Histogram (a bound counts the durations equal to it)."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    bounds = (0.001, 0.01, 1)
    ours = LatencyHistogram("req_seconds", "Requests.", "operation", bounds)
    theirs = Histogram("req_seconds", "Requests.", ["operation"], buckets=bounds, registry=None)
    for operation, seconds in [
        ("stat", 0.0005), ("stat", 0.001), ("stat", 0.005), ("stat", 2.0), ("close", 0.01),
    ]:  # fmt: skip
        ours.observe(operation, seconds)
        theirs.labels(operation=operation).observe(seconds)

    def samples(collector: object) -> list[str]:
        registry = CollectorRegistry()
        registry.register(collector)  # type: ignore[arg-type]
        text = generate_latest(registry).decode()
        return sorted(line for line in text.splitlines() if not line.endswith("_created"))

    class Ours:
        def collect(self) -> object:
            return ours.collect()

    assert samples(Ours()) == [line for line in samples(theirs) if "_created" not in line]
    assert 'req_seconds_bucket{le="0.001",operation="stat"} 2.0' in samples(Ours())
    counted = [line for line in samples(Ours()) if line.startswith("req_seconds_count")]
    assert counted == ['req_seconds_count{operation="close"} 1.0',
                       'req_seconds_count{operation="stat"} 4.0']  # fmt: skip
