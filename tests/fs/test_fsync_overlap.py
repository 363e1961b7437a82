"""An fsync's upload record: none when no recorded version of the path is pending (the
fsync is acknowledged once in the grid); otherwise its objects are stored while the
record is flushed, nothing is linked before the record is durable, and a record that
cannot be flushed fails the fsync and links nothing."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred

from gateway.uploads.journal import UploadJournal
from tests.fs.test_sparse import DATA, harness, open_rw


def _entry_cap(gw, name: str = "f.bin") -> str:  # type: ignore[no-untyped-def]
    directory = gw.run(gw.volume.directory(()))
    return str(gw.run(directory.get(name)).cap.to_string())


CLOSED = (100, 110)
"""What a CLOSE still waiting for its upload changed, before the fsync's handle opened."""


def _pending_close(gw) -> None:  # type: ignore[no-untyped-def]
    """A CLOSE of ``/f.bin`` whose upload has not run: a recorded version of the path."""
    first = open_rw(gw)
    gw.run(first.write(CLOSED[0], b"c" * (CLOSED[1] - CLOSED[0])))
    gw.run(first.close())
    assert [job.display for job in gw.queue.pending()] == ["/f.bin"]


def _fsync_started(tmp_path: Path, byte: bytes):  # type: ignore[no-untyped-def]
    """A file in the grid with a CLOSE of it waiting for its upload, 100 bytes written at
    3000 through a handle opened after that, and an fsync of it started (its record's
    flush waiting in its thread): the harness, the store, the handle, the file's cap
    before, and the fsync's outcome (filled once it answers)."""
    gw, store = harness(tmp_path, in_place_below=0.0)  # the record's flush in a thread
    before = _entry_cap(gw)
    _pending_close(gw)
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
    assert [CLOSED, (3000, 3100)] in store.updates, "the change is stored meanwhile"
    assert not outcome
    during = _entry_cap(gw)  # the file's, or the CLOSE's version (its record is durable)
    _drive(gw, outcome)
    assert outcome == [None]
    assert _entry_cap(gw) not in (before, during), "linked once the record is durable"
    expected = bytearray(DATA)
    expected[CLOSED[0] : CLOSED[1]] = b"c" * (CLOSED[1] - CLOSED[0])
    expected[3000:3100] = b"n" * 100
    assert gw.read("/f.bin") == bytes(expected)


def test_an_fsync_whose_record_cannot_be_flushed_fails_and_links_nothing(
    tmp_path: Path,
) -> None:
    """An I/O error flushing the record reaches the fsync; the stored objects are never
    named, no retry follows, and the change is still the open file's: the next fsync
    stores it (over the CLOSE's version, which became its base once stored)."""
    gw, store, handle, before, outcome = _fsync_started(tmp_path, b"e")
    assert [CLOSED, (3000, 3100)] in store.updates
    call, result = gw.threads.queue.pop(0)  # the record's flush...
    result.errback(OSError(errno.EIO, os.strerror(errno.EIO)))  # ...fails
    _drive(gw, outcome)
    for _ in range(5):
        gw.clock.advance(60)
    (failure,) = outcome
    assert isinstance(failure.value, OSError)  # type: ignore[attr-defined]
    assert gw.queue.pending() == [], "the CLOSE uploaded; the fsync dropped"
    directory = gw.run(gw.volume.directory(()))
    linked = gw.run(directory.get("f.bin")).cap
    closed = bytearray(DATA)
    closed[CLOSED[0] : CLOSED[1]] = b"c" * (CLOSED[1] - CLOSED[0])
    assert gw.run(store.reader(linked).read(0, len(DATA))) == bytes(closed), "not named"
    assert store.updates.count([CLOSED, (3000, 3100)]) == 1, "the dropped job: no retry"
    gw.run_waiting(handle.fsync())
    assert store.updates[-1] == [(3000, 3100)], "over the CLOSE's version, stored meanwhile"
    expected = bytearray(DATA)
    expected[CLOSED[0] : CLOSED[1]] = b"c" * (CLOSED[1] - CLOSED[0])
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


def test_an_fsync_with_no_recorded_version_pending_writes_no_record(tmp_path: Path) -> None:
    """Nothing else of the path waits for the grid: the fsync journals nothing and flushes
    nothing, answers once its version is linked, and that version is what a restart finds."""
    gw, store = harness(tmp_path, in_place_below=0.0)  # the record's flush in a thread
    before = _entry_cap(gw)
    handle = open_rw(gw)
    gw.run(handle.write(3000, b"u" * 100))
    outcome: list[object] = []
    Deferred.fromCoroutine(handle.fsync()).addBoth(outcome.append)
    gw.clock.advance(0)
    assert not gw.threads.queue, "no record to flush"
    _drive(gw, outcome)
    assert outcome == [None]
    assert store.updates == [[(3000, 3100)]]
    assert _entry_cap(gw) != before
    assert list(UploadJournal(tmp_path / "journal").load()) == [], "no record left"
    gw.crash()  # the handle is never closed
    expected = bytearray(DATA)
    expected[3000:3100] = b"u" * 100
    assert gw.read("/f.bin") == bytes(expected)


@pytest.mark.parametrize("close_instead", [False, True], ids=["fsync", "close"])
def test_a_newer_version_linked_over_a_pending_close_survives_a_restart(
    tmp_path: Path, close_instead: bool
) -> None:
    """A CLOSE of the path is still uploading when a newer version of it (an fsync's, or a
    second CLOSE's) is linked, and then the gateway is killed: the file is the newer
    version after the restart, never the older CLOSE's. (The fsync's version has a record
    of its own; the older CLOSE's record is dropped when the newer is linked. Without
    either, the restart replayed the older CLOSE's record over the acknowledged newer
    version.)"""
    gw, store = harness(tmp_path)
    held: Deferred[None] = Deferred()  # the CLOSE's upload, under way at the crash
    stored = store.update_file

    async def hold_the_close(base, size, changed, read, *args, **kwargs):  # type: ignore[no-untyped-def]
        if list(changed) == [CLOSED] and not held.called:
            await held
        return await stored(base, size, changed, read, *args, **kwargs)

    store.update_file = hold_the_close  # type: ignore[method-assign]
    _pending_close(gw)
    gw.advance_until(gw.uploading)  # (a newer version journaled first would replace it)
    handle = open_rw(gw)
    gw.run(handle.write(3000, b"r" * 100))
    if close_instead:
        gw.run(handle.close())
        for _ in range(5):
            gw.clock.advance(1)
            gw.threads.run_all()
        gw.write("/other", b"o")  # its record's flush covers what was appended before
    else:
        gw.run_waiting(handle.fsync())
    assert [job.display for job in gw.queue.pending()][0] == "/f.bin", "the first CLOSE's"
    gw.crash()
    held.callback(None)  # (the old process's upload never ends; the new one's may)
    gw.upload_everything()
    expected = bytearray(DATA)
    expected[CLOSED[0] : CLOSED[1]] = b"c" * (CLOSED[1] - CLOSED[0])
    expected[3000:3100] = b"r" * 100
    assert gw.read("/f.bin") == bytes(expected)
