"""Spare staged files: made ahead in a thread, handed out by create, gone once dropped."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gateway.fs.staging import StagingArea
from tests.fs.support import ManualThreads


def test_create_hands_out_files_made_ahead_in_a_thread(tmp_path: Path) -> None:
    """The first create makes its file at once and starts making spares in a thread; later
    creates take those (empty, 0600) files, and more are made when half are used."""
    area, threads = StagingArea(tmp_path / "staging", quota=1 << 20, spare_files=4), ManualThreads()
    first = area.create(threads)
    assert len(threads.queue) == 1 and area.spares == 0
    threads.run_all()
    made = set(area.directory.iterdir()) - {first.path}
    assert len(made) == 4 and area.spares == 4
    for path in made:
        assert path.stat().st_size == 0 and stat.S_IMODE(path.stat().st_mode) == 0o600
    second, third = area.create(threads), area.create(threads)
    assert {second.path, third.path} <= made and not threads.queue
    fourth = area.create(threads)  # one spare left after this: time to make more
    assert fourth.path in made and len(threads.queue) == 1
    fourth.write(0, b"data")
    assert fourth.read(0, 10) == b"data" and area.used == 4


def test_dropped_spares_are_removed_even_those_still_being_made(tmp_path: Path) -> None:
    """drop_spares removes every spare file; a batch being made meanwhile is removed when it
    arrives; files handed out are untouched."""
    area, threads = StagingArea(tmp_path / "staging", quota=1 << 20, spare_files=4), ManualThreads()
    kept = area.create(threads)
    area.drop_spares()
    threads.run_all()
    assert area.spares == 0 and list(area.directory.iterdir()) == [kept.path]
    another = area.create(threads)
    threads.run_all()
    assert area.spares == 4
    area.drop_spares()
    assert sorted(area.directory.iterdir()) == sorted([kept.path, another.path])


def test_spares_left_by_a_stop_are_leftovers(tmp_path: Path) -> None:
    """Spares a stopped node left behind are unreferenced staged files: the cleanup at start
    finds them among the leftovers."""
    area, threads = StagingArea(tmp_path / "staging", quota=1 << 20, spare_files=3), ManualThreads()
    used = area.create(threads)
    threads.run_all()
    leftovers = StagingArea(tmp_path / "staging", quota=1 << 20).leftovers({str(used.path)})
    assert len(leftovers) == 3 and used.path not in leftovers


def test_without_threads_or_with_none_wanted_no_spares_are_made(tmp_path: Path) -> None:
    """A test's area without threads, or one made with ``spare_files=0``, creates each file
    when asked and nothing else."""
    threads = ManualThreads()
    for area, runner in [
        (StagingArea(tmp_path / "a", quota=1 << 20), None),
        (StagingArea(tmp_path / "b", quota=1 << 20, spare_files=0), threads),
    ]:
        staged = area.create(runner)
        assert not threads.queue and os.listdir(area.directory) == [staged.path.name]
