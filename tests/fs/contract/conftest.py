"""The implementations the contract runs over: add one to ``IMPLEMENTATIONS`` to run it all.

Each makes a fresh, empty account filesystem in a temporary directory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fs.contract.grid_subject import GridSubject
from tests.fs.contract.subject import PENDING, UPLOADED, UPLOADING, Subject

IMPLEMENTATIONS: dict[str, Callable[[Path], Subject]] = {
    "gridfs": GridSubject,
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    """An empty account's filesystem, for each implementation."""
    return IMPLEMENTATIONS[request.param](tmp_path)


@pytest.fixture(params=[PENDING, UPLOADING, UPLOADED])
def when(request: pytest.FixtureRequest) -> str:
    """Whether closed files are still pending, uploading or landed when a test looks."""
    return str(request.param)
