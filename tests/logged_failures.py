"""A log observer that keeps the failures (tracebacks, errors, criticals) logged meanwhile."""

from __future__ import annotations

from typing import Any

from attrs import define, field
from twisted.logger import ILogObserver, LogLevel
from zope.interface import implementer


@implementer(ILogObserver)
@define(eq=False)
class LoggedFailures:
    """Keeps every event that carries a failure or is logged at error or critical level (the
    fuzz harnesses' "no traceback in the log")."""

    events: list[dict[str, Any]] = field(factory=list)

    def __call__(self, event: dict[str, Any]) -> None:
        """Keep the event if it is a failure."""
        level = event.get("log_level")
        if "log_failure" in event or level in (LogLevel.error, LogLevel.critical):
            self.events.append(event)
