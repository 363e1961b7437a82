"""Shared pytest fixtures."""

from tests.nodes import reaper  # noqa: F401
