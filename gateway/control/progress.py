"""A one-line progress bar for long transfers and deep checks, drawn only on a terminal."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO

WIDTH = 30
"""Characters of the bar itself."""

REDRAW_INTERVAL = 0.1
"""Least seconds between two redraws."""


def human_size(count: float) -> str:
    """``1.5 MiB``-style sizes."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


class ProgressBar:
    """Bytes (or objects) done of a total, with a rate, redrawn in place on ``stream``.

    Does nothing unless ``enabled`` (the caller passes whether the stream is a terminal).
    """

    def __init__(
        self,
        stream: IO[str],
        enabled: bool,
        unit: str = "bytes",
        clock: Callable[[], float] = time.monotonic,
    ):
        self._stream = stream
        self._enabled = enabled
        self._unit = unit
        self._clock = clock
        self._started = clock()
        self._drawn_at = 0.0
        self._shown = False
        self.total: int | None = None
        self.done = 0

    def update(self, done: int, total: int | None = None) -> None:
        """Record progress; redraw at most every :data:`REDRAW_INTERVAL` seconds."""
        self.done = done
        if total is not None:
            self.total = total
        now = self._clock()
        if self._enabled and now - self._drawn_at >= REDRAW_INTERVAL:
            self._drawn_at = now
            self._draw(now)

    def advance(self, count: int) -> None:
        """Add ``count`` to what is done."""
        self.update(self.done + count)

    def _amount(self, value: float) -> str:
        return human_size(value) if self._unit == "bytes" else f"{value:.0f}"

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-6)
        rate = self.done / elapsed
        if self.total:
            fraction = min(1.0, self.done / self.total)
            filled = int(fraction * WIDTH)
            bar = "#" * filled + "-" * (WIDTH - filled)
            head = f"[{bar}] {fraction * 100:5.1f}% {self._amount(self.done)}"
            head += f" of {self._amount(self.total)}"
        else:
            head = self._amount(self.done)
        speed = f"{human_size(rate)}/s" if self._unit == "bytes" else f"{rate:.1f} {self._unit}/s"
        self._stream.write(f"\r{head}  {speed}\x1b[K")
        self._stream.flush()
        self._shown = True

    def finish(self) -> None:
        """Draw the final state and end the line (only if anything was drawn)."""
        if self._enabled and self._shown:
            self._draw(self._clock())
            self._stream.write("\n")
            self._stream.flush()
