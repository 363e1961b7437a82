"""The disk backend's redo log: changes logged before they are applied survive a crash."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import cbor2
import pytest

from storage import disk, inplace, redolog
from storage.backend import IndexMetadata, ShareKind
from storage.disk import DiskBackend
from storage.leases import Lease
from storage.redolog import RedoLog
from tests.storage.values import SI

OTHER_SI = b"\x07" * 16
META = IndexMetadata(ShareKind.MUTABLE, (Lease(b"r" * 32, b"c" * 32, 1000),), b"w" * 32)


def logged(path: Path) -> list[dict[str, object]]:
    """The records a log file holds, as the next opening finds them."""
    log = RedoLog(path, repair=False)
    try:
        return list(log.records())
    finally:
        log.close()


def crashed(log: RedoLog) -> None:
    """Drop a log as a kill -9 would: its file as it is (a clean close leaves it in the
    first format)."""
    log._release()


def crash(backend: DiskBackend) -> None:
    """Drop a backend without its closing checkpoint, as a kill -9 would."""
    crashed(backend._log)


def test_record_logged_but_not_applied_is_applied_at_opening(tmp_path: Path) -> None:
    """A crash between the log's flush and the file write loses nothing: opening replays it."""
    DiskBackend(tmp_path).close()
    log = RedoLog(tmp_path / "redo.log")
    log.append({"op": "meta", "si": SI, "data": disk._encode_metadata(META)})
    log.append({"op": "share", "si": SI, "n": 3, "data": b"new contents"})
    log.close()
    backend = DiskBackend(tmp_path)
    assert backend.list_shares(SI) == {3}
    assert backend.read_share(SI, 3, 0, 100) == b"new contents"
    assert backend.get_metadata(SI) == META
    assert logged(tmp_path / "redo.log") == [], "opening checkpoints and empties the log"


def test_torn_last_record_is_ignored(tmp_path: Path) -> None:
    """A record cut short by a crash (never acknowledged) is dropped; earlier ones apply."""
    DiskBackend(tmp_path).close()
    log = RedoLog(tmp_path / "redo.log")
    log.append({"op": "share", "si": SI, "n": 0, "data": b"kept"})
    log.append({"op": "share", "si": SI, "n": 0, "data": b"torn" * 100})
    log.close()
    with open(tmp_path / "redo.log", "r+b") as f:  # the last 50 bytes never reached the disk
        f.seek(log.size - 50)
        f.write(bytes(50))
    assert DiskBackend(tmp_path).read_share(SI, 0, 0, 1000) == b"kept"


def test_torn_in_place_write_is_repaired_by_replay(tmp_path: Path) -> None:
    """A share file half rewritten when the process died is rewritten whole from the log."""
    backend = DiskBackend(tmp_path)
    backend.write_share(SI, 1, [(0, b"A" * 5000)], None)
    backend.write_share(SI, 1, [(0, b"B" * 5000)], None)
    crash(backend)
    share = tmp_path / "shares" / disk.si_b2a(SI)[:2] / disk.si_b2a(SI) / "1"
    share.write_bytes(b"B" * 100 + b"A" * 900)  # torn: part new, part old, short
    assert DiskBackend(tmp_path).read_share(SI, 1, 0, 10000) == b"B" * 5000


def test_deletions_replay_in_order(tmp_path: Path) -> None:
    """A logged write then deletion replays to nothing; a later write comes back."""
    backend = DiskBackend(tmp_path)
    backend.put_metadata(SI, META)
    backend.write_share(SI, 0, [(0, b"x")], None)
    backend.delete_index(SI)
    backend.put_metadata(OTHER_SI, META)
    backend.write_share(OTHER_SI, 2, [(0, b"y")], None)
    backend.delete_share(OTHER_SI, 2)
    backend.write_share(OTHER_SI, 2, [(0, b"z")], None)
    crash(backend)
    reopened = DiskBackend(tmp_path)
    assert reopened.list_shares(SI) == frozenset() and reopened.get_metadata(SI) is None
    assert reopened.read_share(OTHER_SI, 2, 0, 10) == b"z"


def test_immutable_share_after_a_logged_deletion_survives_replay(tmp_path: Path) -> None:
    """An index deleted (logged) and then uploaded again keeps the new share after a crash."""
    backend = DiskBackend(tmp_path)
    backend.create_incoming(SI, 0)
    backend.write_incoming(SI, 0, 0, b"old")
    backend.finish_incoming(SI, 0, 3)
    backend.delete_index(SI)
    backend.create_incoming(SI, 0)
    backend.write_incoming(SI, 0, 0, b"new")
    backend.finish_incoming(SI, 0, 3)
    crash(backend)
    assert DiskBackend(tmp_path).read_share(SI, 0, 0, 10) == b"new"


def test_checkpoint_when_the_log_grows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The log never grows past the checkpoint size by more than one record."""
    backend = DiskBackend(tmp_path)
    monkeypatch.setattr(inplace, "CHECKPOINT_BYTES", 64 * 1024)
    for i in range(40):
        backend.write_share(SI, 0, [(0, bytes([i]) * 8192)], None)
        assert backend._log.size < 64 * 1024 + 9000
    backend.close()
    assert logged(tmp_path / "redo.log") == []
    assert DiskBackend(tmp_path).read_share(SI, 0, 0, 1) == bytes([39])


def test_log_file_is_private(tmp_path: Path) -> None:
    """The redo log holds share bytes: 0600 like every share file."""
    DiskBackend(tmp_path).write_share(SI, 0, [(0, b"x")], None)
    assert (tmp_path / "redo.log").stat().st_mode & 0o777 == 0o600


def test_small_immutable_share_is_completed_through_the_log(tmp_path: Path) -> None:
    """A small finished upload is in the log: lost from its file, it comes back at opening."""
    backend = DiskBackend(tmp_path)
    backend.create_incoming(SI, 0)
    backend.write_incoming(SI, 0, 0, b"small share")
    backend.finish_incoming(SI, 0, 11)
    assert (tmp_path / "redo.log").stat().st_size > 11
    crash(backend)
    share = tmp_path / "shares" / disk.si_b2a(SI)[:2] / disk.si_b2a(SI) / "0"
    share.unlink()
    reopened = DiskBackend(tmp_path)
    assert reopened.read_share(SI, 0, 0, 100) == b"small share"
    assert not list((tmp_path / "shares" / "incoming").glob("*.0"))


def test_large_immutable_share_is_renamed_into_place(tmp_path: Path) -> None:
    """A share above the logged size is fsynced and renamed; the log does not carry it."""
    backend = DiskBackend(tmp_path)
    size = disk.LOGGED_SHARE_BYTES + 1
    backend.create_incoming(SI, 1)
    backend.write_incoming(SI, 1, 0, b"L" * size)
    backend.finish_incoming(SI, 1, size)
    assert (tmp_path / "redo.log").stat().st_size < size
    assert backend.read_share(SI, 1, size - 1, 10) == b"L"


def _many_shares(backend: DiskBackend, count: int) -> None:
    for number in range(count):
        si = bytes([number % 256, number // 256]) * 8
        backend.put_metadata(si, META)
        backend.write_share(si, 0, [(0, b"share %d" % number)], None)


def test_a_checkpoint_of_many_files_flushes_their_filesystem_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a burst of small changes (hundreds of new files and directories) a checkpoint
    is one ``syncfs`` of the filesystem, not a flush per file; the log is emptied and the
    files read back. A checkpoint of a few files flushes each of them instead."""
    if inplace._syncfs is None:
        pytest.skip("this system has no syncfs: every checkpoint flushes file by file")
    calls: list[int] = []
    real = inplace._syncfs

    def counted(fd: int) -> int:
        calls.append(fd)
        return real(fd)

    monkeypatch.setattr(inplace, "_syncfs", counted)
    backend = DiskBackend(tmp_path)
    calls.clear()
    _many_shares(backend, 100)
    backend.checkpoint()
    assert len(calls) == 1
    assert logged(tmp_path / "redo.log") == []
    backend.write_share(SI, 1, [(0, b"one more")], None)
    backend.checkpoint()
    assert len(calls) == 1, "a few files are flushed one by one"
    backend.close()
    reopened = DiskBackend(tmp_path)
    assert reopened.read_share(bytes([7, 0]) * 8, 0, 0, 100) == b"share 7"
    assert reopened.read_share(SI, 1, 0, 100) == b"one more"
    reopened.close()


def test_a_failed_filesystem_flush_keeps_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the filesystem's flush fails (a dying disk: EIO), the checkpoint raises and the
    log keeps every record, so the next opening replays them: nothing is lost."""
    if inplace._syncfs is None:
        pytest.skip("this system has no syncfs: every checkpoint flushes file by file")

    def failing(fd: int) -> int:
        import ctypes
        import errno

        ctypes.set_errno(errno.EIO)
        return -1

    backend = DiskBackend(tmp_path)
    _many_shares(backend, 100)
    size = (tmp_path / "redo.log").stat().st_size
    monkeypatch.setattr(inplace, "_syncfs", failing)
    with pytest.raises(OSError) as raised:
        backend.checkpoint()
    assert raised.value.errno == 5
    assert (tmp_path / "redo.log").stat().st_size == size
    crash(backend)
    monkeypatch.undo()
    reopened = DiskBackend(tmp_path)
    assert reopened.read_share(bytes([42, 0]) * 8, 0, 0, 100) == b"share 42"
    reopened.close()


def test_the_log_grows_by_zeros_written_ahead_and_they_are_not_damage(tmp_path: Path) -> None:
    """Records are written over zeros the file was extended with (a flush of a write inside
    the file commits no filesystem journal); reopening finds the records, the zeros after
    them are free space (nothing reported or cut), and new records follow the old."""
    path = tmp_path / "redo.log"
    log = RedoLog(path)
    log.append({"n": 1})
    log.append({"n": 2, "data": b"x" * 5000})
    assert path.stat().st_size == redolog.EXTEND_BYTES > log.size
    crashed(log)
    reopened = RedoLog(path)
    assert reopened.damaged_bytes == 0 and path.stat().st_size == redolog.EXTEND_BYTES
    assert [r["n"] for r in reopened.records()] == [1, 2]
    reopened.append({"n": 3, "data": b"y" * redolog.EXTEND_BYTES})  # past the end: grows
    assert path.stat().st_size == 2 * redolog.EXTEND_BYTES
    reopened.close()
    assert [r["n"] for r in RedoLog(path).records()] == [1, 2, 3]


def test_bytes_after_the_records_that_are_not_zeros_are_damage_and_cut(tmp_path: Path) -> None:
    """A torn record over the zeros is damage: reported, and cut by the writer's opening."""
    path = tmp_path / "redo.log"
    log = RedoLog(path)
    log.append({"n": 1})
    end = log.size
    crashed(log)
    assert log.epoch is not None
    with open(path, "r+b") as f:
        f.seek(end)
        # A record of the log's epoch: its head, the rest never written.
        f.write(redolog.MAGIC + log.epoch + b"\x00\x00\x10")
    assert RedoLog(path, repair=False).damaged_bytes == redolog.EXTEND_BYTES - end
    repaired = RedoLog(path)
    assert repaired.damaged_bytes == redolog.EXTEND_BYTES - end
    assert path.stat().st_size == end
    repaired.append({"n": 2})
    repaired.close()
    assert [r["n"] for r in RedoLog(path).records()] == [1, 2]


def test_a_checkpoint_due_is_asked_for_once_and_run_by_whoever_was_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``checkpoint_when_asked``, a log past the checkpoint size asks once, and keeps
    its records until the checkpoint runs; past CHECKPOINT_LIMIT times the size it
    checkpoints in the caller's thread all the same."""
    backend = DiskBackend(tmp_path)
    monkeypatch.setattr(inplace, "CHECKPOINT_BYTES", 64 * 1024)
    asked: list[int] = []
    backend.checkpoint_when_asked(lambda: asked.append(backend._log.size))
    for i in range(12):
        backend.write_share(SI, 0, [(0, bytes([i]) * 8192)], None)
    assert len(asked) == 1 and asked[0] >= 64 * 1024, "asked once"
    assert backend._log.size > 64 * 1024, "not checkpointed by the caller"
    backend.checkpoint()  # what the asked one runs
    assert backend._log.empty
    for i in range(12):
        backend.write_share(SI, 0, [(0, bytes([i]) * 8192)], None)
    assert len(asked) == 2, "asked again once the last one ran"
    for i in range(40):
        backend.write_share(SI, 0, [(0, bytes([i]) * 8192)], None)
        assert backend._log.size < inplace.CHECKPOINT_LIMIT * 64 * 1024 + 9000
    backend.close()
    assert DiskBackend(tmp_path).read_share(SI, 0, 0, 1) == bytes([39])


@pytest.mark.parametrize("fail_stop", [True, False], ids=["storage log", "journal"])
def test_after_a_failed_flush_a_fail_stop_log_says_nothing_is_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_stop: bool
) -> None:
    """A flush fails (EIO): the storage core's log (``fail_stop``) refuses every later
    flush, its own or another thread's, since the kernel may have dropped the pages it
    could not write; until its contents are replaced (a checkpoint's reset). A journal
    whose entries are published from memory trusts the next flush that succeeds."""
    log = RedoLog(tmp_path / "log", fail_stop=fail_stop)
    log.append({"n": 1}, sync=False)
    real = redolog.os.fdatasync

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(redolog.os, "fdatasync", broken)
    with pytest.raises(OSError, match="Input/output"):
        log.sync()
    monkeypatch.setattr(redolog.os, "fdatasync", real)
    log.append({"n": 2}, sync=False)
    if fail_stop:
        with pytest.raises(OSError, match="an earlier flush of log failed"):
            log.sync()
        with pytest.raises(OSError, match="an earlier flush"):
            log.sync_point()
        assert log.durable == 0
        log.reset()
        log.append({"n": 3})
        assert log.durable == log.appended
    else:
        log.sync()
        assert log.durable == log.appended
    log.close()


def test_a_buffered_log_writes_the_records_of_a_flush_with_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The storage core's log keeps records appended without a flush in memory: none is
    in the file until the flush, which writes them all with one ``pwrite``; a log opened
    again then finds them in order."""
    log = RedoLog(tmp_path / "log", buffered=True)
    log.append({"n": -1})  # (the file's room is written ahead once)
    writes: list[int] = []
    real = redolog.os.pwrite

    def counted(fd: int, data: bytes, offset: int) -> int:
        writes.append(len(data))
        return real(fd, data, offset)

    monkeypatch.setattr(redolog.os, "pwrite", counted)
    for n in range(6):
        log.append({"n": n}, sync=False)
    assert writes == []
    assert [r["n"] for r in RedoLog(tmp_path / "log", repair=False).records()] == [-1]
    log.sync()
    assert len(writes) == 1
    assert [r["n"] for r in RedoLog(tmp_path / "log", repair=False).records()] == [
        -1,
        *range(6),
    ]
    log.close()


def test_a_checkpoint_due_while_clients_are_busy_waits_for_them_to_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the applying thread is held back (clients busy) a log past the checkpoint
    size asks for no checkpoint, which would hold up their requests, until it reaches
    CHECKPOINT_WHILE_BUSY times the size; once they pause, the owner's ask_checkpoint
    asks. Nothing written meanwhile is lost."""
    monkeypatch.setattr(inplace, "CHECKPOINT_BYTES", 64 * 1024)
    backend = DiskBackend(tmp_path, background=True)
    busy = [True]
    backend.hold_applying(lambda: busy[0])
    asked: list[int] = []
    backend.checkpoint_when_asked(lambda: asked.append(backend._log.size))
    for i in range(12):
        backend.write_share(SI, 0, [(0, bytes([i]) * 8192)], None)
    assert backend._log.size > 64 * 1024 and asked == [], "put off while busy"
    assert backend.checkpoint_wanted
    backend.ask_checkpoint()
    assert asked == [], "still busy"
    busy[0] = False
    backend.ask_checkpoint()
    backend._files.settle_all()  # (the applying thread asks once it has caught up)
    assert len(asked) == 1 and not backend.checkpoint_wanted
    backend.checkpoint(everything=False)  # what the asked one runs
    busy[0] = True
    for i in range(40):
        backend.write_share(SI, 0, [(0, bytes([i]) * 8192)], None)
        if 64 * 1024 <= backend._log.size < inplace.CHECKPOINT_WHILE_BUSY * 64 * 1024:
            assert backend.checkpoint_wanted, "due, and not asked for while busy"
    assert not backend.checkpoint_wanted, "asked for past the bound"
    backend._files.settle_all()
    assert len(asked) == 2, "asked while busy once the log reached its bound"
    assert asked[1] >= inplace.CHECKPOINT_WHILE_BUSY * 64 * 1024
    backend.close()
    assert DiskBackend(tmp_path).read_share(SI, 0, 0, 1) == bytes([39])


def test_a_compaction_keeps_every_record_in_order_across_buffers(tmp_path: Path) -> None:
    """A log rewritten with records holding several buffers' worth (written a buffer at a
    time) reads back every record, in order, and its size is theirs."""
    log = RedoLog(tmp_path / "redo.log")
    records = [
        {"op": "share", "si": bytes([i]) * 16, "n": i, "data": bytes([i]) * 60_000}
        for i in range(3 * redolog.BUFFER_BYTES // 60_000 + 2)
    ]
    log.append({"op": "meta", "si": SI, "data": b"obsolete"})
    log.rewrite(records)
    size = log.size
    crashed(log)
    reopened = RedoLog(tmp_path / "redo.log")
    assert list(reopened.records()) == records
    assert size == sum(len(redolog._encode(r, reopened.epoch)) for r in records)
    reopened.close()


def test_a_log_dropped_without_closing_gives_its_descriptor_back(tmp_path: Path) -> None:
    """A log nobody closed (a journal read once, a test's crash) closes its file when it
    is collected, and one closed by hand is not closed twice; a compaction's new file is
    given back the same way."""
    path = tmp_path / "a.log"

    def open_on_it() -> int:
        """How many of this process's descriptors are open on the log's file."""
        count = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
            except OSError:
                continue  # (closed meanwhile)
        return count

    log = RedoLog(path)
    log.append({"op": "x"})
    log.rewrite([{"op": "y"}])
    assert open_on_it() == 1
    del log
    gc.collect()
    assert open_on_it() == 0
    closed = RedoLog(path)
    closed.close()
    kept = os.open(path, os.O_RDONLY)  # may reuse the closed number
    del closed
    gc.collect()
    assert open_on_it() == 1  # still open: the closed log's finalizer did not close it
    os.close(kept)
    assert [r["op"] for r in RedoLog(path, repair=False).records()] == ["y"]


def test_an_emptied_log_keeps_its_file_and_the_old_records_are_free_space(
    tmp_path: Path,
) -> None:
    """Emptying the log keeps the file and its room: records of a new epoch are written
    over the old ones without growing it, and the old records after them are never read
    back (nor called damage); the writer's next opening cuts them off."""
    path = tmp_path / "redo.log"
    log = RedoLog(path)
    for n in range(20):
        log.append({"n": n, "data": bytes([n]) * 3000})
    old_epoch = log.epoch
    log.reset()
    assert log.empty and log.epoch != old_epoch
    assert path.stat().st_size == redolog.EXTEND_BYTES, "the room is kept"
    assert logged(path) == [], "an emptied log holds nothing"
    log.append({"n": 100})
    log.append({"n": 101, "data": b"z" * 100})
    assert path.stat().st_size == redolog.EXTEND_BYTES, "written over the old records"
    crashed(log)
    reader = RedoLog(path, repair=False)
    assert [r["n"] for r in reader.records()] == [100, 101]
    assert reader.damaged_bytes == 0, "the old epoch's records are free space"
    reader.close()
    reopened = RedoLog(path)
    assert path.stat().st_size == reopened.size, "the writer cuts them off"
    reopened.append({"n": 102})
    reopened.close()
    assert [r["n"] for r in logged(path)] == [100, 101, 102]


def test_a_record_of_the_epoch_beyond_a_torn_one_is_never_read_back(tmp_path: Path) -> None:
    """A flush writes its pages in any order: a crash can leave a record torn and the
    next one whole. The writer's opening stops at the torn one and cuts the rest off, so
    the whole one (never acknowledged) is not found behind the records appended next."""
    path = tmp_path / "redo.log"
    log = RedoLog(path)
    log.append({"n": 1})
    first_end = log.size
    log.append({"n": 2, "data": b"a" * 50})
    second_end = log.size
    log.append({"n": 3})
    crashed(log)
    with open(path, "r+b") as f:  # the second record's last bytes never reached the disk
        f.seek(second_end - 10)
        f.write(bytes(10))
    reopened = RedoLog(path)
    assert [r["n"] for r in reopened.records()] == [1]
    assert reopened.damaged_bytes > 0
    # A record of the second's length lands where the third began.
    reopened.append({"n": 4, "data": b"b" * 50})
    assert reopened.size == second_end and first_end < second_end
    reopened.close()
    assert [r["n"] for r in logged(path)] == [1, 4]


def test_an_emptied_log_stays_empty_after_a_crash(tmp_path: Path) -> None:
    """Emptying is durable at once: a crash right after finds no record, whatever the
    file held before."""
    path = tmp_path / "redo.log"
    log = RedoLog(path)
    log.append({"n": 1, "data": b"x" * 1000})
    log.reset()
    del log  # (a crash: never closed)
    gc.collect()
    reopened = RedoLog(path)
    assert list(reopened.records()) == [] and reopened.damaged_bytes == 0
    reopened.close()


def test_an_emptied_log_keeps_at_most_keep_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log that grew large (a checkpoint put off) gives back what it holds past
    KEEP_BYTES when emptied."""
    monkeypatch.setattr(redolog, "KEEP_BYTES", redolog.EXTEND_BYTES)
    path = tmp_path / "redo.log"
    log = RedoLog(path)
    log.append({"data": b"x" * (2 * redolog.EXTEND_BYTES)})
    assert path.stat().st_size == 3 * redolog.EXTEND_BYTES
    log.reset()
    assert path.stat().st_size == redolog.EXTEND_BYTES
    log.append({"n": 1})
    log.close()
    assert logged(path) == [{"n": 1}]


def test_a_log_of_the_first_format_is_read_and_appended_to_until_emptied(
    tmp_path: Path,
) -> None:
    """Records written before epochs (magic GGRL) are read back; the log goes on in that
    format, and once emptied it writes records of an epoch."""
    path = tmp_path / "redo.log"
    old = [{"n": 1}, {"n": 2, "data": b"y" * 100}]
    with open(path, "wb") as f:
        for record in old:
            f.write(redolog._encode_payload(cbor2.dumps(record), None))
        f.write(bytes(4096))  # zeros ahead, as that format wrote them
    log = RedoLog(path)
    assert list(log.records()) == old and log.damaged_bytes == 0 and log.epoch is None
    log.append({"n": 3})
    log.close()
    assert [r["n"] for r in logged(path)] == [1, 2, 3]
    log = RedoLog(path)
    log.reset()
    log.append({"n": 4})
    assert log.epoch is not None
    assert path.read_bytes()[:4] == redolog.MAGIC
    crashed(log)
    assert [r["n"] for r in logged(path)] == [4]


def _first_format_records(path: Path) -> list[dict[str, object]]:
    """The records an older gateway finds in a log: the first format's, from the start
    until the first that is not one."""
    data, offset, found = path.read_bytes(), 0, []
    head = redolog._HEAD_V1
    while offset + head.size <= len(data):
        magic, length, digest = head.unpack_from(data, offset)
        payload = data[offset + head.size : offset + head.size + length]
        if magic != redolog.MAGIC_V1 or redolog._digest(payload) != digest:
            break
        found.append(cbor2.loads(payload))
        offset += head.size + length
    return found


def test_a_log_closed_cleanly_is_left_in_the_first_format(tmp_path: Path) -> None:
    """What a clean stop leaves an older gateway can read: the records of the epoch,
    rewritten in the first format, and nothing of the earlier epochs after them; an
    emptied log is left empty. This gateway reads it back and goes on."""
    path = tmp_path / "redo.log"
    log = RedoLog(path)
    for n in range(10):
        log.append({"n": n, "data": b"x" * 2000})
    log.reset()
    log.append({"n": 10})
    log.append({"n": 11, "data": b"y" * 300})
    log.close()
    assert _first_format_records(path) == [{"n": 10}, {"n": 11, "data": b"y" * 300}]
    assert path.stat().st_size == sum(
        len(redolog._encode(r, None)) for r in _first_format_records(path)
    )
    log = RedoLog(path)
    assert [r["n"] for r in log.records()] == [10, 11] and log.damaged_bytes == 0
    log.reset()
    log.close()
    assert path.stat().st_size == 0
