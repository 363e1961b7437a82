"""Which changes become patches of an extent, and when it is stored again whole: a model
of any sequence of changes, and the rules one at a time."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.objects.caps import ImmutableReadCap, LiteralCap
from gateway.objects.chunk_format import MAX_PATCHES, Patch, PatchedExtent
from gateway.objects.crypto import HASH_SIZE, KEY_SIZE
from gateway.objects.patch_plan import PATCH_GAP, PATCHED_SHARE, plan_patches
from tests.objects.chunked_support import pattern

EXTENT = 1 << 20
OFFSET = 5 * EXTENT  # where the extent starts in the file
SPACING = 60_000  # between the pages the tests patch (MAX_PATCHES of them fit in an extent)


def _extent(size: int = EXTENT) -> ImmutableReadCap:
    return ImmutableReadCap(os.urandom(KEY_SIZE), os.urandom(HASH_SIZE), 1, 1, size)


def _patched(*places: tuple[int, int]) -> PatchedExtent:
    """An extent with a literal patch of ``size`` bytes at each (offset, size)."""
    return PatchedExtent(_extent(), tuple((at, LiteralCap(bytes(size))) for at, size in places))


def test_a_change_below_max_patches_is_a_patch_of_its_own() -> None:
    """Below MAX_PATCHES a change is a patch of its own and every old patch stays."""
    old = _patched(*((i * SPACING, 4096) for i in range(MAX_PATCHES - 1)))
    change = (OFFSET + 900_000, OFFSET + 904_096)
    planned = plan_patches([change], OFFSET, EXTENT, old)
    assert planned is not None
    ranges, visible = planned
    assert ranges == [change]
    assert visible == old.patches


def test_a_patch_covered_whole_goes() -> None:
    """An old patch that a change covers whole is dropped: a page rewritten at every commit
    keeps one patch, and never reaches MAX_PATCHES."""
    old = _patched(*((i * SPACING, 4096) for i in range(MAX_PATCHES)))
    change = (OFFSET + 3 * SPACING, OFFSET + 3 * SPACING + 4096)  # the fourth patch's page again
    planned = plan_patches([change], OFFSET, EXTENT, old)
    assert planned is not None
    ranges, visible = planned
    assert ranges == [change]
    assert [at for at, _ in visible] == [i * SPACING for i in range(MAX_PATCHES) if i != 3]


def test_past_max_patches_or_a_quarter_the_extent_is_stored_again_whole() -> None:
    """More than MAX_PATCHES patches, or patches holding more than 1/PATCHED_SHARE of the
    extent, and the plan is to store it again whole (None)."""
    full = _patched(*((i * SPACING, 4096) for i in range(MAX_PATCHES)))
    assert plan_patches([(OFFSET + 1_000_000, OFFSET + 1_004_096)], OFFSET, EXTENT, full) is None
    big = _patched((0, EXTENT // PATCHED_SHARE - 4096))
    assert plan_patches([(OFFSET + 500_000, OFFSET + 504_097)], OFFSET, EXTENT, big) is None
    assert plan_patches([(OFFSET + 500_000, OFFSET + 504_096)], OFFSET, EXTENT, big) is not None


def test_changes_closer_than_the_gap_are_one_patch() -> None:
    """Changed ranges closer than PATCH_GAP are one patch (the bytes between read with it);
    a literal extent, or one whose length differs, is stored again."""
    changes = [(OFFSET + 10, OFFSET + 20), (OFFSET + 20 + PATCH_GAP - 1, OFFSET + 30 + PATCH_GAP)]
    planned = plan_patches(changes, OFFSET, EXTENT, _extent())
    assert planned is not None and planned[0] == [(OFFSET + 10, OFFSET + 30 + PATCH_GAP)]
    apart = [(OFFSET + 10, OFFSET + 20), (OFFSET + 20 + PATCH_GAP, OFFSET + 30 + PATCH_GAP)]
    planned = plan_patches(apart, OFFSET, EXTENT, _extent())
    assert planned is not None and planned[0] == apart
    assert plan_patches(changes, OFFSET, EXTENT, LiteralCap(b"x")) is None
    assert plan_patches(changes, OFFSET, EXTENT, _extent(EXTENT - 1)) is None


def _render(base: bytes, patches: tuple[tuple[int, Patch], ...]) -> bytes:
    out = bytearray(base)
    for at, patch in patches:
        assert isinstance(patch, LiteralCap)
        out[at : at + patch.size] = patch.data
    return bytes(out)


SMALL = 64 * 1024


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(st.integers(0, SMALL - 1), st.integers(1, 3000)), min_size=1, max_size=4
        ),
        min_size=1,
        max_size=30,
    )
)
def test_any_sequence_of_changes_reads_back_exact(steps: list[list[tuple[int, int]]]) -> None:
    """Any sequence of changes to one extent, each planned and laid over the last state:
    its patches never number more than MAX_PATCHES nor hold more than a quarter of it, and
    the extent with its patches reads as the model file after every change."""
    base = pattern(SMALL, 1)
    model = bytearray(base)
    entry: ImmutableReadCap | PatchedExtent = _extent(SMALL)
    for n, step in enumerate(steps):
        merged: list[tuple[int, int]] = []
        for a, b in sorted((a, min(SMALL, a + size)) for a, size in step):
            if merged and a <= merged[-1][1]:  # normalized, as the updater hands them over
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            else:
                merged.append((a, b))
        for a, b in merged:
            model[a:b] = pattern(b - a, n + 2)
        planned = plan_patches(merged, 0, SMALL, entry)
        if planned is None:
            base, entry = bytes(model), _extent(SMALL)  # stored again whole
            continue
        ranges, visible = planned
        assert all(any(a <= c and d <= b for a, b in ranges) for c, d in merged)
        new = tuple((a, LiteralCap(bytes(model[a:b]))) for a, b in ranges)
        extent = entry.extent if isinstance(entry, PatchedExtent) else entry
        entry = PatchedExtent(extent, (*visible, *new))
        assert len(entry.patches) <= MAX_PATCHES
        assert entry.patched_bytes <= SMALL // PATCHED_SHARE
        assert _render(base, entry.patches) == bytes(model)
