"""What a status page shows, declared once, and its rendering as HTML.

A page is a list of :class:`Section`: a table of rows (a list in the page's
JSON) or a table of fields (one object in it), each cell formatted by one of a
few named formats. The server renders the sections here, so a page reads
well with scripts off; the page's inline script (:mod:`gateway.web.script`)
renders the same declaration from the JSON twin every second, with the same
formats, so the live page looks the same as the served one.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import Any

from attrs import frozen

Row = dict[str, Any]

WIDE = " class='wide'"


@frozen
class Column:
    """One cell of a row (or one field): its title, its key in the JSON, its format."""

    title: str
    key: str
    format: str = "text"


@frozen
class Section:
    """A titled table: rows from a list at ``path``, or fields of the object at ``path``."""

    id: str
    title: str
    path: str
    columns: tuple[Column, ...]
    rows: bool = True
    empty: str = "None."

    def to_json(self) -> dict[str, Any]:
        """The declaration as the inline script reads it."""
        return {
            "id": self.id,
            "path": self.path,
            "rows": self.rows,
            "empty": self.empty,
            "columns": [{"title": c.title, "key": c.key, "format": c.format} for c in self.columns],
        }


def human_bytes(count: float) -> str:
    """1536 → '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def human_seconds(seconds: float) -> str:
    """65 → '1 min 5 s'."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole // 60 % 60} min"
    return f"{whole // 86400} d {whole // 3600 % 24} h"


def utc_time(when: float) -> str:
    """A UNIX time as 'YYYY-MM-DD HH:MM:SSZ'."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(when)) + "Z"


def _progress(row: Row) -> str:
    fraction = row.get("fraction")
    done = human_bytes(row.get("done") or 0)
    if fraction is None:
        return f"<progress></progress> {done}"
    total = human_bytes(row.get("total") or 0)
    permille = int(fraction * 1000)
    return (
        f"<progress max='1000' value='{permille}'></progress> "
        f"{permille / 10:.1f}% ({done} of {total})"
    )


Formatter = Callable[[Any, Row, float], str]

#: Each format's rendering, as text already escaped for HTML. Keep in step with script.py.
FORMATS: dict[str, Formatter] = {
    "text": lambda v, row, now: html.escape(str(v)),
    "count": lambda v, row, now: f"{int(v):,}",
    "bytes": lambda v, row, now: human_bytes(v),
    "rate": lambda v, row, now: human_bytes(v) + "/s",
    "seconds": lambda v, row, now: human_seconds(v),
    "ms": lambda v, row, now: f"{v * 1000:.1f} ms",
    "time": lambda v, row, now: utc_time(v),
    "ago": lambda v, row, now: human_seconds(now - v) + " ago",
    "bool": lambda v, row, now: "yes" if v else "no",
    "state": lambda v, row, now: (
        f"<span class='s-{html.escape(str(v))}'>{html.escape(str(v))}</span>"
    ),
    "progress": lambda v, row, now: _progress(row),
}


def cell(column: Column, row: Row, now: float) -> str:
    """One formatted cell ('–' for a missing value)."""
    value = row.get(column.key)
    if value is None and column.format != "progress":
        return "–"
    return FORMATS[column.format](value, row, now)


def lookup(data: Any, path: str) -> Any:
    """The value at a dotted path ('grid.servers') in the page's JSON, or None."""
    for key in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def render_table(section: Section, data: dict[str, Any]) -> str:
    """The inner HTML of a section's table."""
    now = float(data.get("now") or 0.0)
    value = lookup(data, section.path)
    if not section.rows:
        fields = value if isinstance(value, dict) else {}
        return (
            "<tbody>"
            + "".join(
                f"<tr><th>{html.escape(c.title)}</th>"
                f"<td class='c-{c.key}'>{cell(c, fields, now)}</td></tr>"
                for c in section.columns
            )
            + "</tbody>"
        )
    head = "".join(f"<th>{html.escape(c.title)}</th>" for c in section.columns)
    rows = value if isinstance(value, list) else []
    if not rows:
        body = f"<tr><td colspan='{len(section.columns)}'>{html.escape(section.empty)}</td></tr>"
    else:
        body = "".join(
            "<tr>"
            + "".join(f"<td class='c-{c.key}'>{cell(c, row, now)}</td>" for c in section.columns)
            + "</tr>"
            for row in rows
        )
    return f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody>"


def render_section(section: Section, data: dict[str, Any]) -> str:
    """A whole section: heading and table."""
    return (
        f"<section id='{section.id}'{WIDE if section.rows else ''}>"
        f"<h2>{html.escape(section.title)}</h2>"
        f"<table>{render_table(section, data)}</table></section>"
    )
