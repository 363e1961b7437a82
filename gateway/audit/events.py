"""What an audit event is, how it reads as a JSON line, and the interface that records one.

Every event is one JSON object on one line::

    {"time": "2025-01-31T12:00:00.123Z", "event": "rename", "account": "alice",
     "address": "192.0.2.7", "port": 50122, "session": 3,
     "from": "/a.txt.filepart", "to": "/a.txt", "overwrite": true, "outcome": "ok"}

``time`` (UTC), ``event``, ``account``, ``address``, ``port`` and ``session``
are in every line (``null`` where they do not apply: a failed login has no
session, the node's own start no client); the event's own fields follow. The
events and their fields are listed in ``docs/operations.rst`` ("Audit log").
No event carries a password, a key (only its fingerprint) or a capability.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import frozen
from zope.interface import Interface, implementer

from gateway.logfile import utc_timestamp

__all__ = ["NO_AUDIT", "BASE_FIELDS", "Client", "IAuditLog", "NoAudit", "event_line"]

#: The fields of every line, in this order; an event's own fields come after them.
BASE_FIELDS = ("time", "event", "account", "address", "port", "session")

#: An account name tried at login is recorded up to this many characters.
MAX_NAME_LENGTH = 128


@frozen
class Client:
    """Whom an event is about: the account (or the name tried), the client's address and
    port, and the SFTP session's number as the status page shows it (None outside one)."""

    account: str | None = None
    address: str | None = None
    port: int | None = None
    session: int | None = None


class IAuditLog(Interface):
    """Where audit events go."""

    def record(event: str, client: Client, **fields: Any) -> None:
        """Append one event with its own ``fields`` (JSON values). Never raises and never
        waits on anything but the local write: an event that cannot be written is counted
        and the failure reported in the node log."""


@implementer(IAuditLog)
class NoAudit:
    """The audit log of a node that keeps none: records nothing."""

    def record(self, event: str, client: Client, **fields: Any) -> None:
        """Drop the event."""


#: The one audit log that records nothing (it holds no state).
NO_AUDIT = NoAudit()


def event_line(when: float, event: str, client: Client, fields: dict[str, Any]) -> str:
    """One event as its JSON line (ending in a newline)."""
    clash = set(BASE_FIELDS) & fields.keys()
    if clash:
        raise ValueError(f"event fields may not be named {', '.join(sorted(clash))}")
    account = client.account
    if account is not None and len(account) > MAX_NAME_LENGTH:
        account = account[:MAX_NAME_LENGTH] + "…"
    record = {
        "time": utc_timestamp(when),
        "event": event,
        "account": account,
        "address": client.address,
        "port": client.port,
        "session": client.session,
        **fields,
    }
    return _printable(json.dumps(record, ensure_ascii=False)) + "\n"


def _printable(line: str) -> str:
    """``line`` with every character that is not printable (line and paragraph separators,
    bidirectional overrides, lone surrogates…) as a JSON escape: a name cannot break a line
    in two for a line-based reader, nor disguise itself in a terminal. JSON escapes ASCII
    controls itself, and such characters can only stand inside strings, so the line stays
    the same JSON."""
    if line.isprintable():
        return line
    return "".join(c if c.isprintable() else _escape(ord(c)) for c in line)


def _escape(code: int) -> str:
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
