"""The audit log file: its lines, rotation, permissions, and what happens when it cannot be
written (a real full device, /dev/full, included)."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger

from gateway.audit.events import NO_AUDIT, Client, IAuditLog, event_line
from gateway.audit.writer import AuditFile
from gateway.logfile import Scrubber

ALICE = Client("alice", "192.0.2.7", 50122, 3)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _writer(path: Path, clock: Clock | None = None, **kwargs: Any) -> AuditFile:
    kwargs.setdefault("max_size", 0)
    kwargs.setdefault("keep", 3)
    return AuditFile(path, clock=clock or Clock(), **kwargs)


def _capture(writer: AuditFile) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    writer.log = Logger(observer=events.append)
    return events


def test_writers_provide_the_interface() -> None:
    """The file and the null audit log both provide IAuditLog."""
    from zope.interface.verify import verifyObject

    assert verifyObject(IAuditLog, NO_AUDIT)
    assert verifyObject(IAuditLog, _writer(Path("unused.jsonl")))


def test_one_json_object_per_line_with_the_common_fields_first(tmp_path: Path) -> None:
    """Each event is a line: UTC time to the millisecond, event, account, address, port,
    session, then the event's own fields; names outside ASCII stay readable."""
    clock = Clock()
    clock.advance(1_700_000_000.25)
    writer = _writer(tmp_path / "audit.jsonl", clock)
    writer.record("rename", ALICE, **{"from": "/a.filepart", "to": "/été.txt"}, outcome="ok")
    writer.record("gateway_start", Client(), version="1")
    text = (tmp_path / "audit.jsonl").read_text(encoding="utf-8")
    assert "/été.txt" in text
    first, second = _lines(tmp_path / "audit.jsonl")
    assert list(first) == [
        "time", "event", "account", "address", "port", "session", "from", "to", "outcome",
    ]  # fmt: skip
    assert first["time"] == "2023-11-14T22:13:20.250Z"
    assert (first["event"], first["account"], first["address"]) == ("rename", "alice", "192.0.2.7")
    assert (first["port"], first["session"], first["to"]) == (50122, 3, "/été.txt")
    assert second["account"] is None and second["session"] is None


def test_event_fields_cannot_replace_the_common_ones() -> None:
    """An event field named like a common field is a programming error, not a silent overwrite."""
    with pytest.raises(ValueError, match="account"):
        event_line(0.0, "login", ALICE, {"account": "mallory"})


def test_a_very_long_account_name_tried_is_cut() -> None:
    """The name a failed login tried is kept to 128 characters."""
    line = json.loads(event_line(0.0, "login_failed", Client("x" * 5000), {}))
    assert len(line["account"]) == 129


def test_file_is_private_and_survives_reopening(tmp_path: Path) -> None:
    """The file is created 0600 (in a directory created 0700), and events are appended
    across writers (a restart)."""
    path = tmp_path / "audit" / "audit.jsonl"
    first = _writer(path)
    first.record("login", ALICE)
    first.close()
    _writer(path).record("logout", ALICE)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [e["event"] for e in _lines(path)] == ["login", "logout"]


def test_secrets_are_scrubbed_as_a_second_line_of_defence(tmp_path: Path) -> None:
    """A capability or a registered secret that reached an event is redacted in the file."""
    scrubber = Scrubber()
    scrubber.add("hunter2-password")
    writer = _writer(tmp_path / "audit.jsonl", scrub=scrubber.scrub)
    cap = "GG:DIR:abcdefghijklmnop:qrstuvwxyz234567"
    writer.record("mkdir", ALICE, path=f"/{cap}", note="hunter2-password")
    text = (tmp_path / "audit.jsonl").read_text()
    assert "GG:DIR" not in text and "hunter2" not in text
    assert _lines(tmp_path / "audit.jsonl")[0]["path"] == "/[redacted-cap]"


def test_rotation_keeps_the_newest_files(tmp_path: Path) -> None:
    """Past max_size the file moves to PATH.1 (PATH.1 to PATH.2…), at most ``keep`` old files
    are kept, no line is split between files, and no event is lost from the kept ones."""
    path = tmp_path / "audit.jsonl"
    writer = _writer(path, max_size=600, keep=2)
    for number in range(40):
        writer.record("mkdir", ALICE, path=f"/dir{number:02d}", outcome="ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audit.jsonl", "audit.jsonl.1", "audit.jsonl.2",
    ]  # fmt: skip
    kept = [_lines(tmp_path / name) for name in ("audit.jsonl.2", "audit.jsonl.1", "audit.jsonl")]
    numbers = [int(e["path"][4:]) for lines in kept for e in lines]
    assert numbers == list(range(numbers[0], 40))
    for name in ("audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"):
        assert (tmp_path / name).stat().st_size <= 600


def test_rotation_keeping_nothing_and_no_rotation(tmp_path: Path) -> None:
    """keep = 0 starts the file over; max_size = 0 never rotates."""
    kept_none = _writer(tmp_path / "a.jsonl", max_size=300, keep=0)
    never = _writer(tmp_path / "b.jsonl", max_size=0, keep=2)
    for number in range(20):
        kept_none.record("rmdir", ALICE, path=f"/d{number}")
        never.record("rmdir", ALICE, path=f"/d{number}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.jsonl"]
    assert _lines(tmp_path / "a.jsonl")[-1]["path"] == "/d19"
    assert len(_lines(tmp_path / "b.jsonl")) == 20


def test_a_full_device_loses_events_not_operations(tmp_path: Path) -> None:
    """On a full device (/dev/full) recording raises nothing; the events are counted as lost
    and the node log says so once, however many are lost."""
    writer = _writer(Path("/dev/full"))
    logged = _capture(writer)
    for _ in range(5):
        writer.record("remove", ALICE, path="/x", outcome="ok")
    assert writer.lost == 5
    errors = [e for e in logged if e["log_level"].name == "error"]
    assert len(errors) == 1
    assert errors[0]["path"] == "/dev/full" and "space" in errors[0]["error"].lower()


def test_recovery_records_how_many_events_were_lost(tmp_path: Path) -> None:
    """Once the file can be written again, an ``audit_lost`` line says how many events were
    lost and since when, before the event that was written, and the node log says so."""
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the directory should be")
    clock = Clock()
    clock.advance(1000)
    writer = _writer(blocker / "audit.jsonl", clock)
    logged = _capture(writer)
    writer.record("login", ALICE)
    clock.advance(5)
    writer.record("logout", ALICE)
    assert writer.lost == 2
    blocker.unlink()
    writer.record("login", ALICE)
    lost, login = _lines(blocker / "audit.jsonl")
    assert (lost["event"], lost["events"]) == ("audit_lost", 2)
    assert lost["since"] == "1970-01-01T00:16:40.000Z"
    assert login["event"] == "login" and writer.lost == 0
    assert [e["log_level"].name for e in logged] == ["error", "info"]


def test_a_line_cut_short_is_ended_before_the_next(tmp_path: Path) -> None:
    """A file whose last line was cut short (a crash mid-write) gets a newline first, so the
    next event is a whole line of its own."""
    path = tmp_path / "audit.jsonl"
    path.write_text('{"event": "login"}\n{"event": "rena')
    _writer(path).record("mkdir", ALICE, path="/d")
    last = path.read_text().splitlines()[-1]
    assert json.loads(last)["event"] == "mkdir"


def test_the_time_is_utc_iso_8601(tmp_path: Path) -> None:
    """The time reads as ISO 8601 in UTC (a ``Z`` suffix), whatever the local time zone."""
    line = json.loads(event_line(86400 * 365.25 * 30, "login", ALICE, {}))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])


def test_names_cannot_break_or_disguise_a_line(tmp_path: Path) -> None:
    """Line and paragraph separators, bidirectional overrides, characters outside the BMP
    that do not print, and invalid surrogates in a name stay escaped inside one JSON line,
    and read back as the name; printable names outside ASCII stay as they are."""
    name = "/a\u2028b\u2029c\x85d\u202egpj.exe\U000e0041\udcff\ttab\nnewline\\x/日本.txt"
    path = tmp_path / "audit.jsonl"
    _writer(path).record("remove", ALICE, path=name)
    raw = path.read_bytes()
    assert raw.count(b"\n") == 1 and raw.endswith(b"\n")
    text = raw.decode("utf-8")
    assert text.isprintable() is False and text[:-1].isprintable()
    assert "日本.txt" in text and "\\u202e" in text and "\\udb40\\udc41" in text
    assert json.loads(text)["path"] == name
