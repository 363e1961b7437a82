"""The intent log stays small however long the gateway runs: an endless stream of intents
put and done (every directory change, every upload) is compacted away, intents replaced
in place count once, and what a restart finds is exactly the live intents."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.intents import log as intent_log_module
from gateway.intents.log import IntentLog

COMPACT = 64 * 1024


def test_a_long_stream_of_puts_and_dones_stays_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five long-lived intents (one replaced again and again), then 5,000 put/done pairs of
    ~200 bytes: the log never grows far past the compaction size, and a replay finds the
    five with their last values."""
    monkeypatch.setattr(intent_log_module, "COMPACT_BYTES", COMPACT)
    path = tmp_path / "intents.log"
    log = IntentLog(path, value_size=lambda value: len(value["pad"]))
    for n in range(5):
        log.put(f"long-{n}", {"pad": "L" * 300, "n": n})
    largest = 0
    for i in range(5_000):
        log.put(f"short-{i}", {"pad": "s" * 200, "i": i})
        if i % 7 == 0:
            log.put("long-0", {"pad": "L" * 300, "n": i})  # replaced: still one intent
        log.done(f"short-{i}")
        largest = max(largest, log.size)
    assert largest < 2 * COMPACT
    log.sync()
    log.close()
    reopened = IntentLog(path, value_size=lambda value: len(value["pad"]))
    assert set(reopened.live) == {f"long-{n}" for n in range(5)}
    assert reopened.live["long-0"]["n"] == 4_998
    assert reopened.size < 2 * COMPACT
    reopened.close()


def test_a_log_of_only_finished_intents_is_emptied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once nothing is live, a log past the reset size is emptied, and intents put after
    are kept and replayed."""
    monkeypatch.setattr(intent_log_module, "RESET_BYTES", 8 * 1024)
    path = tmp_path / "intents.log"
    log = IntentLog(path)
    for i in range(200):
        log.put(f"k{i}", "v" * 100)
        log.done(f"k{i}")
    assert log.size < 8 * 1024 + 400
    log.put("after", "kept")
    log.sync()
    log.close()
    assert IntentLog(path).live == {"after": "kept"}
