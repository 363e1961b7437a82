"""Which changed ranges of an extent become its patches (see
:mod:`gateway.objects.chunk_update`): the changed ranges inside it, those closer than
PATCH_GAP joined, while its patches, old and new, number at most MAX_PATCHES and hold at
most 1/PATCHED_SHARE of it; otherwise it is stored again whole."""

from __future__ import annotations

from gateway.objects.byte_ranges import Ranges
from gateway.objects.caps import LiteralCap
from gateway.objects.chunk_format import MAX_PATCHES, LeafEntry, Patch, PatchedExtent

PATCH_GAP = 4096
"""Changed ranges of one extent closer than this are one patch (the bytes between, read)."""

PATCHED_SHARE = 4
"""An extent is stored again whole once its patches would hold more than 1/4 of it."""


def plan_patches(
    changed: Ranges, offset: int, length: int, old: LeafEntry
) -> tuple[Ranges, tuple[tuple[int, Patch], ...]] | None:
    """The ranges to store as patches of ``old`` (changed ranges inside it, those closer
    than PATCH_GAP joined) and the patches of ``old`` they leave visible, or None when
    it must be stored again whole."""
    if isinstance(old, LiteralCap) or old.size != length:
        return None
    ranges: Ranges = []
    for a, b in changed:
        a, b = max(a, offset), min(b, offset + length)
        if a >= b:
            continue
        if ranges and a - ranges[-1][1] < PATCH_GAP:
            ranges[-1] = (ranges[-1][0], max(b, ranges[-1][1]))
        else:
            ranges.append((a, b))
    visible = _visible(old, ranges, offset) if isinstance(old, PatchedExtent) else ()
    kept, patched = len(visible), sum(patch.size for _, patch in visible)
    new_bytes = sum(b - a for a, b in ranges)
    if not ranges or kept + len(ranges) > MAX_PATCHES:
        return None
    if patched + new_bytes > length // PATCHED_SHARE:
        return None
    return ranges, visible


def _visible(old: PatchedExtent, ranges: Ranges, offset: int) -> tuple[tuple[int, Patch], ...]:
    """The patches of ``old`` that the new ones (``ranges``, of the file) leave visible: one
    that a new patch covers whole shows nowhere, and goes (a page rewritten again and again
    keeps one patch, never the extent stored again whole for it)."""
    return tuple(
        (at, patch)
        for at, patch in old.patches
        if not any(a <= offset + at and offset + at + patch.size <= b for a, b in ranges)
    )
