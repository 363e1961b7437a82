"""The contract's subject for :class:`~gateway.fs.gridfs.GridFilesystem`: one volume on an
in-memory grid, a fake clock, background "threads" run by hand (see
:class:`~tests.fs.support.VolumeHarness`)."""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from gateway.fs.gridfs import GridFilesystem
from gateway.fs.interfaces import IFilesystem
from tests.fs.contract.subject import Subject
from tests.fs.support import VolumeHarness

T = TypeVar("T")

#: Seconds a call may wait for the clock (an fsync waits for its upload) before it is
#: taken to hang.
PATIENCE = 600


class GridSubject(Subject):
    """GridFilesystem sessions over one Volume, in memory."""

    def __init__(self, base: Path) -> None:
        self.harness = VolumeHarness(base)

    @property
    def fs(self) -> IFilesystem:
        return self.harness.fs

    def session(self, read_only: bool = False) -> IFilesystem:
        return GridFilesystem(self.harness.volume, read_only=read_only)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.harness.run_waiting(coroutine, PATIENCE)

    def advance(self, seconds: float) -> None:
        self.harness.clock.advance(seconds)
        self.harness.threads.run_all()

    def settle(self) -> None:
        self.harness.upload_everything()

    def now(self) -> float:
        return float(self.harness.clock.seconds())
