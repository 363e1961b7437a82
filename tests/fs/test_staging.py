"""The staging area: private sparse files, any-order writes, the quota and a full disk."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from gateway.fs.errors import FileTooLarge, NoSpace
from gateway.fs.staging import MAX_FILE_SIZE, StagingArea
from tests.fs.support import ManualThreads


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


@pytest.mark.parametrize("offset", [MAX_FILE_SIZE, 2**63 - 10, 2**63, 2**64 - 1])
def test_a_file_past_the_largest_size_is_refused(tmp_path: Path, offset: int) -> None:
    """A write or truncate past the largest file size (1 TiB: a sparse file costs its whole
    size to upload) fails with FileTooLarge, never an OSError or OverflowError from the
    system call, and changes nothing. The SFTP fuzzer found a WRITE at offset 2**63
    answered with a logged traceback, and one at 2**40 costing minutes of upload."""
    area = StagingArea(tmp_path / "staging", quota=1 << 20)
    assert MAX_FILE_SIZE == 1 << 40
    staged = area.create()
    staged.write(0, b"kept")
    with pytest.raises(FileTooLarge, match="a file can be at most 1099511627776 bytes"):
        staged.write(offset, b"x")
    with pytest.raises(FileTooLarge):
        staged.truncate(offset + 1)
    assert (staged.size, area.used, staged.read(0, 10)) == (4, 4, b"kept")
    staged.write(MAX_FILE_SIZE - 1, b"x")  # the last byte is allowed
    assert staged.size == MAX_FILE_SIZE


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


def test_spares_are_made_as_needed_and_none_is_made_only_to_be_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of new files takes spare staged files; the spares made again in a thread are
    the missing ones only, so none is removed on the reactor thread and the directory ends
    with the files in use and ``spare_files`` spares."""
    import gateway.fs.stagedir as stagedir

    removed: list[Path] = []
    real_remove = stagedir._remove_spare

    def counting(path: Path, fd: int) -> None:
        removed.append(path)
        real_remove(path, fd)

    monkeypatch.setattr(stagedir, "_remove_spare", counting)
    threads = ManualThreads()
    area = StagingArea(tmp_path / "staging", quota=1 << 20, spare_files=8)
    files = []
    for _ in range(40):
        files.append(area.create(threads))
        threads.run_all()
    assert removed == []
    assert area.spares <= 8
    assert len(list((tmp_path / "staging").iterdir())) == 40 + area.spares
    for staged in files:
        staged.discard()
    area.drop_spares()
    assert list((tmp_path / "staging").iterdir()) == []
