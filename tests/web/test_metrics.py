"""Progress, rates and the recent-errors observer, on a fake clock."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import Logger, LogPublisher

from gateway.logfile import Scrubber
from gateway.metrics import CheckHistory, Progress, RecentErrors


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
