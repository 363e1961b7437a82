"""The disk backend's redo log: changes logged before they are applied survive a crash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage import disk, inplace
from storage.backend import IndexMetadata, ShareKind
from storage.disk import DiskBackend
from storage.leases import Lease
from storage.redolog import RedoLog
from tests.storage.values import SI

OTHER_SI = b"\x07" * 16
META = IndexMetadata(ShareKind.MUTABLE, (Lease(b"r" * 32, b"c" * 32, 1000),), b"w" * 32)


def crash(backend: DiskBackend) -> None:
    """Drop a backend without its closing checkpoint, as a kill -9 would."""
    backend._log.close()


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
    assert (tmp_path / "redo.log").stat().st_size == 0, "opening checkpoints and empties the log"


def test_torn_last_record_is_ignored(tmp_path: Path) -> None:
    """A record cut short by a crash (never acknowledged) is dropped; earlier ones apply."""
    DiskBackend(tmp_path).close()
    log = RedoLog(tmp_path / "redo.log")
    log.append({"op": "share", "si": SI, "n": 0, "data": b"kept"})
    log.append({"op": "share", "si": SI, "n": 0, "data": b"torn" * 100})
    log.close()
    size = (tmp_path / "redo.log").stat().st_size
    os.truncate(tmp_path / "redo.log", size - 50)
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
        assert (tmp_path / "redo.log").stat().st_size < 64 * 1024 + 9000
    backend.close()
    assert (tmp_path / "redo.log").stat().st_size == 0
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
