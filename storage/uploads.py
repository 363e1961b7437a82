"""Bookkeeping for immutable uploads in progress: which bytes have arrived, under which secret.

The bytes themselves live in the backend's incoming area; this module only
remembers, in memory, what each incomplete upload has received. (The incoming
area is emptied when a node starts, so nothing here needs to outlive a process.)
"""

from __future__ import annotations

import bisect

from attrs import define, field

from storage.interfaces import ByteRange


@define
class RangeSet:
    """A set of byte offsets kept as sorted, disjoint, non-adjacent half-open ranges."""

    _starts: list[int] = field(factory=list)
    _ends: list[int] = field(factory=list)

    def add(self, begin: int, end: int) -> None:
        """Include ``[begin, end)``."""
        if begin >= end:
            return
        # Ranges that overlap or touch [begin, end) are merged with it.
        first = bisect.bisect_left(self._ends, begin)
        last = bisect.bisect_right(self._starts, end)
        if first < last:
            begin = min(begin, self._starts[first])
            end = max(end, self._ends[last - 1])
        self._starts[first:last] = [begin]
        self._ends[first:last] = [end]

    def overlapping(self, begin: int, end: int) -> list[ByteRange]:
        """The parts of ``[begin, end)`` that are in the set."""
        if begin >= end:
            return []
        first = bisect.bisect_right(self._ends, begin)
        result = []
        for start, stop in zip(self._starts[first:], self._ends[first:], strict=True):
            if start >= end:
                break
            result.append(ByteRange(max(start, begin), min(stop, end)))
        return result

    def missing(self, size: int) -> tuple[ByteRange, ...]:
        """The parts of ``[0, size)`` not in the set."""
        result = []
        position = 0
        for start, stop in zip(self._starts, self._ends, strict=True):
            if start > position:
                result.append(ByteRange(position, min(start, size)))
            position = max(position, stop)
            if position >= size:
                break
        if position < size:
            result.append(ByteRange(position, size))
        return tuple(r for r in result if r.begin < r.end)

    def total(self) -> int:
        """How many offsets are in the set."""
        return sum(stop - start for start, stop in zip(self._starts, self._ends, strict=True))


@define(eq=False)
class IncompleteUpload:
    """One immutable share being uploaded: its size, secrets and what has arrived."""

    size: int
    upload_secret: bytes
    renew_secret: bytes
    cancel_secret: bytes
    last_activity: float
    received: RangeSet = field(factory=RangeSet)
    completing: bool = False
    """Every byte arrived; the backend is making the share durable."""

    def outstanding(self) -> int:
        """Bytes promised to this upload and not yet written."""
        return self.size - self.received.total()

    def is_complete(self) -> bool:
        """Whether every byte has been written."""
        return self.received.total() == self.size
