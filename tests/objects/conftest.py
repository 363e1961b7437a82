"""Fixtures the directory tests share: in-process storage servers and an empty directory."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from gateway.objects.caps import DirectoryWriteCap
from gateway.objects.dirnode import DirectoryNode
from gateway.objects.mutable import MutableClient
from tests.objects.grid import GridClient, make_grid, run
from tests.objects.test_dirnode import PARAMS, SECRETS


@pytest.fixture
def grid() -> list[GridClient]:
    """Four in-process servers."""
    return make_grid(4)


@pytest.fixture
def root(grid: list[GridClient]) -> DirectoryWriteCap:
    """An empty directory on the grid, made by a gateway without write-back."""
    node = run(DirectoryNode.create(MutableClient(grid, SECRETS, PARAMS), clock=Clock()))
    assert isinstance(node.cap, DirectoryWriteCap)
    return node.cap
