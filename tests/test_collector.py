"""A node sets Python's garbage collector for a long-running server."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from gateway.collector import THRESHOLDS, tune_collector


@pytest.fixture
def restored() -> Iterator[None]:
    """The test process's thresholds, put back afterwards."""
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_young_collections_are_rare_and_older_ones_rarer(restored: None) -> None:
    """After tuning, a young collection waits for many times Python's 700 allocations and
    each older generation for more runs of the younger than Python's 10."""
    tune_collector()
    young, middle, old = gc.get_threshold()
    assert (young, middle, old) == THRESHOLDS
    assert young >= 10 * 700 and middle > 10 and old > 10
    assert gc.isenabled()
