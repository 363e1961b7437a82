"""The pre-auth admission rules and the per-account caps in process, with a controlled clock:
MaxStartups' drop curve, the per-source token bucket and concurrency, refusal logging once per
source per minute, account slots, and the new ``[sftp]`` keys' validation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent

from gateway.config import ConfigError, parse_config, render_config
from gateway.sftp.account_limits import AccountLimits, AccountSlots
from gateway.sftp.preauth import (
    EXCEEDED_MAX_STARTUPS,
    NOT_ALLOWED,
    ConnectionGate,
    MaxStartups,
    PreauthLimits,
    Refusal,
    RefusalLog,
    Startup,
    source_of,
)


class Recorded:
    """A log observer that keeps the formatted warnings."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event: dict[str, object]) -> None:
        if event.get("log_level") == LogLevel.warn:
            self.lines.append(formatEvent(event))


def gate(
    limits: PreauthLimits, draws: Iterator[float] | None = None
) -> tuple[ConnectionGate, Clock, Recorded]:
    """A gate on a controlled clock, drawing its random numbers from ``draws`` (else 0.99)."""
    clock = Clock()
    recorded = Recorded()
    numbers = draws if draws is not None else iter(lambda: 0.99, None)
    made = ConnectionGate(
        limits, clock, RefusalLog(clock, Logger(observer=recorded)), random=lambda: next(numbers)
    )
    return made, clock, recorded


def test_drop_probability_follows_openssh() -> None:
    """Nothing is dropped below start, rate % at start, growing linearly to all at full."""
    curve = MaxStartups(10, 30, 100)
    assert curve.drop_probability(9) == 0.0
    assert curve.drop_probability(10) == pytest.approx(0.30)
    assert curve.drop_probability(55) == pytest.approx(0.65)
    assert curve.drop_probability(99) == pytest.approx(0.30 + 0.70 * 89 / 90)
    assert curve.drop_probability(100) == 1.0


def test_full_refuses_every_new_connection_until_one_logs_in() -> None:
    """At ``full`` waiting connections every new one gets 'Exceeded MaxStartups'; one that
    logs in (or goes) makes room again."""
    limits = PreauthLimits(max_startups=MaxStartups(3, 100, 3), per_source_max_startups=99)
    g, _, _ = gate(limits)
    admitted = [g.admit(f"10.0.0.{i}") for i in range(3)]
    assert all(isinstance(a, Startup) for a in admitted)
    refused = g.admit("10.0.0.9")
    assert isinstance(refused, Refusal) and refused.line == EXCEEDED_MAX_STARTUPS
    first = admitted[0]
    assert isinstance(first, Startup)
    first.done()
    first.done()  # counted once
    assert g.pending == 2
    assert isinstance(g.admit("10.0.0.9"), Startup)
    assert g.status() == {"waiting_to_log_in": 3, "refused": 1}


def test_random_drop_uses_one_draw_per_connection() -> None:
    """With one connection waiting and start 1, rate 50: a draw of 0.4 drops, 0.6 admits."""
    limits = PreauthLimits(max_startups=MaxStartups(1, 50, 10), per_source_max_startups=99)
    g, _, _ = gate(limits, iter([0.99, 0.4, 0.6]))
    assert isinstance(g.admit("10.0.0.1"), Startup)
    dropped = g.admit("10.0.0.2")
    assert isinstance(dropped, Refusal) and dropped.line == EXCEEDED_MAX_STARTUPS
    assert isinstance(g.admit("10.0.0.3"), Startup)


def test_one_source_has_a_burst_then_a_rate() -> None:
    """One source gets ``per_source_burst`` connections at once, then ``per_source_rate`` a
    second; another source is not affected."""
    limits = PreauthLimits(per_source_burst=4, per_source_rate=2.0, per_source_max_startups=99)
    g, clock, _ = gate(limits)
    results = [g.admit("192.0.2.1") for _ in range(6)]
    assert [isinstance(r, Startup) for r in results] == [True] * 4 + [False] * 2
    refused = results[-1]
    assert isinstance(refused, Refusal) and refused.line == NOT_ALLOWED
    for r in results:
        if isinstance(r, Startup):
            r.done()  # going away without logging in does not give the tokens back
    assert isinstance(g.admit("192.0.2.1"), Refusal)
    assert isinstance(g.admit("192.0.2.2"), Startup)
    clock.advance(0.5)  # one more token
    assert isinstance(g.admit("192.0.2.1"), Startup)
    assert isinstance(g.admit("192.0.2.1"), Refusal)
    clock.advance(60)  # refilled to the burst, no more
    assert sum(isinstance(g.admit("192.0.2.1"), Startup) for _ in range(6)) == 4


def test_connections_that_log_in_give_their_token_back() -> None:
    """A client that logs in on every connection (rclone's parallel connections, a script
    connecting in a loop) is never held by the rate: each login refunds its token."""
    limits = PreauthLimits(per_source_burst=3, per_source_rate=0.1, per_source_max_startups=99)
    g, _, _ = gate(limits)
    for _ in range(20):
        startup = g.admit("192.0.2.7")
        assert isinstance(startup, Startup)
        startup.logged_in()
    assert g.pending == 0
    never = [g.admit("192.0.2.7") for _ in range(5)]  # a flood that never logs in
    assert [isinstance(r, Startup) for r in never] == [True] * 3 + [False] * 2


def test_one_source_waiting_connections_are_capped() -> None:
    """A source with ``per_source_max_startups`` connections waiting gets no more until
    one logs in."""
    limits = PreauthLimits(per_source_max_startups=2, per_source_burst=99)
    g, _, _ = gate(limits)
    first, second = g.admit("192.0.2.1"), g.admit("192.0.2.1")
    assert isinstance(first, Startup) and isinstance(second, Startup)
    third = g.admit("192.0.2.1")
    assert isinstance(third, Refusal) and third.line == NOT_ALLOWED
    assert isinstance(g.admit("192.0.2.2"), Startup)
    first.done()
    assert isinstance(g.admit("192.0.2.1"), Startup)


def test_an_idle_waiting_connection_makes_room_for_a_new_one() -> None:
    """At its cap, a source's idlest waiting connection is closed for a new one once it has
    sent nothing for 10 s (logged with the refusals); a busy one is not, and the new one is
    refused."""
    limits = PreauthLimits(per_source_max_startups=2, per_source_burst=99)
    g, clock, recorded = gate(limits)
    closed: list[str] = []
    first, second = g.admit("192.0.2.1"), g.admit("192.0.2.1")
    assert isinstance(first, Startup) and isinstance(second, Startup)
    first.evict = lambda: closed.append("first")
    second.evict = lambda: closed.append("second")
    clock.advance(9)
    second.last_active = clock.seconds()
    assert isinstance(g.admit("192.0.2.1"), Refusal)  # first idle 9 s only
    clock.advance(1)
    third = g.admit("192.0.2.1")
    assert isinstance(third, Startup) and closed == ["first"] and first.finished
    assert g.pending == 2
    assert isinstance(g.admit("192.0.2.1"), Refusal)  # second active 1 s ago, third new
    assert len(recorded.lines) == 1  # the first refusal; the eviction is counted for later
    clock.advance(60)
    assert isinstance(g.admit("192.0.2.1"), Startup)  # second, idle 60 s, makes room
    assert closed == ["first", "second"]
    assert recorded.lines[1].endswith(
        "an idle connection closed to make room for a new one (2 more refused since the last"
        " message)"
    )


def test_sources_are_addresses_and_ipv6_networks() -> None:
    """IPv4 addresses count alone; IPv6 addresses by their /64; mapped IPv4 as IPv4."""
    assert source_of("192.0.2.7") == "192.0.2.7"
    assert source_of("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert source_of("2001:db8:1:2::99") == source_of("2001:db8:1:2:ffff::1")
    assert source_of("::ffff:192.0.2.7") == "192.0.2.7"


def test_refusals_are_logged_once_per_source_per_minute() -> None:
    """A hundred refusals from one source in a minute give one line; the next minute's first
    refusal gives one more saying how many were not logged; another source has its own."""
    limits = PreauthLimits(per_source_burst=1, per_source_max_startups=99)
    g, clock, recorded = gate(limits)
    g.admit("192.0.2.1")
    for _ in range(100):
        g.admit("192.0.2.1")
        clock.advance(0.1)  # half a token at the default 5 a second: every other one refused
    refused_first_minute = g.refused
    assert refused_first_minute > 0
    assert len(recorded.lines) == 1
    assert recorded.lines[0].startswith("SSH connection from 192.0.2.1 refused: ")
    clock.advance(60)
    for _ in range(20):
        g.admit("192.0.2.1")
    assert len(recorded.lines) == 2
    assert f"({refused_first_minute - 1} more refused since the last message)" in recorded.lines[1]
    assert isinstance(g.admit("192.0.2.2"), Startup)  # its own bucket
    assert isinstance(g.admit("192.0.2.2"), Refusal)
    assert len(recorded.lines) == 3
    assert recorded.lines[2].startswith("SSH connection from 192.0.2.2 refused: ")


def test_account_slots() -> None:
    """Each account has its own connections and sessions up to the caps; releasing twice
    gives back one slot."""
    slots = AccountSlots(AccountLimits(max_connections=2, max_sessions=1))
    first, second = slots.connect("alice"), slots.connect("alice")
    assert first is not None and second is not None
    assert slots.connect("alice") is None
    assert slots.connect("bob") is not None
    first()
    first()
    assert slots.connections("alice") == 1
    assert slots.connect("alice") is not None
    session = slots.open_session("alice")
    assert session is not None and slots.open_session("alice") is None
    assert "at most 1 at once" in slots.too_many_sessions("alice")
    session()
    assert slots.sessions("alice") == 0


def test_new_sftp_keys_have_defaults_and_are_validated() -> None:
    """The pre-auth and per-account keys default to OpenSSH's values (or the documented
    ones); bad values are refused naming the key."""
    config = parse_config(render_config("gateway", {}), "node.cfg")
    assert config.get("sftp", "login_grace_time") == 120.0
    assert config.get("sftp", "max_startups") == (10, 30, 100)
    assert config.get("sftp", "max_auth_tries") == 6
    assert config.get("sftp", "per_source_rate") == 5.0
    assert config.get("sftp", "per_source_burst") == 10
    assert config.get("sftp", "per_source_max_startups") == 5
    assert config.get("sftp", "max_connections_per_account") == 32
    assert config.get("sftp", "max_sessions_per_account") == 64
    single = parse_config(render_config("gateway", {("sftp", "max_startups"): "20"}), "c")
    assert single.get("sftp", "max_startups") == (20, 100, 20)
    for key, value, message in [
        ("max_startups", "10:30", "expected start:rate:full"),
        ("max_startups", "50:30:10", "start (50) must be at least 1 and at most full (10)"),
        ("max_startups", "10:0:100", "rate must be a percentage"),
        ("login_grace_time", "0", "must be at least 1s"),
        ("max_auth_tries", "0", "must be at least 1"),
        ("per_source_rate", "0", "expected a number per second above 0"),
        ("max_sessions_per_account", "many", "expected a whole number"),
    ]:
        with pytest.raises(ConfigError) as e:
            parse_config(render_config("gateway", {("sftp", key): value}), "/n/node.cfg")
        assert str(e.value).startswith(f"/n/node.cfg: [sftp] {key}: "), key
        assert message in str(e.value), (key, str(e.value))
