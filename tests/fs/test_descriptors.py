"""Staged files keep at most a share of the process's descriptors open.

A copy of a tree stages files faster than the grid takes them; each held a descriptor until
its upload ended, and the 1,008th new file failed under the usual limit of 1,024. Past the
area's ``open_files``, the oldest staged files nobody uses give their descriptors back and
open them again (by path, or into a new memfd with their bytes) when next used.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from gateway.fs import descriptors
from gateway.fs.descriptors import OpenFiles
from gateway.fs.staging import MEMORY_FILE_BYTES, StagedFile, StagingArea

needs_memfd = pytest.mark.skipif(
    not hasattr(os, "memfd_create"), reason="this system has no memfd_create"
)


def _area(tmp_path: Path, open_files: int) -> StagingArea:
    return StagingArea(tmp_path / "staging", quota=1 << 30, spare_files=0, open_files=open_files)


def _fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def test_past_the_most_the_oldest_files_give_their_descriptors_back(tmp_path: Path) -> None:
    """Ten files on the disk with room for four descriptors: four are open, the others are
    given back; every file still reads and writes its own bytes, opening again as needed."""
    area = _area(tmp_path, open_files=4)
    before = _fds()
    files = [area.create() for _ in range(10)]
    for i, staged in enumerate(files):
        staged.write(0, b"file %d " % i * 100)
    assert len(area.open_files) <= 4
    assert len(_fds() - before) <= 4, "no more descriptors than the most"
    assert area.open_files.parked >= 6
    for i, staged in enumerate(files):
        staged.write(7000, b"end")
        assert staged.read(0, 7) == b"file %d " % i
        assert staged.read(7000, 3) == b"end"
        assert len(area.open_files) <= 4
    for staged in files:
        staged.fsync()
        staged.discard()
    assert len(area.open_files) == 0 and _fds() <= before
    assert list(area.directory.iterdir()) == []


@needs_memfd
def test_a_file_in_memory_keeps_its_bytes_and_holes_while_its_descriptor_is_back(
    tmp_path: Path,
) -> None:
    """A file in memory that gives its descriptor back keeps what was written (holes stay
    holes, the size stays) and comes back into a new memfd; it still moves to the disk
    with every byte, and its bytes stay counted in memory meanwhile."""
    area = _area(tmp_path, open_files=1)
    first = area.create(memory_limit=MEMORY_FILE_BYTES)
    first.write(10, b"hello")
    first.truncate(100)
    used = area.memory_used
    second = area.create(memory_limit=MEMORY_FILE_BYTES)  # the first gives its descriptor back
    assert first.in_memory and area.open_files.parked == 1
    assert area.memory_used == used and first.size == 100
    assert first.read(0, 100) == bytes(10) + b"hello" + bytes(85)
    assert second.read(0, 10) == b""
    first.write(50, b"more")
    first.fsync()  # moves to the disk
    assert not first.in_memory
    assert first.path.read_bytes() == bytes(10) + b"hello" + bytes(35) + b"more" + bytes(46)
    first.discard()
    second.discard()
    assert area.memory_used == 0 and area.used == 0


def test_a_file_in_use_keeps_its_descriptor(tmp_path: Path) -> None:
    """A file whose thread call is under way is not asked twice in a row: the next oldest
    gives its descriptor back instead."""
    area = _area(tmp_path, open_files=2)
    busy, idle = area.create(), area.create()
    busy._busy = True  # a flush-behind under way in a thread
    third = area.create()
    assert busy._fd >= 0, "in use: kept"
    assert idle._fd < 0, "the next oldest gave its descriptor back"
    busy._busy = False
    for staged in (busy, idle, third):
        staged.discard()
    assert len(area.open_files) == 0


def test_a_discarded_file_whose_descriptor_was_back_opens_nothing(tmp_path: Path) -> None:
    """Discarding a file whose descriptor was given back removes it and opens nothing."""
    area = _area(tmp_path, open_files=1)
    first = area.create()
    first.write(0, b"x")
    second = area.create()
    assert first._fd < 0
    before = _fds()
    first.discard()
    assert _fds() == before and first.fd == -1
    assert not first.path.exists()
    second.discard()


def test_the_default_most_is_a_share_of_the_soft_limit() -> None:
    """By default staged files may hold a quarter of the soft descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        assert OpenFiles().most == descriptors.RAISE_TO // descriptors.SHARE
    else:
        assert OpenFiles().most == max(descriptors.AT_LEAST, soft // descriptors.SHARE)


def test_raising_the_limit_goes_to_the_hard_one_and_never_lowers_it() -> None:
    """The node raises its soft limit to the hard one (at most RAISE_TO), never lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard != resource.RLIM_INFINITY and hard > 64:
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        before, said = descriptors.raise_limit()
        now, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert said == now
        wanted = (
            descriptors.RAISE_TO
            if hard == resource.RLIM_INFINITY
            else min(hard, descriptors.RAISE_TO)
        )
        assert now == max(wanted, before)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_staged_files_made_by_reopening_count_too(tmp_path: Path) -> None:
    """A staged file a restart finds (reopened by the upload journal) counts like a new one."""
    area = _area(tmp_path, open_files=2)
    paths = []
    for i in range(4):
        path = area.directory / f"{i}.staged"
        path.write_bytes(b"left %d" % i)
        paths.append(path)
    reopened: list[StagedFile] = [area.reopen(path) for path in paths]
    assert len(area.open_files) <= 2
    assert [s.read(0, 6) for s in reopened] == [b"left %d" % i for i in range(4)]
    for staged in reopened:
        staged.discard()
