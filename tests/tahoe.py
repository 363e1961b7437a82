"""Where the test set-up installs Tahoe-LAFS 1.20, and the marks of tests that run it."""

from __future__ import annotations

import os

import pytest

from tests.grid_e2e.processes import TAHOE  # the venv misc/test creates

__all__ = ["REQUIRES_TAHOE", "TAHOE"]

REQUIRES_TAHOE = [
    pytest.mark.tahoe,
    pytest.mark.skipif(
        not os.access(TAHOE, os.X_OK),
        reason="needs Tahoe-LAFS 1.20 in /work/main/.venv-tahoe (misc/test installs it)",
    ),
]
"""Marks for a test (or ``pytestmark``) that runs real Tahoe-LAFS processes."""
