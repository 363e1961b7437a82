"""A file opened again while its last version is still waiting for the grid (issue #16).

Its changes are copied at the OPEN (never the grid version under them); once that version
is stored it becomes the open file's base, so an fsync or CLOSE of the open file stores
what changed since the OPEN, not the older version's changes again. For a new file those
changes are the whole file: before this, a 4 GiB file written, closed and opened again
was encoded whole a second time at its first fsync.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.fs import writing
from gateway.fs.interfaces import SetAttributes
from gateway.fs.localfile import Phase
from tests.fs.test_sparse import DATA, SIZE, harness, open_rw

NEW = os.urandom(SIZE)


def test_an_fsync_after_reopening_a_new_file_stores_only_its_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new file is closed (its upload waits), opened again and changed: the fsync waits
    for the first version, then stores 4 KiB over it, not the whole file a second time."""
    monkeypatch.setattr(writing, "REBASE_WAIT_BYTES", SIZE)  # (1 MiB: a larger file)
    gw, store = harness(tmp_path)
    gw.write("/new.bin", NEW)
    handle = open_rw(gw, "/new.bin")
    assert handle.state.over is not None  # the closed version is still pending
    gw.run(handle.write(100_000, b"x" * 4096))
    gw.run_waiting(handle.fsync())
    assert store.updates == [[(0, SIZE)], [(100_000, 104_096)]]
    expected = NEW[:100_000] + b"x" * 4096 + NEW[104_096:]
    assert gw.run(handle.read(0, SIZE)) == expected
    assert gw.read("/new.bin") == expected  # another handle: the fsynced version
    gw.run(handle.write(0, b"y"))
    gw.run(handle.close())
    gw.upload_everything()
    assert store.updates[-1] == [(0, 1)]
    assert gw.read("/new.bin") == b"y" + expected[1:]
    assert gw.volume.staging.used == 0


def test_an_fsync_over_a_small_pending_change_stores_it_again(tmp_path: Path) -> None:
    """An older version that changed less than REBASE_WAIT_BYTES is not waited for: the
    fsync stores its changes again with the open file's, and the open file lies over
    that version once the older one is stored."""
    gw, store = harness(tmp_path)
    first = open_rw(gw)
    gw.run(first.write(10, b"1" * 10))
    gw.run(first.close())
    handle = open_rw(gw)
    gw.run(handle.write(20_000, b"2" * 10))
    gw.run_waiting(handle.fsync())
    assert [(10, 20), (20_000, 20_010)] in store.updates
    assert handle.state.over is None  # the fsync's version is its base
    gw.run(handle.write(30_000, b"3"))
    gw.run(handle.close())
    gw.upload_everything()
    assert store.updates[-1] == [(30_000, 30_001)]
    expected = bytearray(DATA)
    expected[10:20] = b"1" * 10
    expected[20_000:20_010] = b"2" * 10
    expected[30_000] = ord("3")
    assert gw.read("/f.bin") == bytes(expected)


def test_an_open_file_lies_over_the_older_version_once_it_is_stored(tmp_path: Path) -> None:
    """The older version's upload finishes while the file is open: what was written and
    truncated since the OPEN is kept over it, reads are unchanged, and the CLOSE stores
    only those changes."""
    gw, store = harness(tmp_path)
    gw.write("/new.bin", NEW)
    handle = open_rw(gw, "/new.bin")
    gw.run(handle.write(10, b"a" * 100))
    gw.run(handle.setattr(SetAttributes(size=SIZE - 50_000)))  # cuts the older version
    gw.run(handle.setattr(SetAttributes(size=SIZE)))  # ... and grows it again: zeros
    expected = NEW[:10] + b"a" * 100 + NEW[110 : SIZE - 50_000] + bytes(50_000)
    gw.upload_everything()  # the first version: stored and linked
    assert store.updates == [[(0, SIZE)]]
    state = handle.state
    assert state.over is None and state.base is not None and state.base.size == SIZE
    assert list(state.changed) == [(10, 110)] and state.limit == SIZE - 50_000
    assert gw.run(handle.read(0, SIZE)) == expected
    gw.run(handle.write(200_000, b"b" * 10))
    expected = expected[:200_000] + b"b" * 10 + expected[200_010:]
    gw.run(handle.close())
    gw.upload_everything()
    assert store.updates[-1] == [(10, 110), (200_000, 200_010), (SIZE - 50_000, SIZE)]
    assert store.zeros[-1] == [(SIZE - 50_000, SIZE)]  # the zeros are not read
    assert gw.read("/new.bin") == expected


def test_a_version_closed_before_the_older_one_is_stored_stores_its_own_changes(
    tmp_path: Path,
) -> None:
    """Opened, changed and closed again while the first version waits: its upload, after
    the first's, stores only its change."""
    gw, store = harness(tmp_path)
    gw.write("/new.bin", NEW)
    handle = open_rw(gw, "/new.bin")
    gw.run(handle.write(SIZE, b"appended"))
    gw.run(handle.close())
    assert handle.state.phase is Phase.JOURNALED
    gw.upload_everything()
    assert store.updates == [[(0, SIZE)], [(SIZE, SIZE + 8)]]
    assert gw.read("/new.bin") == NEW + b"appended"


def test_a_crash_after_reopening_keeps_the_last_close(tmp_path: Path) -> None:
    """kill -9 with both versions still pending: after the restart the file is its last
    CLOSE's version, stored over whatever its record names."""
    gw, store = harness(tmp_path)
    gw.write("/new.bin", NEW)
    handle = open_rw(gw, "/new.bin")
    gw.run(handle.write(5, b"z" * 5))
    gw.run(handle.close())
    gw.crash()
    expected = NEW[:5] + b"z" * 5 + NEW[10:]
    assert gw.read("/new.bin") == expected
    gw.upload_everything()
    assert gw.read("/new.bin") == expected
    assert gw.volume.staging.used == 0


def test_an_unchanged_reopened_file_publishes_nothing(tmp_path: Path) -> None:
    """Opened while pending, its older version stored meanwhile, closed unchanged: nothing
    more is stored."""
    gw, store = harness(tmp_path)
    gw.write("/new.bin", NEW)
    handle = open_rw(gw, "/new.bin")
    gw.upload_everything()
    gw.run(handle.close())
    gw.upload_everything()
    assert store.updates == [[(0, SIZE)]]
    assert gw.read("/new.bin") == NEW
