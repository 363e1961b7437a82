"""The values of ``node.cfg``: one parser per kind of value (sizes, durations, ports, limits).

Each parser takes the raw text of a key and returns its value, or raises
``ValueError`` with a message saying what was expected; :mod:`gateway.config`
names the file, section and key around it. The schema (which key takes which
parser, each an :class:`Option`) is :data:`gateway.config.SCHEMA`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from attrs import frozen

NODE_KINDS = ("gateway", "storage")


@frozen
class Option:
    """One configuration key: where it lives, how it parses, its default and what it means."""

    section: str
    key: str
    parse: Callable[[str], Any]
    default: str | None
    doc: str
    kinds: tuple[str, ...] = NODE_KINDS


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}

_DURATION_UNITS = {
    "": 1.0,
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}


def parse_size(text: str) -> int:
    """Parse a byte size such as ``1024``, ``500M``, ``10GiB`` (decimal and binary units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as 500M or 10GiB, got {text!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def parse_duration(text: str) -> float:
    """Parse a duration such as ``300us``, ``30``, ``30s``, ``5m``, ``1h`` into seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _DURATION_UNITS:
        raise ValueError(f"expected a duration such as 30s, 5m or 1h, got {text!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]


def parse_bool(text: str) -> bool:
    """Parse ``true/false``, ``yes/no``, ``on/off``, ``1/0``."""
    value = text.strip().lower()
    if value in ("true", "yes", "on", "1"):
        return True
    if value in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _whole_number(text: str, expected: str = "a whole number") -> int:
    """``text`` as an integer (surrounding blanks allowed), else ValueError naming it."""
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"expected {expected}, got {text!r}") from None


def parse_port(text: str) -> int:
    """Parse a TCP port number; 0 means any free port, chosen at each start."""
    port = _whole_number(text, "a port number")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {port}")
    return port


def parse_host(text: str) -> str:
    """Parse a listening address: an IPv4/IPv6 literal or a host name."""
    host = text.strip()
    if not host or not re.fullmatch(r"[A-Za-z0-9.:\-\[\]_]+", host):
        raise ValueError(f"expected an address such as 127.0.0.1, got {text!r}")
    return host.strip("[]")


def parse_location(text: str) -> str:
    """Parse an advertised ``HOST:PORT``."""
    match = re.fullmatch(r"\s*(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-_]+):(\d+)\s*", text)
    if not match or not 0 < int(match.group(2)) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return f"{match.group(1)}:{match.group(2)}"


def parse_nickname(text: str) -> str:
    """Parse a node nickname: printable, at most 64 characters."""
    name = text.strip()
    if len(name) > 64 or not name.isprintable():
        raise ValueError("expected at most 64 printable characters")
    return name


def parse_share_count(text: str) -> int:
    """Parse a share count: 1..256."""
    value = _whole_number(text)
    if not 1 <= value <= 256:
        raise ValueError(f"must be between 1 and 256, got {value}")
    return value


def parse_log_level(text: str) -> str:
    """Parse a log level name."""
    level = text.strip().lower()
    if level not in ("debug", "info", "warn", "error", "critical"):
        raise ValueError(f"expected one of debug, info, warn, error, critical; got {text!r}")
    return level


def parse_close_mode(text: str) -> str:
    """Parse when an SFTP CLOSE replies: ``local`` (staged and journaled) or ``grid``."""
    mode = text.strip().lower()
    if mode not in ("local", "grid"):
        raise ValueError(f"expected local or grid, got {text!r}")
    return mode


def parse_kind(text: str) -> str:
    """Parse the node kind."""
    kind = text.strip().lower()
    if kind not in NODE_KINDS:
        raise ValueError(f"expected one of {', '.join(NODE_KINDS)}, got {text!r}")
    return kind


def at_least(parse: Callable[[str], Any], low: float, shown: str) -> Callable[[str], Any]:
    """``parse``, refusing values below ``low`` (``shown`` as the message says it)."""

    def parse_at_least(text: str) -> Any:
        value = parse(text)
        if value < low:
            raise ValueError(f"must be at least {shown}, got {text.strip()!r}")
        return value

    return parse_at_least


def parse_count(text: str) -> int:
    """Parse a whole number of things (connections, tries): 1 or more."""
    value = _whole_number(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def parse_rate(text: str) -> float:
    """Parse a rate per second, such as ``5`` or ``0.5``: more than 0."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:/s)?\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"expected a number per second above 0, such as 5 or 0.5, got {text!r}")
    return float(match.group(1))


def parse_max_startups(text: str) -> tuple[int, int, int]:
    """Parse OpenSSH's ``start:rate:full`` (or a single ``full``) into (start, rate, full).

    Once ``start`` connections are waiting to authenticate, a new one is
    dropped with a probability of ``rate`` percent, growing linearly to 100 %
    at ``full`` (a single number N means N:100:N, as in OpenSSH).
    """
    parts = text.strip().split(":")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        numbers = [numbers[0], 100, numbers[0]]
    if len(numbers) != 3:
        raise ValueError(f"expected start:rate:full such as 10:30:100, got {text!r}")
    start, rate, full = numbers
    if not 1 <= start <= full:
        raise ValueError(f"start ({start}) must be at least 1 and at most full ({full})")
    if not 1 <= rate <= 100:
        raise ValueError(f"rate must be a percentage between 1 and 100, got {rate}")
    return start, rate, full


def parse_kept(text: str) -> int:
    """Parse a number of old files kept: 0 to 1000."""
    value = _whole_number(text)
    if not 0 <= value <= 1000:
        raise ValueError(f"must be between 0 and 1000, got {value}")
    return value


def parse_path(text: str) -> str:
    """Parse a file path (relative to the node directory, or absolute): not empty, no NUL,
    not ending in ``/``."""
    path = text.strip()
    if not path or "\0" in path or path.endswith("/"):
        raise ValueError(f"expected a file path such as logs/audit.jsonl, got {text!r}")
    return path
