"""The staging area: private sparse files, any-order writes, the quota and a full disk."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from gateway.fs.errors import NoSpace
from gateway.fs.staging import StagingArea


def test_staged_files_are_private_and_accept_writes_in_any_order(tmp_path: Path) -> None:
    """Writes at any offset land where they belong; holes read as zeros; mode is 0600."""
    area = StagingArea(tmp_path / "staging", quota=1 << 20)
    staged = area.create()
    staged.write(10, b"world")
    staged.write(0, b"hello")
    assert staged.read(0, 100) == b"hello" + b"\0" * 5 + b"world"
    assert staged.size == 15
    assert stat.S_IMODE(staged.path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "staging").stat().st_mode) == 0o700
    assert staged.read(15, 10) == b""


def test_quota_refuses_growth_but_keeps_what_is_staged(tmp_path: Path) -> None:
    """A write past the quota fails with NoSpace and changes nothing; truncation frees quota."""
    area = StagingArea(tmp_path / "staging", quota=100)
    staged = area.create()
    staged.write(0, b"a" * 80)
    with pytest.raises(NoSpace, match="staging quota of 100 bytes is full"):
        staged.write(80, b"b" * 30)
    assert staged.read(0, 200) == b"a" * 80
    assert area.used == 80
    staged.write(0, b"c" * 80)  # overwriting does not grow
    staged.truncate(10)
    assert area.used == 10
    staged.discard()
    assert area.used == 0 and not staged.path.exists()


def test_full_disk_is_a_clear_no_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC from the disk becomes NoSpace and the quota is not charged."""
    area = StagingArea(tmp_path / "staging", quota=1 << 20)
    staged = area.create()
    staged.write(0, b"keep")

    def full(fd: int, data: object, offset: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(NoSpace, match="disk is full"):
        staged.write(4, b"more")
    monkeypatch.undo()
    assert staged.read(0, 10) == b"keep"
    assert area.used == 4
