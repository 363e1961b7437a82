"""Fixtures of the durability tests (real storage node and gateway processes)."""

from tests.durability.cluster import make_grid  # noqa: F401
