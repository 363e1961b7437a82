"""Recent small changes to a chunk tree, carried in the file's cap (its *overlay*).

An fsync of a 4 KiB write to a large file stored the tree's nodes on the
change's path (tens of KiB: a node of height 1 keeps its leaves inline) and then
published the directory naming the new root: two rounds of encoding, hashing and
writing, for 4 KiB. The directory is published by every fsync anyway, so the
change can travel in it: the new version is the base's tree with the changed
bytes laid over it, named by a ``ChunkedCap`` whose :attr:`overlay` holds
them (``GG:PTREE:…``, :mod:`gateway.objects.capfields`). Such an fsync stores
no object: its only write to the grid is the directory's test-and-set, which is
as atomic as it was.

The overlay is small by rule (:data:`OVERLAY_BYTES`, :data:`OVERLAY_RANGES`): an
update whose changes would not fit, that changes the size or that writes zeros
stores a new tree as before, with the overlay's ranges among its changes
(:func:`folded`), so the next version's overlay starts empty. Only an update a
client waits for (an fsync) takes an overlay; a background upload (after CLOSE)
folds it, so a file at rest names its tree alone.

Readers lay the overlay over the tree's bytes (:class:`OverlaidReader`). It holds
no object of its own: check, verify, repair and lease renewal see the tree, which
is the whole of what the grid keeps; the overlay is in the directory, encrypted
and signed with it.
"""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Sequence

from zope.interface import implementer

from gateway.objects.byte_ranges import Ranges, normalize
from gateway.objects.capfields import Overlay
from gateway.objects.caps import ChunkedCap
from gateway.objects.interfaces import IFileReader

OVERLAY_BYTES = 32 * 1024
"""The most changed bytes an update keeps in an overlay (past them, it stores a tree)."""

OVERLAY_RANGES = 16
"""The most ranges an update keeps in an overlay."""


def ranges_of(overlay: Overlay) -> Ranges:
    """The ``[start, end)`` ranges an overlay covers."""
    return [(offset, offset + len(data)) for offset, data in overlay]


async def laid_over(
    base: ChunkedCap,
    size: int,
    changed: Sequence[tuple[int, int]],
    zeros: Sequence[tuple[int, int]],
    read: Callable[[int, int], Awaitable[bytes]],
) -> ChunkedCap | None:
    """The new version as ``base``'s tree with an overlay: the base's overlay with every
    changed byte (``read`` gives the new version's) laid over it; or None when it does
    not fit: a new size, ranges of zeros, or more than the overlay's limits."""
    if size != base.size or zeros or base.part is not None:
        return None
    changed = normalize(changed, size)
    ranges = normalize([*ranges_of(base.overlay), *changed], size)
    if len(ranges) > OVERLAY_RANGES or sum(b - a for a, b in ranges) > OVERLAY_BYTES:
        return None
    # Every byte of a range is the old overlay's or a changed one (ranges join only where
    # they touch): the old overlay's bytes are kept, only the changed ones read.
    pieces = [*base.overlay]
    for a, b in changed:
        data = await read(a, b - a)
        if len(data) != b - a:
            raise ValueError("the new version is shorter than its size")
        pieces.append((a, data))
    overlay = [(a, bytearray(b - a)) for a, b in ranges]
    starts = [a for a, _ in ranges]
    for at, data in pieces:  # the old overlay first, the changes over it
        start, buffer = overlay[bisect.bisect_right(starts, at) - 1]
        buffer[at - start : at - start + len(data)] = data
    return ChunkedCap(base.node, size, overlay=tuple((a, bytes(b)) for a, b in overlay))


def folded(
    base: ChunkedCap, changed: Sequence[tuple[int, int]]
) -> tuple[ChunkedCap, list[tuple[int, int]]]:
    """The tree an update stores over and its changes: the overlay's ranges among them
    (the new version's bytes there are the overlay's, not the tree's)."""
    return base.tree, normalize([*ranges_of(base.overlay), *changed], 1 << 63)


@implementer(IFileReader)
class OverlaidReader:
    """Reads of a tree with its overlay laid over."""

    def __init__(self, tree: IFileReader, overlay: Overlay):
        self.tree = tree
        self.overlay = overlay
        self.size: int = tree.size

    async def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset``: the overlay's where it has them, the tree's
        elsewhere (a range the overlay covers reads nothing from the grid: a fold of the
        overlay into the tree reads its ranges so)."""
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        out = bytearray()
        at = offset
        for start, patch in self.overlay:
            stop = start + len(patch)
            if stop <= at:
                continue
            if start >= end:
                break
            if start > at:
                out += await self._tree(at, start)
                at = start
            take = min(stop, end)
            out += patch[at - start : take - start]
            at = take
        if at < end:
            out += await self._tree(at, end)
        return bytes(out)

    async def _tree(self, start: int, end: int) -> bytes:
        pieces = bytearray()
        while start + len(pieces) < end:  # (a tree's read may stop at an extent's end)
            piece = await self.tree.read(start + len(pieces), end - start - len(pieces))
            if not piece:
                raise ValueError("the tree is shorter than its size")
            pieces += piece
        return bytes(pieces)
