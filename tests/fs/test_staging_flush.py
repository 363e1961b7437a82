"""Staged files written back to disk while they are written, in threads.

A CLOSE is acknowledged once the staged bytes are fsynced. So that this fsync
does not have a whole file's dirty pages to write, a staged file starts the
flush-behind of what was written every ``FLUSH_BEHIND_BYTES``, and ``presync`` fsyncs
in a thread before the CLOSE's own fsync. These tests drive the "threads" by
hand (:class:`ManualThreads`) or use the reactor's real thread pool, and check
what users depend on: the bytes are intact and fsynced, an error is never
swallowed, a discard while a thread uses the file is safe, the quota still
holds, and nothing (descriptors, threads) is left behind.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import hashlib
import os
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from gateway.fs import flushing, staging
from gateway.fs.errors import NoSpace
from gateway.fs.staging import StagedFile, StagingArea
from gateway.threads import reactor_threads
from tests.fs.support import ManualThreads, recorded

T = TypeVar("T")
KiB = 1024
CHUNK = 64 * KiB  # FLUSH_BEHIND_BYTES in these tests


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flush-behind every 64 KiB, and presync from 64 KiB, so tests stay small."""
    monkeypatch.setattr(staging, "FLUSH_BEHIND_BYTES", CHUNK)
    monkeypatch.setattr(staging, "PRESYNC_BYTES", CHUNK)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int, int]]]:
    """Every flush-behind started (descriptor, offset, length); the real call still runs."""
    recorded: list[tuple[int, int, int]] = []
    real = staging.start_flush

    def spy(fd: int, offset: int, length: int) -> None:
        recorded.append((fd, offset, length))
        real(fd, offset, length)

    monkeypatch.setattr(staging, "start_flush", spy)
    yield recorded


def descriptor_open(fd: int) -> bool:
    """Whether ``fd`` is an open descriptor of this process."""
    try:
        os.fstat(fd)
    except OSError as e:
        assert e.errno == errno.EBADF
        return False
    return True


def test_flush_behind_starts_every_chunk_one_call_at_a_time(
    tmp_path: Path, calls: list[tuple[int, int, int]]
) -> None:
    """A call starts once a chunk is written; while it runs, later writes gather for the next."""
    threads = ManualThreads()
    area = StagingArea(tmp_path / "staging", quota=1 << 20, spare_files=0)
    staged = area.create(threads)
    staged.write(0, b"a" * (CHUNK // 2))
    assert not threads.queue
    staged.write(CHUNK // 2, b"b" * (CHUNK // 2))
    assert len(threads.queue) == 1 and area.background_calls == 1
    for i in range(1, 4):  # three more chunks while the first call has not run
        staged.write(i * CHUNK, b"c" * CHUNK)
    assert len(threads.queue) == 1
    threads.run_next()
    assert calls == [(staged.fd, 0, CHUNK)]
    assert len(threads.queue) == 1  # the next call starts as the first one returns
    threads.run_next()
    assert calls[1] == (staged.fd, CHUNK, 3 * CHUNK)
    assert not threads.queue and area.background_calls == 0
    assert staged.read(0, 4 * CHUNK) == b"a" * (CHUNK // 2) + b"b" * (CHUNK // 2) + b"c" * (
        3 * CHUNK
    )


def test_without_threads_nothing_runs_in_the_background(
    tmp_path: Path, calls: list[tuple[int, int, int]]
) -> None:
    """A staged file created without a thread runner leaves everything to the final fsync."""
    area = StagingArea(tmp_path / "staging", quota=1 << 20, spare_files=0)
    staged = area.create()
    staged.write(0, b"x" * (4 * CHUNK))
    Deferred.fromCoroutine(staged.presync())  # returns at once
    staged.fsync()
    assert calls == [] and area.background_calls == 0
    assert staged.read(0, 4 * CHUNK) == b"x" * (4 * CHUNK)


def test_presync_waits_for_flush_behind_then_fsyncs_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLOSE's presync fsyncs the whole file in a thread after the flush-behind under way;
    the bytes read back intact."""
    threads = ManualThreads()
    area = StagingArea(tmp_path / "staging", quota=1 << 20, spare_files=0)
    staged = area.create(threads)
    data = random.Random(1).randbytes(5 * CHUNK + 123)
    for offset in range(0, len(data), 1000):
        staged.write(offset, data[offset : offset + 1000])
    fsynced = recorded(monkeypatch, "fsync")
    done: list[object] = []
    Deferred.fromCoroutine(staged.presync()).addBoth(done.append)
    assert len(threads.queue) == 1 and not done  # the flush-behind under way comes first
    threads.run_next()
    assert fsynced == [] and len(threads.queue) == 1 and not done
    threads.run_next()
    assert fsynced == [staged.fd] and done == [None]
    staged.fsync()
    assert staged.read(0, len(data) + 10) == data
    assert area.background_calls == 0


def test_a_small_file_is_not_presynced(tmp_path: Path) -> None:
    """Below PRESYNC_BYTES nothing runs in a thread at CLOSE: the CLOSE's own fsync (if the
    journal does not hold the bytes instead) is short."""
    threads = ManualThreads()
    area = StagingArea(tmp_path / "staging", quota=1 << 20, spare_files=0)
    staged = area.create(threads)
    staged.write(0, b"s" * (CHUNK - 1))
    done: list[object] = []
    Deferred.fromCoroutine(staged.presync()).addBoth(done.append)
    assert done == [None] and not threads.queue


def test_discard_before_a_queued_call_runs(
    tmp_path: Path, calls: list[tuple[int, int, int]]
) -> None:
    """The call does nothing once it runs; the descriptor is closed when it returns; the file
    and its quota are gone at once."""
    threads = ManualThreads()
    area = StagingArea(tmp_path / "staging", quota=1 << 20, spare_files=0)
    staged = area.create(threads)
    staged.write(0, b"z" * CHUNK)
    assert len(threads.queue) == 1
    fd = staged.fd
    staged.discard()
    assert not staged.path.exists() and area.used == 0
    assert descriptor_open(fd)  # a thread may still be handed it
    threads.run_all()
    assert calls == [] and not descriptor_open(fd)
    assert area.background_calls == 0


def test_discard_while_a_thread_writes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A discard while a thread is inside the flush-behind call keeps the descriptor open (so
    its number cannot be reused under the thread) until the call returns."""
    entered, release = threading.Event(), threading.Event()
    seen: list[bool] = []

    def slow(fd: int, offset: int, length: int) -> None:
        entered.set()
        assert release.wait(30)
        seen.append(descriptor_open(fd))

    monkeypatch.setattr(staging, "start_flush", slow)
    threads = ManualThreads()
    area = StagingArea(tmp_path / "staging", quota=1 << 20, spare_files=0)
    staged = area.create(threads)
    staged.write(0, b"y" * CHUNK)
    call, result = threads.queue.pop(0)
    outcome: list[Any] = []
    worker = threading.Thread(target=lambda: outcome.append(call()))
    worker.start()
    assert entered.wait(30)
    fd = staged.fd
    staged.discard()
    assert descriptor_open(fd) and not staged.path.exists()
    release.set()
    worker.join(30)
    assert seen == [True]
    result.callback(outcome[0])  # the reactor learns the call returned
    assert not descriptor_open(fd)
    assert area.background_calls == 0


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_an_error_of_a_background_sync_fails_the_final_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """An fsync in a thread that fails may leave nothing for a later fsync to report; the
    staged file's fsync raises it (same errno: a full disk stays "disk full")."""
    threads = ManualThreads()
    area = StagingArea(tmp_path / "staging", quota=1 << 20, spare_files=0)
    staged = area.create(threads)
    staged.write(0, b"q" * 100)
    staged.truncate(CHUNK)  # big enough to be presynced, small enough for no flush-behind
    real_fsync = os.fsync

    def failing(fd: int) -> None:
        if fd == staged.fd and threading.current_thread() is not threading.main_thread():
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing)

    def in_a_thread() -> None:
        call, result = threads.queue.pop(0)
        outcome: list[Any] = []
        worker = threading.Thread(target=lambda: outcome.append(call()))
        worker.start()
        worker.join(30)
        result.callback(outcome[0])

    done: list[object] = []
    Deferred.fromCoroutine(staged.presync()).addBoth(done.append)
    in_a_thread()
    assert done == [None]  # presync never raises...
    with pytest.raises(OSError) as raised:
        staged.fsync()  # ...the fsync that acknowledges does
    assert raised.value.errno == code
    with pytest.raises(OSError):
        staged.fsync()  # and keeps doing so
    staged.discard()


def test_a_call_that_cannot_be_scheduled_is_left_to_the_final_fsync(tmp_path: Path) -> None:
    """When no thread can take a call (a stopping pool), the flush-behind is skipped: no error,
    the bytes are intact, the final fsync does the work."""

    def refuse(call: Callable[[], T], /) -> Deferred[T]:
        raise RuntimeError("the thread pool is stopping")

    area = StagingArea(tmp_path / "staging", quota=1 << 20, spare_files=0)
    staged = area.create(refuse)
    staged.write(0, b"w" * (3 * CHUNK))
    Deferred.fromCoroutine(staged.presync())
    staged.fsync()
    assert staged.read(0, 3 * CHUNK) == b"w" * (3 * CHUNK)
    assert area.background_calls == 0 and not staged.background_busy


def test_quota_still_holds_with_flush_behind(
    tmp_path: Path, calls: list[tuple[int, int, int]]
) -> None:
    """A write past the quota is refused with NoSpace and starts no flush-behind; what was
    staged stays; a discard gives everything back."""
    threads = ManualThreads()
    area = StagingArea(tmp_path / "staging", quota=3 * CHUNK, spare_files=0)
    staged = area.create(threads)
    staged.write(0, b"1" * (2 * CHUNK))
    threads.run_all()
    assert calls == [(staged.fd, 0, 2 * CHUNK)]
    with pytest.raises(NoSpace, match="staging quota"):
        staged.write(2 * CHUNK, b"2" * (2 * CHUNK))
    assert not threads.queue and area.used == 2 * CHUNK and staged.size == 2 * CHUNK
    other = area.create(threads)
    other.write(0, b"3" * CHUNK)
    with pytest.raises(NoSpace):
        other.write(CHUNK, b"4")
    threads.run_all()
    assert staged.read(0, 3 * CHUNK) == b"1" * (2 * CHUNK)
    staged.discard()
    other.discard()
    assert area.used == 0 and list(area.directory.iterdir()) == []


def test_without_sync_file_range_flush_behind_falls_back_to_fdatasync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where ``sync_file_range`` is missing or refused (ENOSYS), ``fdatasync`` does the
    flush-behind, from then on."""
    synced: list[int] = []
    tried: list[int] = []

    def refused(fd: int, offset: int, length: int, flags: int) -> int:
        tried.append(fd)
        ctypes.set_errno(errno.ENOSYS)
        return -1

    monkeypatch.setattr(flushing, "_fdatasync", synced.append)
    monkeypatch.setattr(flushing, "_sync_file_range", refused)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        flushing.start_flush(fd, 0, 10)
        flushing.start_flush(fd, 10, 10)
    finally:
        os.close(fd)
    assert tried == [fd] and synced == [fd, fd]
    assert flushing._sync_file_range is None


@pytest.mark.skipif(flushing._sync_file_range is None, reason="no sync_file_range here")
def test_sync_file_range_starts_flush_behind_without_fdatasync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Linux the flush-behind is started with ``sync_file_range``, not a full fdatasync."""
    synced: list[int] = []
    monkeypatch.setattr(flushing, "_fdatasync", synced.append)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, b"d" * CHUNK, 0)
        flushing.start_flush(fd, 0, CHUNK)
    finally:
        os.close(fd)
    assert synced == []


def _open_descriptors() -> set[str]:
    """The process's open descriptors, once the garbage is collected: objects earlier tests
    left behind close theirs when collected (a redo log, a staged file), and a collection in
    the middle of a test would otherwise make its count fall."""
    gc.collect()
    return set(os.listdir("/proc/self/fd"))


class RealThreadsTests(TestCase):
    """The reactor's own thread pool, as the gateway uses it."""

    def setUp(self) -> None:
        patch = pytest.MonkeyPatch()
        patch.setattr(staging, "FLUSH_BEHIND_BYTES", CHUNK)
        patch.setattr(staging, "PRESYNC_BYTES", CHUNK)
        self.addCleanup(patch.undo)

    async def test_many_files_leave_no_descriptor_or_thread_behind(self) -> None:
        """Two hundred files, every other one discarded while its flush-behind may be queued or
        running, the others presynced and fsynced and read back intact: afterwards (with the
        spare files dropped) no descriptor is open and every new thread is one of the reactor
        pool's."""
        if not os.path.isdir("/proc/self/fd"):
            self.skipTest("needs /proc/self/fd")
        threads = reactor_threads(reactor)
        assert threads is not None
        area = StagingArea(Path(self.mktemp()).absolute(), quota=1 << 30)
        warm = area.create(threads)  # the pool's first workers start here
        warm.write(0, b"w" * (2 * CHUNK))
        await warm.presync()
        warm.discard()
        await area.idle()
        area.drop_spares()
        descriptors = _open_descriptors()
        before = set(threading.enumerate())
        rng = random.Random(7)
        kept: list[tuple[StagedFile, str]] = []
        for i in range(200):
            staged = area.create(threads)
            data = rng.randbytes(rng.randrange(CHUNK, 4 * CHUNK))
            for offset in range(0, len(data), 32 * KiB):
                staged.write(offset, data[offset : offset + 32 * KiB])
            if i % 2:
                staged.discard()
                continue
            await staged.presync()
            staged.fsync()
            assert staged.read(0, len(data)) == data
            kept.append((staged, hashlib.sha256(data).hexdigest()))
            if i % 10 == 0:
                await area.idle()  # let discarded files' calls finish now and then too
        for staged, digest in kept:
            assert hashlib.sha256(staged.read(0, staged.size)).hexdigest() == digest
            staged.discard()
        await area.idle()
        assert 0 < area.spares <= staging.SPARE_FILES
        area.drop_spares()  # what the node does once no upload is pending
        assert area.background_calls == 0 and area.used == 0
        assert list(area.directory.iterdir()) == []
        after = _open_descriptors()
        assert after - descriptors == set() and len(after) <= len(descriptors)
        pool = reactor.getThreadPool()  # type: ignore[attr-defined]
        new = set(threading.enumerate()) - before
        assert all(t.name.startswith("PoolThread-") for t in new), new
        assert len(new) <= pool.max
