"""Shared pytest fixtures."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nodes import reaper  # noqa: F401


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run every test in its own temporary directory (trial's mktemp() writes relative paths)."""
    monkeypatch.chdir(tmp_path)
    yield
