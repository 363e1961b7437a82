"""An fsync's objects are stored while its journal record is flushed; nothing is linked
before the record is durable, and a record that cannot be flushed fails the fsync and
links nothing."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from twisted.internet.defer import Deferred

from tests.fs.test_sparse import DATA, harness, open_rw


def _entry_cap(gw, name: str = "f.bin") -> str:  # type: ignore[no-untyped-def]
    directory = gw.run(gw.volume.directory(()))
    return str(gw.run(directory.get(name)).cap.to_string())


def _fsync_started(tmp_path: Path, byte: bytes):  # type: ignore[no-untyped-def]
    """A file in the grid, 100 bytes written at 3000 through an open handle, and an fsync
    of it started (its record's flush waiting in its thread): the harness, the store, the
    handle, the file's cap before, and the fsync's outcome (filled once it answers)."""
    gw, store = harness(tmp_path)
    before = _entry_cap(gw)
    handle = open_rw(gw)
    gw.run(handle.write(3000, byte * 100))
    outcome: list[object] = []
    Deferred.fromCoroutine(handle.fsync()).addBoth(outcome.append)
    gw.clock.advance(0)
    return gw, store, handle, before, outcome


def test_an_fsync_stores_its_change_while_its_record_is_flushed(tmp_path: Path) -> None:
    """The update runs before the flush of the fsync's record is done; the file's entry
    changes only after it, and the fsync answers then."""
    gw, store, handle, before, outcome = _fsync_started(tmp_path, b"n")
    assert gw.threads.queue, "the record's flush waits in its thread"
    assert store.updates == [[(3000, 3100)]], "the change is stored meanwhile"
    assert not outcome
    assert _entry_cap(gw) == before, "nothing is linked before the record is durable"
    _drive(gw, outcome)
    assert outcome == [None]
    assert _entry_cap(gw) != before
    expected = bytearray(DATA)
    expected[3000:3100] = b"n" * 100
    assert gw.read("/f.bin") == bytes(expected)


def test_an_fsync_whose_record_cannot_be_flushed_fails_and_links_nothing(
    tmp_path: Path,
) -> None:
    """An I/O error flushing the record reaches the fsync; the stored objects are never
    named, no retry follows, and the change is still the open file's: the next fsync
    stores it."""
    gw, store, handle, before, outcome = _fsync_started(tmp_path, b"e")
    assert store.updates == [[(3000, 3100)]]
    call, result = gw.threads.queue.pop(0)  # the record's flush...
    result.errback(OSError(errno.EIO, os.strerror(errno.EIO)))  # ...fails
    _drive(gw, outcome)
    for _ in range(5):
        gw.clock.advance(60)
    (failure,) = outcome
    assert isinstance(failure.value, OSError)  # type: ignore[attr-defined]
    assert _entry_cap(gw) == before
    assert gw.queue.pending() == []
    assert len(store.updates) == 1, "the dropped job is not retried"
    gw.run_waiting(handle.fsync())
    assert store.updates[-1] == [(3000, 3100)]
    expected = bytearray(DATA)
    expected[3000:3100] = b"e" * 100
    assert gw.read("/f.bin") == bytes(expected)


def _drive(gw, outcome: list[object]) -> None:  # type: ignore[no-untyped-def]
    """Run the calls waiting in threads and let time pass until the fsync has answered."""
    for _ in range(600):
        if outcome:
            return
        if gw.threads.queue:
            gw.threads.run_next()
        else:
            gw.clock.advance(1)
    raise AssertionError("the fsync never answered")
