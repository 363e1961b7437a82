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
from hypothesis import HealthCheck, given, settings

from gateway.fs import reopening
from gateway.fs.interfaces import SetAttributes
from gateway.fs.localfile import Phase
from gateway.fs.sparse import Ranges
from gateway.fs.under import Under
from tests.fs.test_sparse import DATA, SIZE, harness, open_rw, operations, run_model

NEW = os.urandom(SIZE)


def test_an_fsync_after_reopening_a_new_file_stores_only_its_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new file is closed (its upload waits), opened again and changed: the fsync waits
    for the first version, then stores 4 KiB over it, not the whole file a second time."""
    monkeypatch.setattr(reopening, "LAZY_OPEN_BYTES", SIZE)  # (1 MiB: a larger file)
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
    """An older version that changed less than LAZY_OPEN_BYTES (copied) is not waited for: the
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


def test_a_version_closed_before_the_older_one_is_stored_replaces_it(tmp_path: Path) -> None:
    """Opened, changed and closed again while the first version waits: the first is never
    stored (the second, journaled, replaces it), and the second is stored once."""
    gw, store = harness(tmp_path)
    gw.write("/new.bin", NEW)
    handle = open_rw(gw, "/new.bin")
    gw.run(handle.write(SIZE, b"appended"))
    gw.run(handle.close())
    assert handle.state.phase is Phase.JOURNALED
    gw.upload_everything()
    assert store.updates == [[(0, SIZE + 8)]]
    assert gw.read("/new.bin") == NEW + b"appended"


def test_a_version_closed_while_the_older_one_uploads_stores_its_own_changes(
    tmp_path: Path,
) -> None:
    """The first version's upload has started when the second is closed: the second's
    upload, after the first's, stores only its change, over the first's version."""
    gw, store = harness(tmp_path)
    gw.write("/new.bin", NEW)
    handle = open_rw(gw, "/new.bin")
    gw.run(handle.write(SIZE, b"appended"))
    gw.advance_until(lambda: handle.state.over is None)  # the first version is stored
    assert store.updates == [[(0, SIZE)]]
    gw.run(handle.close())
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


# -- a large pending version is read where it is, not copied ------------------------------


@pytest.fixture
def read_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """Versions of 100,000 changed bytes or more are not copied by an OPEN over them (1 MiB
    in a gateway), nor stored again by an fsync: it waits for them."""
    monkeypatch.setattr(reopening, "LAZY_OPEN_BYTES", 100_000)


def _reopened(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A new file of SIZE bytes closed (its upload waiting) and opened again for writing."""
    gw, store = harness(tmp_path)
    gw.write("/new.bin", NEW)
    used = gw.volume.staging.used
    handle = open_rw(gw, "/new.bin")
    return gw, store, handle, used


@pytest.mark.usefixtures("read_in_place")
def test_opening_a_large_pending_version_copies_nothing(tmp_path: Path) -> None:
    """The OPEN stages nothing: reads come from the pending version's staged file, merged
    with what the open file writes; a second reader sees the same."""
    gw, store, handle, used = _reopened(tmp_path)
    state = handle.state
    assert state.under is not None and state.staged is not None
    assert state.staged.written.covered == 0 and gw.volume.staging.used == used
    assert gw.run(handle.read(0, SIZE)) == NEW
    gw.run(handle.write(1000, b"w" * 10))
    expected = NEW[:1000] + b"w" * 10 + NEW[1010:]
    assert gw.run(handle.read(0, SIZE)) == expected
    assert gw.read("/new.bin") == expected  # a read handle on the open file
    assert gw.stat("/new.bin").size == SIZE


@pytest.mark.usefixtures("read_in_place")
def test_a_version_stored_while_read_in_place_becomes_the_base(tmp_path: Path) -> None:
    """Its upload finishes: the open file lies over what was stored, stops reading the
    staged file (its descriptor closed), and its CLOSE stores its own change only."""
    gw, store, handle, _ = _reopened(tmp_path)
    under = handle.state.under
    assert under is not None
    gw.run(handle.write(1000, b"w" * 10))
    gw.upload_everything()
    assert handle.state.under is None and handle.state.base is not None
    assert under.closed
    expected = NEW[:1000] + b"w" * 10 + NEW[1010:]
    assert gw.run(handle.read(0, SIZE)) == expected
    gw.run(handle.close())
    gw.upload_everything()
    assert store.updates == [[(0, SIZE)], [(1000, 1010)]]
    assert gw.read("/new.bin") == expected
    assert gw.volume.staging.used == 0


@pytest.mark.usefixtures("read_in_place")
@pytest.mark.parametrize("crash", [False, True], ids=["uploaded", "after a crash"])
def test_a_close_before_the_version_is_stored_copies_it_then(tmp_path: Path, crash: bool) -> None:
    """Closed (after a truncate and a growth) while the version it reads is pending: the
    CLOSE copies what it needs of that version, so the file stands on its own, through
    a kill -9 too; it replaces that version, which is never stored."""
    gw, store, handle, _ = _reopened(tmp_path)
    gw.run(handle.write(SIZE - 100, b"e" * 100))
    gw.run(handle.setattr(SetAttributes(size=200_000)))
    gw.run(handle.setattr(SetAttributes(size=SIZE)))
    gw.run(handle.write(5, b"s" * 5))
    gw.run(handle.close())
    assert handle.state.under is None
    expected = NEW[:5] + b"s" * 5 + NEW[10:200_000] + bytes(SIZE - 200_000)
    assert gw.read("/new.bin") == expected
    if crash:
        gw.crash()
        assert gw.read("/new.bin") == expected
    gw.upload_everything()
    assert gw.read("/new.bin") == expected
    assert store.updates == [[(0, SIZE)]], "the first version replaced, not stored"
    assert gw.volume.staging.used == 0


@pytest.mark.usefixtures("read_in_place")
def test_an_fsync_of_a_file_read_in_place_waits_for_the_version(tmp_path: Path) -> None:
    """The fsync waits for the version to be stored, then stores its change over it."""
    gw, store, handle, _ = _reopened(tmp_path)
    gw.run(handle.write(250_000, b"f" * 4096))
    gw.run_waiting(handle.fsync())
    assert handle.state.under is None
    assert store.updates == [[(0, SIZE)], [(250_000, 254_096)]]
    expected = NEW[:250_000] + b"f" * 4096 + NEW[254_096:]
    assert gw.read("/new.bin") == expected
    gw.run(handle.close())
    gw.upload_everything()
    assert gw.read("/new.bin") == expected


@pytest.mark.usefixtures("read_in_place")
def test_an_unchanged_file_read_in_place_gives_its_descriptor_back(tmp_path: Path) -> None:
    """Opened over a pending version and closed unchanged: nothing is published, and the
    descriptor on that version's staged file is closed."""
    gw, store, handle, _ = _reopened(tmp_path)
    under = handle.state.under
    assert under is not None
    gw.run(handle.close())
    assert under.closed
    gw.upload_everything()
    assert store.updates == [[(0, SIZE)]]
    assert gw.read("/new.bin") == NEW


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations)
def test_any_sequence_matches_the_model_with_versions_read_in_place(
    tmp_path_factory: pytest.TempPathFactory, read_everything_in_place: None, ops: list
) -> None:
    """The model test of ``test_sparse``, every pending version read in place by an OPEN
    over it (none copied) and waited for by an fsync."""
    run_model(harness(tmp_path_factory.mktemp("model"))[0], ops)


@pytest.fixture
def read_everything_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pending version is copied by an OPEN over it, and every fsync over one waits."""
    monkeypatch.setattr(reopening, "LAZY_OPEN_BYTES", 1)


def test_a_read_in_flight_keeps_the_descriptor_until_it_ends(tmp_path: Path) -> None:
    """Dropped while a read through it runs, the descriptor is closed when the read ends."""
    path = tmp_path / "staged"
    path.write_bytes(b"abc")
    under = Under(os.open(path, os.O_RDONLY), None, Ranges([(0, 3)]), 0, 3)
    under.reading()
    under.drop()
    assert under.read_staged(0, 3) == b"abc" and not under.closed
    under.read_done()
    assert under.closed


def test_a_replaced_version_someone_waits_for_is_still_stored(tmp_path: Path) -> None:
    """A version whose upload someone waits for (a CLOSE with ``close = grid``, an fsync)
    is stored even when a newer version is journaled: the wait means "in the grid"."""
    gw, store = harness(tmp_path)
    gw.write("/new.bin", NEW)
    ((job_id, _),) = gw.volume.overlay.jobs_at(("new.bin",))
    waited = gw.queue.wait_for(job_id)
    handle = open_rw(gw, "/new.bin")
    gw.run(handle.write(SIZE, b"appended"))
    gw.run(handle.close())
    gw.upload_everything()
    assert waited.called
    assert store.updates[0] == [(0, SIZE)] and len(store.updates) == 2
    assert gw.read("/new.bin") == NEW + b"appended"
