"""Measurements the status page shows: transfer progress, check results and recent errors.

Everything here is a small, clock-driven value object or bounded list that
the parts of a node update as they work and the web frontend reads:

- :class:`Progress`: bytes done of a transfer, with a rate over the last few
  seconds and an ETA;
- :class:`CheckHistory`: the outcome of recent checks, verifies and repairs
  (any part that runs them keeps one as its ``check_history`` attribute);
- :class:`RecentErrors`: a twisted.logger observer keeping the last warnings
  and errors as scrubbed, human-readable lines;
- :class:`LatencyHistogram`: durations by operation, collected as a Prometheus
  histogram.

Nothing here holds a capability or key: callers record labels and counts only,
and error texts pass through the log :class:`~gateway.logfile.Scrubber`.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from attrs import define, field, frozen
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import INF, floatToGoString
from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver, LogLevel, formatEvent
from zope.interface import implementer

from gateway.logfile import Scrubber

#: Seconds of history the transfer rate is computed over.
RATE_WINDOW = 5.0


@define(eq=False)
class Progress:
    """How far one transfer is: bytes done of ``total`` (None when unknown), rate, ETA."""

    clock: IReactorTime = field(repr=False)
    total: int | None = None
    done: int = 0
    started: float = field(init=False)
    _samples: deque[tuple[float, int]] = field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.started = float(self.clock.seconds())
        self._samples = deque([(self.started, 0)])

    def advance(self, count: int) -> None:
        """``count`` more bytes are done."""
        self.set(self.done + count)

    def set(self, done: int) -> None:
        """``done`` bytes are done now."""
        self.done = done
        now = float(self.clock.seconds())
        if now - self._samples[-1][0] >= 0.25:
            self._samples.append((now, done))
            while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW:
                self._samples.popleft()

    def restart(self) -> None:
        """Count again from zero (the transfer started over)."""
        self.done = 0
        self._samples = deque([(float(self.clock.seconds()), 0)])

    def rate(self) -> float:
        """Bytes per second over the last few seconds."""
        now = float(self.clock.seconds())
        then, done_then = self._samples[0]
        if now - then < 0.05:
            return 0.0
        return max(0.0, (self.done - done_then) / (now - then))

    def eta(self) -> float | None:
        """Seconds left at the current rate (None when unknown)."""
        rate = self.rate()
        if self.total is None or rate <= 0:
            return None
        return max(0.0, (self.total - self.done) / rate)

    def fraction(self) -> float | None:
        """Share done, 0 to 1 (None when the total is unknown)."""
        if self.total is None:
            return None
        if self.total <= 0:
            return 1.0
        return min(1.0, self.done / self.total)

    def to_json(self) -> dict[str, Any]:
        """The figures the Transfers page shows."""
        return {
            "done": self.done,
            "total": self.total,
            "fraction": self.fraction(),
            "rate": round(self.rate(), 1),
            "eta": self.eta(),
            "started": self.started,
            "elapsed": round(float(self.clock.seconds()) - self.started, 3),
        }


@frozen
class CheckRecord:
    """One check, verify or repair: what was looked at (a label, never a cap) and the outcome."""

    when: float
    kind: str
    target: str
    healthy: bool
    summary: str


@define(eq=False)
class CheckHistory:
    """The last ``keep`` check/verify/repair outcomes, newest last.

    A part that runs checks keeps one as its ``check_history`` attribute and
    calls :meth:`record` after each; the Health page lists them all.
    """

    clock: IReactorTime
    keep: int = 50
    records: deque[CheckRecord] = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.records = deque(maxlen=self.keep)

    def record(self, kind: str, target: str, healthy: bool, summary: str) -> None:
        """Remember an outcome. ``target`` is a path or a storage index, never a capability."""
        self.records.append(
            CheckRecord(float(self.clock.seconds()), kind, target, healthy, summary)
        )


@frozen
class ErrorRecord:
    """One warning or error from the log, as a message for a person."""

    when: float
    level: str
    system: str
    message: str


@implementer(ILogObserver)
class RecentErrors:
    """A log observer keeping the last warnings and errors, scrubbed like the log file."""

    def __init__(self, scrubber: Scrubber, keep: int = 100, level: LogLevel = LogLevel.warn):
        self._scrubber = scrubber
        self._level = level
        self.records: deque[ErrorRecord] = deque(maxlen=keep)

    def __call__(self, event: dict[str, Any]) -> None:
        """Keep the event if it is a warning or worse."""
        level = event.get("log_level")
        if not isinstance(level, type(LogLevel.warn)) or level < self._level:
            return
        try:
            text = formatEvent(event) or ""
            failure = event.get("log_failure")
            if failure is not None:
                text = f"{text}: {failure.type.__name__}: {failure.getErrorMessage()}"
        except Exception:
            text = "(a log event that could not be formatted)"
        system = str(event.get("log_namespace") or event.get("log_system") or "")
        self.records.append(
            ErrorRecord(
                float(event.get("log_time") or 0.0),
                level.name,
                system,
                self._scrubber.scrub(text)[:2000],
            )
        )


class LatencyHistogram:
    """Durations by operation, counted in buckets, for a Prometheus histogram.

    ``prometheus_client``'s own ``Histogram`` takes a lock for each bucket and sum it
    adds to, two per request; here one thread (the reactor's) counts, so plain lists do,
    and :meth:`collect` gives what the status part's registry exports (the same
    ``_bucket``, ``_count`` and ``_sum`` samples).
    """

    def __init__(self, name: str, documentation: str, label: str, bounds: Sequence[float]):
        self.name = name
        self.documentation = documentation
        self.label = label
        self.bounds = tuple(float(b) for b in bounds)
        self._counts: dict[str, list[int]] = {}  # per bucket, the last one past every bound
        self._sums: dict[str, float] = {}

    def observe(self, value: str, seconds: float) -> None:
        """Count one duration of the operation ``value``."""
        counts = self._counts.get(value)
        if counts is None:
            counts = self._counts[value] = [0] * (len(self.bounds) + 1)
            self._sums[value] = 0.0
        counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self._sums[value] += seconds

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """The histogram, one labelled set of cumulative buckets per operation."""
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        for value in sorted(self._counts):
            total, buckets = 0, []
            for bound, counted in zip((*self.bounds, INF), self._counts[value], strict=True):
                total += counted
                buckets.append((floatToGoString(bound), total))
            family.add_metric([value], buckets, self._sums[value])
        yield family
