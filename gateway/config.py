"""A node's configuration file (``node.cfg``): its schema, parsing and validation.

The file is INI. Every key a node understands is declared once in
:data:`SCHEMA`, with its parser and default; anything else in the file is
refused at start with a message that names the file, the section and the key,
so a typo never silently falls back to a default. ``docs/configuration.rst``
documents every key. The value parsers are :mod:`gateway.config_values`
(re-exported here).
"""

from __future__ import annotations

import configparser
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import frozen

from gateway.audit.settings import AUDIT_OPTIONS
from gateway.config_values import (
    NODE_KINDS,
    Option,
    at_least,
    parse_bool,
    parse_close_mode,
    parse_count,
    parse_duration,
    parse_host,
    parse_kept,
    parse_kind,
    parse_location,
    parse_log_level,
    parse_max_startups,
    parse_nickname,
    parse_path,
    parse_port,
    parse_rate,
    parse_share_count,
    parse_size,
)
from gateway.nodedir import write_atomic

__all__ = [
    "NODE_KINDS",
    "SCHEMA",
    "ConfigError",
    "NodeConfig",
    "Option",
    "at_least",
    "load_config",
    "options_for",
    "parse_bool",
    "parse_close_mode",
    "parse_config",
    "parse_count",
    "parse_duration",
    "parse_kept",
    "parse_host",
    "parse_kind",
    "parse_location",
    "parse_log_level",
    "parse_max_startups",
    "parse_nickname",
    "parse_path",
    "parse_port",
    "parse_rate",
    "parse_share_count",
    "parse_size",
    "render_config",
    "update_config",
]


class ConfigError(Exception):
    """The configuration is invalid; the message names file, section and key."""

    def __init__(self, path: Path | str, section: str | None, key: str | None, message: str):
        self.path = str(path)
        self.section = section
        self.key = key
        self.message = message
        where = self.path
        if section is not None:
            where += f": [{section}]"
            if key is not None:
                where += f" {key}"
        super().__init__(f"{where}: {message}")


SCHEMA: tuple[Option, ...] = (
    Option("node", "kind", parse_kind, None, "What this node is: ``gateway`` or ``storage``."),
    Option("node", "nickname", parse_nickname, "", "A human name shown on status pages."),
    Option("node", "log_level", parse_log_level, "info", "Lowest level written to logs/node.log."),
    Option(
        "node",
        "log_max_size",
        parse_size,
        "10MiB",
        "Size past which logs/node.log is rotated (0: never, for logrotate's copytruncate).",
    ),
    Option("node", "log_keep", parse_kept, "5", "Rotated node logs kept (node.log.1 the newest)."),
    Option(
        "sftp", "host", parse_host, "127.0.0.1", "Address the SFTP server listens on.", ("gateway",)
    ),
    Option(
        "sftp",
        "port",
        parse_port,
        "8022",
        "SFTP port (0: any free port at each start).",
        ("gateway",),
    ),
    Option(
        "sftp",
        "host_key_passphrase_file",
        str,
        "",
        "File holding the passphrase of an encrypted host key (relative to the node "
        "directory); empty when the key is not encrypted.",
        ("gateway",),
    ),
    Option(
        "sftp",
        "login_grace_time",
        at_least(parse_duration, 1, "1s"),
        "120s",
        "Time a connection has to log in (from its first byte); then it is closed.",
        ("gateway",),
    ),
    Option(
        "sftp",
        "max_startups",
        parse_max_startups,
        "10:30:100",
        "Connections waiting to log in, as OpenSSH's start:rate:full: from ``start`` on, a"
        " new one is refused with a probability of ``rate`` %, growing to all at ``full``.",
        ("gateway",),
    ),
    Option(
        "sftp",
        "per_source_max_startups",
        parse_count,
        "5",
        "Connections from one address (an IPv6 /64) waiting to log in at once; more are"
        " refused, unless its idlest one has sent nothing for 10 s (that one is closed).",
        ("gateway",),
    ),
    Option(
        "sftp",
        "per_source_rate",
        parse_rate,
        "5",
        "New connections accepted per second from one address (an IPv6 /64), after a burst"
        " of ``per_source_burst``; more are refused.",
        ("gateway",),
    ),
    Option(
        "sftp",
        "per_source_burst",
        parse_count,
        "10",
        "New connections one address may open at once before ``per_source_rate`` applies.",
        ("gateway",),
    ),
    Option(
        "sftp",
        "max_auth_tries",
        parse_count,
        "6",
        "Failed login attempts (passwords, keys) on one connection before it is closed.",
        ("gateway",),
    ),
    Option(
        "sftp",
        "max_connections_per_account",
        parse_count,
        "32",
        "SSH connections one account may have logged in at once; more are refused at login.",
        ("gateway",),
    ),
    Option(
        "sftp",
        "max_sessions_per_account",
        parse_count,
        "64",
        "SFTP sessions one account may have open at once, over all its connections.",
        ("gateway",),
    ),
    Option(
        "sftp",
        "busy_poll",
        parse_duration,
        "300us",
        "How long a connection that has just answered its client polls for the next request"
        " before the CPU may sleep (0: never); it gives way to slower clients, to work in"
        ' the node\'s threads and to busy CPUs (docs/performance.rst, "Waking up").',
        ("gateway",),
    ),
    Option("web", "enabled", parse_bool, "true", "Serve the status page.", ("gateway", "storage")),
    Option("web", "host", parse_host, "127.0.0.1", "Address the status page listens on."),
    Option("web", "port", parse_port, "8023", "Status page port (0: any free port)."),
    Option(
        "grid",
        "embedded",
        parse_bool,
        "true",
        "Run a storage server inside the gateway (shares under storage/).",
        ("gateway",),
    ),
    Option(
        "grid",
        "shares.needed",
        parse_share_count,
        "1",
        "Shares needed to rebuild a file (k).",
        ("gateway",),
    ),
    Option(
        "grid",
        "shares.happy",
        parse_share_count,
        "1",
        "Distinct servers an upload must reach (servers of happiness).",
        ("gateway",),
    ),
    Option(
        "grid", "shares.total", parse_share_count, "1", "Shares made per file (N).", ("gateway",)
    ),
    Option(
        "grid",
        "lease_renewal_interval",
        parse_duration,
        "7d",
        "How often the leases on every share reachable from an account's root are renewed "
        "(servers keep a lease 31 days).",
        ("gateway",),
    ),
    Option(
        "uploads",
        "close",
        parse_close_mode,
        "local",
        "When CLOSE and directory changes reply: ``local`` once journaled (published in"
        " the background), ``grid`` once in the grid.",
        ("gateway",),
    ),
    Option(
        "uploads",
        "staging_quota",
        parse_size,
        "10GiB",
        "Most bytes staged locally while uploads are pending.",
        ("gateway",),
    ),
    Option(
        "uploads",
        "keep_uploaded",
        parse_size,
        "256MiB",
        "Most bytes of new files' local copies kept after their upload, so that reading"
        " them back (``tar``, ``diff`` after ``cp -r``) stays local (at most a quarter of"
        " ``staging_quota``; ``0``: none).",
        ("gateway",),
    ),
    Option(
        "uploads",
        "grace_period",
        parse_duration,
        "30s",
        "How long ``gateway stop`` lets queued uploads finish before journaling them.",
        ("gateway",),
    ),
    Option(
        "storage",
        "host",
        parse_host,
        "127.0.0.1",
        "Address the storage server listens on.",
        ("storage",),
    ),
    Option("storage", "port", parse_port, "0", "Storage server port.", ("storage",)),
    Option(
        "storage",
        "location",
        parse_location,
        None,
        "HOST:PORT that clients use to reach this server (goes into the NURL).",
        ("storage",),
    ),
    Option(
        "storage",
        "reserved_space",
        parse_size,
        "1GiB",
        "Free space always kept on the disk; allocations that would cross it are refused.",
        ("storage",),
    ),
    Option(
        "storage",
        "expire.enabled",
        parse_bool,
        "false",
        "Delete shares whose leases have all expired.",
        ("storage",),
    ),
    Option(
        "storage",
        "max_header_size",
        at_least(parse_size, 1024, "1KiB"),
        "16KiB",
        "Most bytes of a request line and headers (431 above).",
        ("storage",),
    ),
    Option(
        "storage",
        "max_body_size",
        at_least(parse_size, 64 * 1024, "64KiB"),
        "72MiB",
        "Most bytes of one request body (413 above); shares are written in several requests.",
        ("storage",),
    ),
    Option(
        "storage",
        "request_timeout",
        at_least(parse_duration, 1, "1s"),
        "60s",
        "Time for a request's headers, the longest pause in its body, and the longest idle"
        " keep-alive (408 when a request is late).",
        ("storage",),
    ),
    Option(
        "storage",
        "max_connections",
        at_least(int, 1, "1"),
        "512",
        "Connections served at once; more are answered 503 or closed.",
        ("storage",),
    ),
    *AUDIT_OPTIONS,
)

_BY_KEY: Mapping[tuple[str, str], Option] = {(o.section, o.key): o for o in SCHEMA}


@frozen
class NodeConfig:
    """A validated configuration: typed values by (section, key), plus where it came from."""

    path: str
    kind: str
    values: Mapping[tuple[str, str], Any]

    def get(self, section: str, key: str) -> Any:
        """The value of a key (its default where the file leaves it out)."""
        return self.values[(section, key)]


def options_for(kind: str) -> tuple[Option, ...]:
    """The keys a node of this kind understands."""
    return tuple(o for o in SCHEMA if kind in o.kinds)


def parse_config(text: str, path: Path | str) -> NodeConfig:
    """Parse and validate configuration text; raise ConfigError naming what is wrong."""
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as e:
        first = str(e).splitlines()[0]
        raise ConfigError(path, None, None, f"not a valid INI file: {first}") from None
    try:
        kind = parse_kind(parser.get("node", "kind"))
    except (configparser.Error, ValueError) as e:
        message = str(e) if isinstance(e, ValueError) else "missing (gateway or storage)"
        raise ConfigError(path, "node", "kind", message) from None
    known = {(o.section, o.key): o for o in options_for(kind)}
    for section in parser.sections():
        for key in parser[section]:
            if (section, key) not in known:
                if (section, key) in _BY_KEY:
                    raise ConfigError(path, section, key, f"not used by a {kind} node")
                raise ConfigError(path, section, key, "unknown key")
    values: dict[tuple[str, str], Any] = {}
    for (section, key), option in known.items():
        raw = parser.get(section, key, fallback=option.default)
        if raw is None:
            raise ConfigError(path, section, key, "required, but missing")
        try:
            values[(section, key)] = option.parse(raw)
        except ValueError as e:
            raise ConfigError(path, section, key, str(e)) from None
    config = NodeConfig(path=str(path), kind=kind, values=values)
    _check_combinations(config)
    return config


def _check_combinations(config: NodeConfig) -> None:
    """Refuse impossible combinations of otherwise valid values."""
    if config.kind != "gateway":
        return
    needed = config.get("grid", "shares.needed")
    happy = config.get("grid", "shares.happy")
    total = config.get("grid", "shares.total")
    if happy > total:
        raise ConfigError(
            config.path,
            "grid",
            "shares.happy",
            f"happy ({happy}) cannot be greater than shares.total ({total})",
        )
    if needed > happy:
        raise ConfigError(
            config.path,
            "grid",
            "shares.needed",
            f"needed ({needed}) cannot be greater than shares.happy ({happy})",
        )


def load_config(path: Path) -> NodeConfig:
    """Read and validate a node's configuration file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, None, None, "missing: is this a node directory?") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, None, None, f"cannot be read: {e}") from None
    return parse_config(text, path)


def render_config(kind: str, settings: Mapping[tuple[str, str], str]) -> str:
    """Write a commented configuration file for a new node of ``kind``.

    ``settings`` overrides defaults; keys left at their default are written
    commented out, so the file shows every knob.
    """
    lines = [f"# Configuration of this {kind} node. Reference: docs/configuration.rst", ""]
    section = None
    for option in options_for(kind):
        if option.section != section:
            if section is not None:
                lines.append("")
            section = option.section
            lines.append(f"[{section}]")
        lines.append(f"# {option.doc}")
        if (option.section, option.key) in settings:
            lines.append(f"{option.key} = {settings[(option.section, option.key)]}")
        elif option.key == "kind":
            lines.append(f"kind = {kind}")
        else:
            lines.append(f"#{option.key} = {option.default}")
    return "\n".join(lines) + "\n"


def update_config(path: Path, settings: Mapping[tuple[str, str], str]) -> NodeConfig:
    """Set keys in an existing configuration file, keeping its comments and other keys.

    A key's live line (or, failing that, its commented-out default) is replaced;
    a key the file lacks is added at the end of its section (the section is
    added when missing). The result is validated before it is written, and
    written atomically; the new configuration is returned.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    for (section, key), value in settings.items():
        lines = _set_line(lines, section, key, value)
    text = "\n".join(lines) + "\n"
    config = parse_config(text, path)
    write_atomic(path, text.encode("utf-8"), path.stat().st_mode & 0o777)
    return config


def _set_line(lines: list[str], section: str, key: str, value: str) -> list[str]:
    """``lines`` with ``key = value`` in ``[section]``."""
    new = f"{key} = {value}"
    start = next((i for i, line in enumerate(lines) if line.strip() == f"[{section}]"), None)
    if start is None:
        return [*lines, "", f"[{section}]", new]
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")),
        len(lines),
    )

    def names(line: str, commented: bool) -> bool:
        text = line.strip()
        if commented:
            if not text.startswith("#"):
                return False
            text = text[1:].strip()
        return "=" in text and text.split("=", 1)[0].strip() == key

    for commented in (False, True):
        for i in range(start + 1, end):
            if names(lines[i], commented):
                return [*lines[:i], new, *lines[i + 1 :]]
    last = end
    while last > start + 1 and not lines[last - 1].strip():
        last -= 1
    return [*lines[:last], new, *lines[last:]]
