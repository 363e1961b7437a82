"""Byte ranges of a file, as sorted lists of ``[start, end)`` pairs (what a chunk tree
update stores again, and what it knows to be zeros)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

Ranges = list[tuple[int, int]]
"""Sorted, disjoint ``[start, end)`` pairs."""


def normalize(ranges: Sequence[tuple[int, int]], size: int) -> Ranges:
    """Sorted, merged ``[start, end)`` ranges clipped to ``[0, size)``, empty ones dropped."""
    out: Ranges = []
    for a, b in sorted((max(0, a), min(size, b)) for a, b in ranges):
        if a >= b:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def overlap(ranges: Ranges, start: int, end: int) -> int:
    """Bytes of ``[start, end)`` inside ``ranges`` (normalized)."""
    total = 0
    for a, b in ranges[max(0, bisect.bisect_right(ranges, (start, start)) - 1) :]:
        if a >= end:
            break
        total += max(0, min(b, end) - max(a, start))
    return total
