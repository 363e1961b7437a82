"""Hypothesis fuzzing of the storage HTTP server, bounded for CI (the long run is
``misc/fuzz_storage.py``).

Each target of :mod:`tests.storage.http_fuzz_targets` generates what one client sends:
anything at all, route-like requests with protocol headers, mutated
Authorization and secrets, mutated CBOR bodies, mutated Range and
Content-Range. Every input goes to the real site of a storage node (limits,
resource tree, core, disk store) while another session is open, and must get
4xx answers or service, never a raise, a logged failure, a 5xx, a change to
the stored files while refused, a connection or timer left behind, or the
other session unserved.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.storage.http_fuzz import SiteUnderTest, check_input, site_under_test
from tests.storage.http_fuzz_targets import BYTE_TARGETS, TARGETS

_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=False,
)


@pytest.fixture(scope="module")
def site() -> Iterator[SiteUnderTest]:
    """One storage site for the module: state carries over from input to input."""
    with site_under_test() as s:
        yield s


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_target(site: SiteUnderTest, target: str) -> None:
    """Every generated input of the target is refused or served, and nothing breaks."""

    @_SETTINGS
    @given(data=TARGETS[target](), pieces=st.sampled_from([1, 1, 2, 7]))
    def run(data: bytes, pieces: int) -> None:
        check_input(site, data, pieces)

    run()


@pytest.mark.parametrize("target", sorted(BYTE_TARGETS))
def test_byte_target_seeds_are_served(target: str) -> None:
    """Every seed of the long run's byte-level targets is a request a fresh server serves, so
    the fuzzer starts from inside the protocol rather than at its door."""
    byte_target = BYTE_TARGETS[target]
    for seed in byte_target.seeds:
        with site_under_test() as site:
            codes = [r.code for r in check_input(site, byte_target.wrap(seed))]
        assert codes and all(code < 300 for code in codes), (seed, codes)
