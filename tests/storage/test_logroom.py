"""The storage log grows in the room thread, ahead of its records, and loses nothing."""

from __future__ import annotations

import errno
import os
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from storage import redolog
from storage.disk import DiskBackend
from storage.redolog import EXTEND_BYTES, ROOM_AHEAD, RedoLog

WAIT = 30.0


def room_thread() -> bool:
    """Whether the caller runs in the room thread."""
    return threading.current_thread().name == "redo-log-room"


def growing_log(path: Path) -> RedoLog:
    """A log as the storage opens its own: fail-stop, buffered, grown ahead."""
    return RedoLog(path, fail_stop=True, buffered=True, grow_ahead=True)


def crash_and_read(log: RedoLog) -> tuple[list[dict[str, Any]], int]:
    """The records and damaged bytes the next opening finds after a kill -9."""
    log._release()
    reopened = RedoLog(log.path, repair=False)
    try:
        return list(reopened.records()), reopened.damaged_bytes
    finally:
        reopened.close()


def test_the_file_grows_before_the_records_need_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once less than ROOM_AHEAD is left, the room thread adds a megabyte of zeros; records
    that fit in it are written without the writer growing the file."""
    log = growing_log(tmp_path / "log")
    log.append({"data": b"a" * (EXTEND_BYTES - ROOM_AHEAD + 100)})  # grows to 1 MiB itself
    assert log.grown.wait(WAIT)
    assert log.allocated == 2 * EXTEND_BYTES == (tmp_path / "log").stat().st_size
    growers: list[str] = []
    extend = log._extend

    def watched(end: int) -> None:
        growers.append(threading.current_thread().name)
        extend(end)

    monkeypatch.setattr(log, "_extend", watched)
    written = [{"n": i, "data": os.urandom(4000)} for i in range(300)]  # 1.2 MB more
    for record in written:
        log.append(record)
    assert log.grown.wait(WAIT)
    assert growers == ["redo-log-room"], "the writer never grew the file"
    assert log.allocated == 3 * EXTEND_BYTES and log.allocated - log.size >= ROOM_AHEAD
    records, damaged = crash_and_read(log)
    assert records[1:] == written and damaged == 0


def test_records_written_while_the_file_grows_empties_and_is_rewritten_are_all_kept(
    tmp_path: Path,
) -> None:
    """Appends, flushes, resets and a compaction race the room thread: the log read after a
    crash holds exactly the records since the last reset, in order, undamaged."""
    rng = random.Random(7)
    log = growing_log(tmp_path / "log")
    kept: list[dict[str, Any]] = []
    for i in range(3000):
        record = {"n": i, "data": rng.randbytes(rng.randrange(1, 24_000))}
        log.append(record, sync=i % 3 == 0)
        kept.append(record)
        if i % 700 == 699:
            log.sync()
            log.reset()
            kept = []
        elif i == 1500:
            log.rewrite(list(kept))
    log.sync()
    assert log.grown.wait(WAIT)
    assert log.failed is None
    records, damaged = crash_and_read(log)
    assert records == kept and damaged == 0


def test_a_room_thread_that_cannot_grow_the_file_leaves_it_to_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk in the room thread fails nothing: the writer grows the file when a record
    needs it (and would meet the error itself)."""
    write = redolog.pwrite_all

    def full_for_the_room_thread(fd: int, data: bytes | memoryview, offset: int) -> None:
        if room_thread():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(fd, data, offset)

    monkeypatch.setattr(redolog, "pwrite_all", full_for_the_room_thread)
    log = growing_log(tmp_path / "log")
    written = [{"n": i, "data": os.urandom(50_000)} for i in range(60)]  # ~3 MiB
    for record in written:
        log.append(record)
        assert log.grown.wait(WAIT)
    assert log.failed is None
    assert log.allocated == 3 * EXTEND_BYTES, "grown by the writer, as needed"
    records, damaged = crash_and_read(log)
    assert records == written and damaged == 0


def test_a_failed_flush_in_the_room_thread_stops_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The room thread's flush reports the write-back errors of the whole file: when it
    fails, nothing written since is said durable (the writer's next flush refuses)."""
    log = growing_log(tmp_path / "log")
    log.append({"data": b"a" * 100})
    real = os.fdatasync

    def failing_in_the_room_thread(fd: int) -> None:
        if room_thread():
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd)

    monkeypatch.setattr(redolog.os, "fdatasync", failing_in_the_room_thread)
    log.append({"data": b"b" * (EXTEND_BYTES - ROOM_AHEAD)}, sync=False)
    assert log.grown.wait(WAIT)
    assert log.failed is not None and log.failed.errno == errno.EIO
    with pytest.raises(OSError, match="an earlier flush of log failed"):
        log.sync()
    monkeypatch.undo()
    log.close()


def test_the_storage_grows_its_log_ahead(tmp_path: Path) -> None:
    """The disk backend's own log is one that grows ahead."""
    backend = DiskBackend(tmp_path)
    try:
        assert backend._log._grow
    finally:
        backend.close()
