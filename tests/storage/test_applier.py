"""Durable changes applied to the share files in a thread: answers never run ahead of it.

The disk backend as nodes run it acknowledges a change once its redo-log record is
flushed and lets a thread write the files. These tests hold that thread back (or make it
fail) and check what clients of the storage server see meanwhile and afterwards.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

import storage.applier
import storage.disk
from storage.applier import APPLY_NICE, BackgroundApplier, lay_over_listing
from storage.backend import si_b2a
from storage.disk import DiskBackend
from storage.errors import StorageError
from storage.inplace import LoggedFiles
from storage.interfaces import TestWriteVectors as Vectors
from storage.interfaces import WriteVector
from storage.server import StorageServer
from tests.storage.values import CANCEL, RENEW, SI, SI2, UPLOAD, WE


def share_file(root: Path, storage_index: bytes, number: int) -> Path:
    """Where the disk backend keeps a share."""
    name = si_b2a(storage_index)
    return root / "shares" / name[:2] / name / str(number)


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """While the event is clear, the applying thread takes no record."""
    event = threading.Event()
    real_run = BackgroundApplier._run

    def held(self: BackgroundApplier) -> None:
        event.wait(10)
        real_run(self)

    monkeypatch.setattr(BackgroundApplier, "_run", held)
    yield event
    event.set()


def open_server(root: Path) -> StorageServer:
    """A server over a disk backend that applies in the background."""
    return StorageServer(DiskBackend(root, background=True), Clock())


def test_a_read_of_a_waiting_share_is_served_from_its_record(
    tmp_path: Path, gate: threading.Event
) -> None:
    """A slot and a small immutable share written while the thread is held are
    acknowledged, their files not yet written; they are listed at once, and reads of them
    (the slot no longer kept in memory) are served from their records without the reader
    writing a file (a pack or a node read back during a stream of fsyncs made the reactor
    thread create its directory and files); the thread writes them later."""
    server = open_server(tmp_path)
    server.allocate_buckets(SI2, frozenset({0}), 5, UPLOAD, RENEW, CANCEL)
    assert server.write_immutable(SI2, 0, UPLOAD, 0, b"small").finished
    vectors = {0: Vectors(write=(WriteVector(0, b"slot"),))}
    assert server.read_test_write(SI, WE, RENEW, CANCEL, vectors, ()).success
    assert not share_file(tmp_path, SI, 0).exists()
    assert server.list_mutable(SI) == {0}
    server.backend._forget(SI)  # what it wrote no longer kept: a read finds the record
    assert server.read_mutable(SI, 0, 1, 3) == b"lot"
    assert server.read_immutable(SI2, 0, 0, 10) == b"small"
    assert server.backend.share_length(SI2, 0) == 5
    assert not share_file(tmp_path, SI, 0).exists()
    assert not share_file(tmp_path, SI2, 0).exists()
    gate.set()
    server.backend.close()
    assert share_file(tmp_path, SI, 0).read_bytes() == b"slot"
    assert share_file(tmp_path, SI2, 0).read_bytes() == b"small"


def test_a_read_of_a_share_whose_newest_waiting_change_removes_it_applies_it(
    tmp_path: Path, gate: threading.Event
) -> None:
    """A share written then removed while the thread is held: a read applies the index's
    records itself and finds no share, while another index's record still waits."""
    server = open_server(tmp_path)
    backend = server.backend
    server.allocate_buckets(SI2, frozenset({0}), 5, UPLOAD, RENEW, CANCEL)
    assert server.write_immutable(SI2, 0, UPLOAD, 0, b"small").finished
    vectors = {0: Vectors(write=(WriteVector(0, b"slot"),))}
    assert server.read_test_write(SI, WE, RENEW, CANCEL, vectors, ()).success
    gone = {0: Vectors(write=(), new_length=0)}
    assert server.read_test_write(SI, WE, RENEW, CANCEL, gone, ()).success
    backend._forget(SI)
    assert server.list_mutable(SI) == set()
    with pytest.raises(StorageError):
        backend.read_share(SI, 0, 0, 4)
    assert not share_file(tmp_path, SI2, 0).exists()
    gate.set()
    backend.close()


def test_a_listing_lays_waiting_records_over_the_directory(
    tmp_path: Path, gate: threading.Event
) -> None:
    """While the thread is held, a slot's listing says what its files will say once the
    thread has written them: a new share is listed, a removed one is not; and so does it
    once the thread has run."""
    server = open_server(tmp_path)
    backend = server.backend
    write = {n: Vectors(write=(WriteVector(0, b"share %d" % n),)) for n in (0, 1, 2)}
    assert server.read_test_write(SI, WE, RENEW, CANCEL, write, ()).success
    more = {3: Vectors(write=(WriteVector(0, b"share 3"),))}
    assert server.read_test_write(SI, WE, RENEW, CANCEL, more, ()).success
    assert [r["op"] for r in backend._files.pending(SI) or []] == ["share"]
    assert not share_file(tmp_path, SI, 3).exists()  # listed below from its record
    assert backend.list_shares(SI) == {0, 1, 2, 3}
    backend.delete_share(SI, 1)
    assert [r["op"] for r in backend._files.pending(SI) or []] == ["delete-share"]
    assert share_file(tmp_path, SI, 1).exists()  # not listed below: its removal waits
    assert backend.list_shares(SI) == {0, 2, 3}
    gate.set()
    backend.stop_applying()
    assert backend.list_shares(SI) == {0, 2, 3}
    assert share_file(tmp_path, SI, 3).read_bytes() == b"share 3"
    assert not share_file(tmp_path, SI, 1).exists()


def test_a_listing_never_waits_for_the_thread(tmp_path: Path, gate: threading.Event) -> None:
    """A slot's test-and-write lists the slot; while the thread is busy writing another
    index's files (here: holds the files' lock), the listing and a test-and-write of a slot
    whose own last write still waits are answered without waiting for it."""
    server = open_server(tmp_path)
    backend = server.backend
    first = {0: Vectors(write=(WriteVector(0, b"one"),))}
    assert server.read_test_write(SI, WE, RENEW, CANCEL, first, ()).success
    busy, release = threading.Event(), threading.Event()

    def hold_files() -> None:
        with backend._files.lock:
            busy.set()
            release.wait(10)

    holder = threading.Thread(target=hold_files)
    holder.start()
    try:
        assert busy.wait(10)
        answers: list[Any] = []
        second = {0: Vectors(write=(WriteVector(0, b"two"),))}
        reader = threading.Thread(
            target=lambda: answers.append(
                (backend.list_shares(SI), server.read_test_write(SI, WE, RENEW, CANCEL, second, ()))
            )
        )
        reader.start()
        reader.join(5)
        assert not reader.is_alive(), "the listing waited for the thread"
        listed, result = answers[0]
        assert listed == {0} and result.success
    finally:
        release.set()
        holder.join()
    gate.set()
    backend.stop_applying()
    assert share_file(tmp_path, SI, 0).read_bytes() == b"two"


def test_reads_racing_the_thread_see_every_change(tmp_path: Path) -> None:
    """Small shares of many indexes completed one after the other while the thread applies
    them: each is listed and read back at once, whoever applies it."""
    server = open_server(tmp_path)
    indexes = [bytes([i]) * 16 for i in range(1, 41)]
    for number, storage_index in enumerate(indexes):
        data = f"share {number}".encode()
        server.allocate_buckets(storage_index, frozenset({0}), len(data), UPLOAD, RENEW, CANCEL)
        assert server.write_immutable(storage_index, 0, UPLOAD, 0, data).finished
        earlier = indexes[number // 2]
        assert server.list_immutable(earlier) == {0}
        assert server.read_immutable(earlier, 0, 0, 20) == f"share {number // 2}".encode()
    server.backend.close()
    for number, storage_index in enumerate(indexes):
        assert share_file(tmp_path, storage_index, 0).read_bytes() == f"share {number}".encode()


def test_an_unapplied_change_survives_a_crash(tmp_path: Path, gate: threading.Event) -> None:
    """kill -9 while records wait for the thread: the next opening replays them."""
    server = open_server(tmp_path)
    server.allocate_buckets(SI2, frozenset({0}), 5, UPLOAD, RENEW, CANCEL)
    assert server.write_immutable(SI2, 0, UPLOAD, 0, b"small").finished
    assert not share_file(tmp_path, SI2, 0).exists()
    restarted = StorageServer(DiskBackend(tmp_path), Clock())  # the first is never closed
    assert restarted.read_immutable(SI2, 0, 0, 10) == b"small"


def test_a_change_the_thread_cannot_apply_is_an_error_not_a_wrong_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while a share file is created (by the thread or by a reader): the node
    logs it, reads of that index and the checkpoint raise, the log keeps the change, and a
    restart serves it."""
    real_apply = LoggedFiles._apply
    failing: list[LoggedFiles] = []  # this test's backend only: an earlier test's thread
    # may still be applying its own records meanwhile

    def full(self: LoggedFiles, record: dict[str, Any]) -> None:
        if record["op"] == "share" and self in failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_apply(self, record)

    monkeypatch.setattr(LoggedFiles, "_apply", full)
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        server = open_server(tmp_path)
        failing.append(server.backend._files)
        server.allocate_buckets(SI2, frozenset({0}), 5, UPLOAD, RENEW, CANCEL)
        assert server.write_immutable(SI2, 0, UPLOAD, 0, b"small").finished
        for _ in range(500):  # the thread tries the record (a read meanwhile is served from it)
            if any("log_failure" in e for e in events):
                break
            threading.Event().wait(0.01)
        with pytest.raises(StorageError, match="No space left"):
            server.read_immutable(SI2, 0, 0, 10)
    finally:
        globalLogPublisher.removeObserver(events.append)
    logged = [e for e in events if "log_failure" in e]
    assert len(logged) == 1
    assert "until a restart replays the log" in logged[0]["log_format"]
    assert logged[0]["log_failure"].check(OSError)
    with pytest.raises(StorageError):
        server.backend.checkpoint()
    monkeypatch.undo()
    restarted = StorageServer(DiskBackend(tmp_path), Clock())
    assert restarted.read_immutable(SI2, 0, 0, 10) == b"small"


def test_close_writes_every_file(tmp_path: Path, gate: threading.Event) -> None:
    """Closing the backend waits for the thread: the files hold every change."""
    server = open_server(tmp_path)
    server.allocate_buckets(SI2, frozenset({0}), 5, UPLOAD, RENEW, CANCEL)
    assert server.write_immutable(SI2, 0, UPLOAD, 0, b"small").finished
    vectors = {1: Vectors(write=(WriteVector(0, b"slot"),))}
    assert server.read_test_write(SI, WE, RENEW, CANCEL, vectors, ()).success
    gate.set()
    server.backend.close()
    assert share_file(tmp_path, SI2, 0).read_bytes() == b"small"
    assert share_file(tmp_path, SI, 1).read_bytes() == b"slot"
    assert server.backend._log.empty  # checkpointed


class Applied:
    """An ``apply`` that records what it applied, for waiting on from the test."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._cond = threading.Condition()

    def __call__(self, record: dict[str, Any]) -> None:
        with self._cond:
            self.records.append(record)
            self._cond.notify_all()

    def wait_for(self, count: int) -> list[int]:
        """The numbers of the records applied, once at least ``count`` are (or 10 s on)."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.records) >= count, 10)
            return [r["n"] for r in self.records]


def records(*numbers: int, size: int = 0) -> list[dict[str, Any]]:
    """Records of distinct indexes, holding ``size`` bytes each."""
    return [{"op": "share", "si": bytes([n]) * 16, "n": n, "data": bytes(size)} for n in numbers]


def held_back(applier: BackgroundApplier) -> bool:
    """Whether the thread is waiting for the hold to end, with records waiting (polled
    for up to 10 s: the thread gets there by itself)."""
    for _ in range(1000):
        with applier._cond:
            if applier._holding and applier.waiting:
                return True
        threading.Event().wait(0.01)
    return False


def test_records_wait_while_held_and_are_applied_once_the_hold_ends() -> None:
    """While its owner holds it back (clients are busy), the thread applies nothing; a read
    of one index applies that index's records itself; once the hold ends, the rest are
    applied in order."""
    hold = threading.Event()
    hold.set()
    applied = Applied()
    applier = BackgroundApplier(applied, threading.RLock(), hold=hold.is_set)
    applier.submit(records(1, 2, 3))
    assert held_back(applier)
    assert applied.records == [] and applier.waiting == 3
    applier.settle(bytes([2]) * 16)
    assert [r["n"] for r in applied.records] == [2] and applier.waiting == 2
    hold.clear()
    assert applied.wait_for(3) == [2, 1, 3]
    applier.close()
    assert applier.waiting == 0


def test_a_backlog_past_its_bound_is_applied_down_to_half() -> None:
    """Held back for good, the thread still applies the oldest records once more wait than
    the bound (by count, or by the bytes they hold), until half that is left."""
    applied = Applied()
    applier = BackgroundApplier(applied, threading.RLock(), hold=lambda: True, backlog=4)
    applier.submit(records(1, 2, 3, 4))
    assert held_back(applier) and applied.records == []
    applier.submit(records(5))
    assert applied.wait_for(3) == [1, 2, 3]
    assert held_back(applier) and applier.waiting == 2
    applier.close()  # closing applies what is left
    assert applied.wait_for(5) == [1, 2, 3, 4, 5]

    applied = Applied()
    big = BackgroundApplier(applied, threading.RLock(), hold=lambda: True, backlog_bytes=1000)
    big.submit(records(1, 2, size=400))
    assert held_back(big)
    big.submit(records(3, size=400))  # 1,200 bytes wait: down to 500 at most
    assert applied.wait_for(2) == [1, 2]
    assert held_back(big) and big.waiting == 1
    big.close()


def test_records_past_the_limit_make_their_submitter_wait() -> None:
    """Records handed over faster than the thread applies them (held back, and slow) never
    hold more than APPLY_LIMIT times the backlog's bytes: the submitter waits for the thread
    to take them back under it; every record is still applied, in order."""
    released = threading.Semaphore(0)
    applied = Applied()

    def slow(record: dict[str, Any]) -> None:
        released.acquire()  # one record per release
        applied(record)

    applier = BackgroundApplier(slow, threading.RLock(), hold=lambda: True, backlog_bytes=1000)
    limit = storage.applier.APPLY_LIMIT * 1000
    first = list(range(1, limit // 400 + 1))
    applier.submit(records(*first, size=400))  # exactly the limit: no wait
    assert applier._queued_bytes <= limit
    more = [len(first) + 1, len(first) + 2, len(first) + 3]
    submitted = threading.Event()

    def submit_more() -> None:
        applier.submit(records(*more, size=400))  # past it
        submitted.set()

    threading.Thread(target=submit_more, daemon=True).start()
    assert not submitted.wait(0.2), "the submitter went on past the limit"
    for _ in range(4):
        released.release()
    assert submitted.wait(10), "the submitter still waits under the limit"
    assert applier._queued_bytes <= limit
    for _ in range(len(first) + len(more) - 4):
        released.release()
    applier.close()
    assert [r["n"] for r in applied.records] == first + more


def test_a_submitter_holding_the_files_lock_does_not_wait() -> None:
    """A submitter holding the files' lock goes on past the limit (the thread could not apply
    anything meanwhile): no deadlock."""
    lock = threading.RLock()
    applied = Applied()
    applier = BackgroundApplier(applied, lock, hold=lambda: True, backlog_bytes=1000)
    applier.submit(records(1, size=400))  # starts the thread
    with lock:
        applier.submit(records(2, 3, 4, 5, 6, size=400))
    assert applier.waiting >= 1
    applier.close()
    assert applied.wait_for(6) == [1, 2, 3, 4, 5, 6]


def test_a_checkpoint_is_asked_for_once_the_records_are_applied() -> None:
    """``caught_up`` lifts the hold until every record waiting is applied, then calls back
    (in the thread); with nothing waiting it calls back at once. ``drain`` applies
    everything too."""
    applied = Applied()
    applier = BackgroundApplier(applied, threading.RLock(), hold=lambda: True)
    called = threading.Event()
    applier.caught_up(called.set)
    assert called.is_set(), "nothing waited"
    applier.submit(records(1, 2, 3))
    assert held_back(applier)
    called.clear()
    applier.caught_up(called.set)
    assert called.wait(10)
    assert [r["n"] for r in applied.records] == [1, 2, 3]
    applier.submit(records(4))
    assert held_back(applier)
    applier.drain()
    assert [r["n"] for r in applied.records] == [1, 2, 3, 4]
    applier.close()


def test_a_record_whose_file_is_written_again_later_is_not_applied() -> None:
    """Held back while a slot is rewritten again and again, the thread writes the slot's
    file once, with its last bytes, and keeps every removal; a reader settling the index
    does the same. Records of other files or indexes are all applied."""
    slot, other = bytes([7]) * 16, bytes([8]) * 16

    def share(si: bytes, n: int, data: bytes) -> dict[str, Any]:
        return {"op": "share", "si": si, "n": n, "data": data}

    for by_reader in (False, True):
        hold = threading.Event()
        hold.set()
        applied = Applied()
        applier = BackgroundApplier(applied, threading.RLock(), hold=hold.is_set)
        applier.submit(
            [
                share(slot, 0, b"v1"),
                {"op": "meta", "si": slot, "data": b"m1"},
                share(other, 0, b"o"),
                share(slot, 0, b"v2"),
                share(slot, 1, b"w1"),
                {"op": "delete-share", "si": slot, "n": 1},
                share(slot, 0, b"v3"),
                {"op": "meta", "si": slot, "data": b"m2"},
            ]
        )
        assert held_back(applier)
        if by_reader:
            applier.settle(slot)
        hold.clear()
        applier.close()
        kept = [(r["op"], r.get("data")) for r in applied.records if r["si"] == slot]
        assert kept == [("delete-share", None), ("share", b"v3"), ("meta", b"m2")]
        assert [r["data"] for r in applied.records if r["si"] == other] == [b"o"]
        assert applier.waiting == 0


def test_a_slot_rewritten_while_held_back_keeps_one_record_waiting() -> None:
    """Held back while a slot is rewritten a thousand times (an fsync each), one record of
    it waits, holding one share's bytes: a listing of the slot lays one record over what it
    finds, and the records handed over count as done for a checkpoint waiting on them.
    Records of other shares, and removals, stay in their order."""
    slot = bytes([7]) * 16
    hold = threading.Event()
    hold.set()
    applied = Applied()
    applier = BackgroundApplier(applied, threading.RLock(), hold=hold.is_set)
    for i in range(1000):
        applier.submit([{"op": "share", "si": slot, "n": 0, "data": b"%04d" % i}])
    assert held_back(applier)
    assert [r["data"] for r in applier.pending(slot) or []] == [b"0999"]
    assert applier.waiting == 1 and applier._queued_bytes == 4
    caught_up = threading.Event()
    applier.caught_up(caught_up.set)  # applies the one left, not a thousand
    assert caught_up.wait(10)
    assert [r["data"] for r in applied.records] == [b"0999"]
    hold.set()
    applier.submit([{"op": "delete-share", "si": slot, "n": 1}])
    applier.submit([{"op": "share", "si": slot, "n": 0, "data": b"new"}])
    applier.submit([{"op": "share", "si": slot, "n": 1, "data": b"one"}])
    assert [(r["op"], r.get("data")) for r in applier.pending(slot) or []] == [
        ("delete-share", None),
        ("share", b"new"),
        ("share", b"one"),
    ]
    hold.clear()
    applier.close()
    assert [r.get("data") for r in applied.records] == [b"0999", None, b"new", b"one"]


def test_a_held_thread_is_not_woken_by_records_passed_over() -> None:
    """Each fsync rewrites its directory's slot, and the record it hands over passes over
    the one before. A thread held back sleeps through that: it is woken by work or by a
    hold's recheck, not once per fsync (each wake-up took the interpreter's lock from the
    reactor thread just as it sent the fsync's answer)."""
    slot = bytes([7]) * 16
    asked = [0]

    def hold() -> bool:
        asked[0] += 1
        return True

    applier = BackgroundApplier(Applied(), threading.RLock(), hold=hold)
    # A new object's share first (a fold's), waiting at the head of the queue.
    applier.submit([{"op": "share", "si": SI, "n": 0, "data": b"object"}])
    assert held_back(applier)
    before = asked[0]
    started = time.monotonic()
    for i in range(100):
        applier.submit([{"op": "share", "si": slot, "n": 0, "data": b"%04d" % i}])
        time.sleep(0.001)  # the reactor thread lets go of the interpreter between fsyncs
    rechecks = (time.monotonic() - started) / storage.applier.HOLD_RECHECK
    assert asked[0] - before <= rechecks + 2  # its own rechecks only, not 100
    assert applier.waiting == 2
    # The records passed over wait in the queue, behind the object's, for the thread to
    # pass them, without their shares: only the records left to write hold their bytes
    # (a sustained fsync stream kept some 14 MiB of superseded directory shares so).
    assert sum(len(r.get("data", b"")) for r in applier._queue) == len(b"object0099")
    applier.hold = lambda: False
    applier.close()


def test_a_reader_waiting_for_the_files_goes_before_the_next_record() -> None:
    """While the thread applies a slow record, a read of another index waits for the files'
    lock; once that record is done the reader goes first (applying its index's record),
    and only then does the thread take its next one."""
    started, gate = threading.Event(), threading.Event()
    applied = Applied()

    def slow(record: dict[str, Any]) -> None:
        if record["n"] == 1:
            started.set()
            gate.wait(10)
        applied(record)

    applier = BackgroundApplier(slow, threading.RLock())
    applier.submit(records(1, 2, 3, 4, 5))
    assert started.wait(10)
    reader = threading.Thread(target=applier.settle, args=(bytes([5]) * 16,))
    reader.start()
    for _ in range(1000):  # the reader is waiting for the lock
        with applier._cond:
            if applier._callers:
                break
        threading.Event().wait(0.01)
    gate.set()
    reader.join(10)
    assert applied.wait_for(5) == [1, 5, 2, 3, 4]
    applier.close()


def test_caught_up_needs_only_the_records_handed_over_before_it() -> None:
    """Records keep coming while clients work: ``caught_up`` calls back once the records
    handed over before it are applied, while a later one is still being applied."""
    gate = threading.Event()
    applied = Applied()

    def slow(record: dict[str, Any]) -> None:
        if record["n"] == 4:
            gate.wait(10)
        applied(record)

    applier = BackgroundApplier(slow, threading.RLock(), hold=lambda: True)
    applier.submit(records(1, 2, 3))
    assert held_back(applier)
    called = threading.Event()
    applier.caught_up(called.set)
    applier.submit(records(4, 5))
    assert called.wait(10)
    assert [r["n"] for r in applied.records] == [1, 2, 3]
    gate.set()
    applier.close()
    assert applied.wait_for(5) == [1, 2, 3, 4, 5]


def test_a_checkpoint_falling_due_keeps_what_the_thread_has_not_written(tmp_path: Path) -> None:
    """A checkpoint that does not wait for the thread (one falling due while clients work)
    flushes what is written and leaves in the log exactly the records still waiting: a
    crash right after it finds every change. Four times the backlog waiting, it waits."""
    server = open_server(tmp_path)
    backend = server.backend
    applier = backend._files.applier
    assert applier is not None
    applier.hold = lambda: True
    slots = [bytes([i]) * 16 for i in range(1, 6)]
    for n, si in enumerate(slots):
        vectors = {0: Vectors(write=(WriteVector(0, b"slot %d" % n),))}
        assert server.read_test_write(si, WE, RENEW, CANCEL, vectors, ()).success
    assert held_back(applier)
    waiting = applier.waiting
    backend.checkpoint(everything=False)
    assert applier.waiting == waiting and not share_file(tmp_path, slots[0], 0).exists()
    assert len(list(backend._log.records())) == waiting
    restarted = StorageServer(DiskBackend(tmp_path), Clock())  # the first never closed
    for n, si in enumerate(slots):
        assert restarted.read_mutable(si, 0, 0, 6) == b"slot %d" % n
    applier._backlog = 1  # now far behind
    backend.checkpoint(everything=False)
    assert applier.waiting == 0 and backend._log.empty
    assert share_file(tmp_path, slots[4], 0).read_bytes() == b"slot 4"
    backend.close()


def test_reading_a_share_leaves_its_index_metadata_waiting(tmp_path: Path) -> None:
    """A large share (renamed into place, not logged) is read back while its lease's
    record waits: the read does not write the metadata file on the reader's thread; a
    slot's share rewritten meanwhile is read from what was written last."""
    server = open_server(tmp_path)
    applier = server.backend._files.applier
    assert applier is not None
    applier.hold = lambda: True
    data = bytes(range(256)) * (storage.disk.LOGGED_SHARE_BYTES // 256 + 16)  # renamed in place
    server.allocate_buckets(SI2, frozenset({0}), len(data), UPLOAD, RENEW, CANCEL)
    assert server.write_immutable(SI2, 0, UPLOAD, 0, data).finished
    assert held_back(applier)
    metadata = share_file(tmp_path, SI2, 0).parent / "metadata.cbor"
    assert server.read_immutable(SI2, 0, 10, 5) == data[10:15]
    assert not metadata.exists(), "the read applied the lease's record"
    applier.hold = lambda: False
    server.backend.close()
    assert metadata.exists()


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="no thread priorities here")
def test_the_applying_thread_yields_to_the_reactor_and_clients() -> None:
    """Records are applied by a thread APPLY_NICE nicer than the process (at most 19), so
    that on a busy machine it gets a fraction of the cores the reactor thread and clients
    get; the thread that submits keeps its own priority."""
    seen: list[int] = []

    def apply(record: dict[str, Any]) -> None:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    applier = BackgroundApplier(apply, threading.RLock())
    applier.submit(records(1))
    applier.close()
    assert seen == [min(19, before + APPLY_NICE)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def _one_step_at_a_time(numbers: set[int], records: list[dict[str, Any]]) -> set[int]:
    out = set(numbers)
    for record in records:
        if record["op"] == "share":
            out.add(record["n"])
        elif record["op"] == "delete-share":
            out.discard(record["n"])
        elif record["op"] == "delete-index":
            out.clear()
    return out


_OPS = st.one_of(
    st.builds(lambda n: {"op": "share", "n": n}, st.integers(0, 5)),
    st.builds(lambda n: {"op": "delete-share", "n": n}, st.integers(0, 5)),
    st.just({"op": "delete-index"}),
    st.just({"op": "metadata"}),
)


@given(st.sets(st.integers(0, 5)), st.lists(_OPS, max_size=12))
def test_pending_records_laid_over_a_listing_give_what_applying_them_would(
    listed: set[int], records: list[dict[str, Any]]
) -> None:
    """The share numbers a listing shows once a slot's pending records are laid over it
    are those that applying the records one by one leaves, with or without removals
    among them."""
    numbers = set(listed)
    lay_over_listing(numbers, records)
    assert numbers == _one_step_at_a_time(listed, records)


def test_hundreds_of_pending_writes_are_laid_over_a_listing() -> None:
    """A held-back slot's writes (one record each, several share numbers, other ops between)
    add their share numbers to what the directory listed."""
    records = [{"op": "share", "n": i % 3} for i in range(500)] + [{"op": "metadata"}]
    numbers = {7}
    lay_over_listing(numbers, records)
    assert numbers == {0, 1, 2, 7}
