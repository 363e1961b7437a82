"""Sparse contents: the byte ranges a client changed, over the version of the file in the grid.

A file opened for writing without TRUNC is never copied. Its
:class:`~gateway.fs.localfile.LocalFile` keeps a *base* (the grid version it
was opened on), the :class:`Ranges` written since, and a *limit*: the base's
bytes show below it only (a truncation lowers it; growing the file again reads
zeros there, as it does on a POSIX filesystem). A byte of the contents is

- the staged file's, where a written range covers it;
- else the base's, below the limit;
- else zero.

:func:`merged_read` reads them that way, and :func:`changed_ranges` names the
ranges an upload must store (everything else is the base's, at the same
offset), so a change costs what changed.
"""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Iterable, Iterator

from attrs import field, frozen

from gateway.objects.caps import OVERLAID_PREFIX, ImmutableCap

#: ``read(offset, length)`` of some bytes (the base in the grid, or a staged file).
Reader = Callable[[int, int], Awaitable[bytes]]


@frozen
class Base:
    """The version of a file in the grid that a local file's changes lie over."""

    cap: str = field(repr=False)  # a read capability: a secret
    size: int
    parsed: ImmutableCap | None = field(default=None, eq=False, repr=False)
    """The cap, when this process made it or found it in a directory entry (not parsed
    again: an overlay is up to 32 KiB)."""

    @property
    def overlaid(self) -> bool:
        """Whether the version carries recent changes in its cap (gateway.objects.overlay),
        which the file's next upload after CLOSE stores in its tree."""
        return self.cap.startswith(OVERLAID_PREFIX)


class Ranges:
    """A set of byte offsets, kept as sorted, disjoint, non-adjacent ``[start, end)`` ranges."""

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges:
            self.add(start, end)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self._starts, self._ends, strict=True))

    def __len__(self) -> int:
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ranges) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"Ranges({list(self)!r})"

    def copy(self) -> Ranges:
        """An independent copy."""
        copy = Ranges()
        copy._starts = list(self._starts)
        copy._ends = list(self._ends)
        return copy

    @property
    def covered(self) -> int:
        """How many bytes the ranges hold."""
        return sum(self._ends) - sum(self._starts)

    def within(self, start: int, end: int) -> bool:
        """Whether every offset of ``[start, end)`` is in the set."""
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def covered_in(self, start: int, end: int) -> int:
        """How many offsets of ``[start, end)`` are in the set."""
        i = bisect.bisect_right(self._ends, start)
        total = 0
        while i < len(self._starts) and self._starts[i] < end:
            total += min(end, self._ends[i]) - max(start, self._starts[i])
            i += 1
        return total

    def add(self, start: int, end: int) -> int:
        """Add ``[start, end)``; how many of its bytes were not covered before."""
        if end <= start:
            return 0
        # Every range that touches [start, end) (overlapping or adjacent) merges with it.
        first = bisect.bisect_left(self._ends, start)
        last = bisect.bisect_right(self._starts, end)
        overlapped = 0
        for i in range(first, last):
            overlapped += min(end, self._ends[i]) - max(start, self._starts[i])
        if first < last:
            new_start = min(start, self._starts[first])
            new_end = max(end, self._ends[last - 1])
        else:
            new_start, new_end = start, end
        self._starts[first:last] = [new_start]
        self._ends[first:last] = [new_end]
        return (end - start) - max(0, overlapped)

    def cut(self, size: int) -> int:
        """Drop every offset at or past ``size``; how many bytes were dropped."""
        index = bisect.bisect_left(self._ends, size + 1)
        dropped = 0
        if index < len(self._starts) and self._starts[index] < size:
            dropped += self._ends[index] - size
            self._ends[index] = size
            index += 1
        for i in range(index, len(self._starts)):
            dropped += self._ends[i] - self._starts[i]
        del self._starts[index:]
        del self._ends[index:]
        return dropped

    def pieces(self, offset: int, end: int) -> Iterator[tuple[int, int, bool]]:
        """``[offset, end)`` cut where the ranges begin and end: ``(start, stop, covered)``."""
        at = offset
        i = bisect.bisect_right(self._ends, offset)
        while at < end:
            if i < len(self._starts) and self._starts[i] <= at:
                stop = min(end, self._ends[i])
                yield at, stop, True
                i += 1
            else:
                stop = min(end, self._starts[i]) if i < len(self._starts) else end
                yield at, stop, False
            at = stop


def holes(held: Ranges, start: int, size: int) -> list[tuple[int, int]]:
    """The pieces of ``[start, size)`` outside ``held``."""
    return [(a, b) for a, b, covered in held.pieces(start, size) if not covered]


def changed_ranges(changed: Ranges, limit: int, size: int) -> list[tuple[int, int]]:
    """Where contents of ``size`` bytes may differ from their base: the written ranges, and
    everything from the limit (the base's bytes end there) to the end."""
    result = Ranges(changed)
    if limit < size:
        result.add(limit, size)
    result.cut(size)
    return list(result)


async def merged_read(
    offset: int,
    length: int,
    *,
    size: int,
    changed: Ranges,
    staged: Callable[[int, int], bytes],
    base: Reader | None,
    limit: int,
) -> bytes:
    """Up to ``length`` bytes at ``offset`` of contents made as the module docstring says."""
    end = min(size, offset + length)
    if offset >= end:
        return b""
    if base is None or limit <= 0:
        return _exact(staged(offset, end - offset), end - offset)
    parts: list[bytes] = []
    for start, stop, covered in changed.pieces(offset, end):
        if covered:
            parts.append(_exact(staged(start, stop - start), stop - start))
            continue
        from_base = max(start, min(stop, limit))  # base bytes in [start, from_base)
        if from_base > start:
            parts.append(await _read_exactly(base, start, from_base - start))
        if stop > from_base:
            parts.append(bytes(stop - from_base))
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _exact(data: bytes, length: int) -> bytes:
    """``data`` padded with zeros to ``length`` (a staged file's hole at its end)."""
    return data if len(data) >= length else data + bytes(length - len(data))


async def _read_exactly(read: Reader, offset: int, length: int) -> bytes:
    """``length`` bytes from ``read``, which may return fewer per call; zeros past its end."""
    first = await read(offset, length)
    if len(first) >= length or not first:
        return _exact(first, length)
    pieces = [first]
    got = len(first)
    while got < length:
        more = await read(offset + got, length - got)
        if not more:
            break
        pieces.append(more)
        got += len(more)
    return _exact(b"".join(pieces), length)
