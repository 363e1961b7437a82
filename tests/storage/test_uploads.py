"""The range bookkeeping of uploads in progress, checked against a set of offsets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from storage.interfaces import ByteRange
from storage.uploads import RangeSet

ranges = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 20)), max_size=15)


def offsets(rs: tuple[ByteRange, ...] | list[ByteRange]) -> set[int]:
    """Every offset covered by some ranges."""
    return {i for r in rs for i in range(r.begin, r.end)}


@given(
    added=ranges, query=st.tuples(st.integers(0, 80), st.integers(0, 30)), size=st.integers(0, 90)
)
def test_range_set_matches_offsets(
    added: list[tuple[int, int]], query: tuple[int, int], size: int
) -> None:
    """add, overlapping, missing and total agree with a plain set of offsets."""
    model: set[int] = set()
    rs = RangeSet()
    for begin, length in added:
        rs.add(begin, begin + length)
        model |= set(range(begin, begin + length))
    assert rs.total() == len(model)
    begin, end = query[0], query[0] + query[1]
    found = rs.overlapping(begin, end)
    assert offsets(found) == model & set(range(begin, end))
    missing = rs.missing(size)
    assert offsets(missing) == set(range(size)) - model
    # Results are sorted, disjoint and non-empty ranges.
    for result in (found, list(missing)):
        assert all(r.begin < r.end for r in result)
        assert all(a.end <= b.begin for a, b in zip(result, result[1:], strict=False))
