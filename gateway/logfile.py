"""Where a node's log goes, and the filter that keeps secrets out of it.

Code never logs a secret on purpose. As a second line of defence every event is
formatted and scrubbed before it is written: capability strings, NURL swissnums
and any secret value registered with :meth:`Scrubber.add` become ``[redacted]``.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import IO, Any, cast

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    eventAsText,
    globalLogBeginner,
)
from twisted.python.logfile import LogFile
from zope.interface import implementer

_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}

# Capability strings (gateway/objects/caps.py: "GG:<kind>:...", base64url overlays of file
# bytes included), NURL swissnums.
_PATTERNS = (
    re.compile(r"\bGG:[A-Z-]+:[A-Za-z0-9:_-]{8,}"),
    re.compile(r"(pb://[^@/\s]+@[^/\s]+/)[^#\s]+"),
)

#: Texts up to this long are kept with their scrubbed form (a status page renders the same
#: file names every second)...
KEEP_LENGTH = 512
#: ...this many of them at most (then they are dropped, all at once).
KEEP_TEXTS = 8192


class Scrubber:
    """Removes secrets from log text and from what the web pages show; the scrubbed form of
    a short text is kept until a secret is added (:data:`KEEP_LENGTH`, :data:`KEEP_TEXTS`)."""

    def __init__(self) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._kept: dict[str, str] = {}

    def add(self, secret: str | bytes) -> None:
        """Never let this value reach a log."""
        text = secret.decode("ascii", "replace") if isinstance(secret, bytes) else secret
        if len(text) >= 6:
            # New objects, not changes: a scrub running meanwhile (in a thread that logs)
            # keeps its own, and what it keeps goes to the dict no longer asked.
            self._secrets = self._secrets | {text}
            self._kept = {}

    def scrub(self, text: str) -> str:
        """Return ``text`` with every known secret and secret-shaped string redacted."""
        kept = self._kept
        found = kept.get(text)
        if found is not None:
            return found
        scrubbed = text
        for secret in self._secrets:
            if secret in scrubbed:
                scrubbed = scrubbed.replace(secret, "[redacted]")
        scrubbed = _PATTERNS[0].sub("[redacted-cap]", scrubbed)
        scrubbed = _PATTERNS[1].sub(r"\1[redacted]", scrubbed)
        if len(text) <= KEEP_LENGTH:
            if len(kept) >= KEEP_TEXTS:
                kept.clear()
            kept[text] = scrubbed
        return scrubbed


def _formatter(scrubber: Scrubber) -> Any:
    def format_event(event: dict[str, Any]) -> str | None:
        text = eventAsText(event, includeSystem=True, formatTime=utc_timestamp)
        return scrubber.scrub(text) + "\n"

    return format_event


def utc_timestamp(when: float) -> str:
    """``when`` (POSIX seconds) in ISO 8601 UTC to the millisecond: ``2025-01-31T12:00:00.123Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when % 1 * 1000):03d}Z"


@implementer(ILogObserver)
class ScrubbingFileObserver:
    """Writes scrubbed text events to one stream."""

    def __init__(self, stream: IO[str] | LogFile, scrubber: Scrubber):
        self._observer = FileLogObserver(cast(IO[Any], stream), _formatter(scrubber))

    def __call__(self, event: dict[str, Any]) -> None:
        """Write one event."""
        self._observer(event)


def start_logging(
    log_file: Path,
    level: str,
    scrubber: Scrubber,
    also_stderr: bool = False,
    max_size: int = 0,
    keep: int = 0,
) -> LogFile:
    """Send every twisted.logger event at ``level`` or above to ``log_file`` (and stderr).

    The file (mode 0600) is rotated once it reaches ``max_size`` bytes (0: never, for
    logrotate's ``copytruncate``): ``node.log.1`` is the newest of at most ``keep``
    rotated files (Twisted's :class:`~twisted.python.logfile.LogFile`). Each event is one
    unbuffered write, so a crash loses none that was logged.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    stream = LogFile(
        log_file.name,
        str(log_file.parent),
        rotateLength=max_size,
        defaultMode=0o600,
        maxRotatedFiles=keep or None,
    )
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[level])
    observers: list[ILogObserver] = [
        FilteringLogObserver(ScrubbingFileObserver(stream, scrubber), [predicate])
    ]
    if also_stderr:
        observers.append(
            FilteringLogObserver(ScrubbingFileObserver(sys.stderr, scrubber), [predicate])
        )
    globalLogBeginner.beginLoggingTo(observers, redirectStandardIO=False)
    return stream
