"""Disk-backend specifics: layout, restart, crash recovery, file modes, advisory log."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from storage.backend import IShareBackend, si_a2b, si_b2a
from storage.disk import LOGGED_SHARE_BYTES, DiskBackend
from storage.errors import NoSuchShare, NoSuchUpload
from storage.interfaces import TestWriteVectors as Vectors
from storage.interfaces import WriteVector
from storage.memory import MemoryBackend
from storage.server import StorageServer
from tests.storage.values import CANCEL, RENEW, SI, UPLOAD, WE

SI_TEXT = si_b2a(SI)


def open_server(path: Path) -> StorageServer:
    """A StorageServer over a disk backend at ``path``, as a (re)starting node builds it."""
    return StorageServer(DiskBackend(path), Clock())


def test_backends_provide_interface(tmp_path: Path) -> None:
    """Both backends provide IShareBackend."""
    assert verifyObject(IShareBackend, DiskBackend(tmp_path))
    assert verifyObject(IShareBackend, MemoryBackend())


def test_storage_index_text() -> None:
    """Storage indexes are written as 26 lowercase base32 characters, and read back strictly."""
    assert len(SI_TEXT) == 26 and SI_TEXT == SI_TEXT.lower()
    assert si_a2b(SI_TEXT) == SI
    for bad in (SI_TEXT.upper(), SI_TEXT[:-1], "../" + SI_TEXT[3:], SI_TEXT[:-1] + "b"):
        with pytest.raises(ValueError):
            si_a2b(bad)


def test_layout(tmp_path: Path) -> None:
    """Complete shares live at shares/<prefix>/<SI>/<shnum>; an incomplete upload is held in
    memory while it is small, and in shares/incoming once it is not."""
    big = LOGGED_SHARE_BYTES + 10
    server = open_server(tmp_path)
    server.allocate_buckets(SI, frozenset({0, 1, 2}), big, UPLOAD, RENEW, CANCEL)
    server.write_immutable(SI, 1, UPLOAD, 0, b"ab")
    assert not (tmp_path / "shares/incoming" / f"{SI_TEXT}.1").exists()
    server.write_immutable(SI, 2, UPLOAD, 0, b"c" * big)
    server.write_immutable(SI, 0, UPLOAD, 0, b"d" * (big - 1))
    assert (tmp_path / "shares/incoming" / f"{SI_TEXT}.0").stat().st_size == big - 1
    share = tmp_path / "shares" / SI_TEXT[:2] / SI_TEXT / "2"
    assert share.read_bytes() == b"c" * big
    assert not (tmp_path / "shares/incoming" / f"{SI_TEXT}.2").exists()
    assert not (tmp_path / "shares" / SI_TEXT[:2] / SI_TEXT / "1").exists()
    assert server.read_immutable(SI, 2, big - 3, 10) == b"ccc"


def test_metadata_holds_no_secrets(tmp_path: Path) -> None:
    """The side file keeps digests of lease secrets and write enablers, never the secrets."""
    server = open_server(tmp_path)
    server.read_test_write(SI, WE, RENEW, CANCEL, {0: Vectors(write=(WriteVector(0, b"m"),))}, ())
    raw = (tmp_path / "shares" / SI_TEXT[:2] / SI_TEXT / "metadata.cbor").read_bytes()
    for secret in (WE, RENEW, CANCEL):
        assert secret not in raw


def test_restart_sees_complete_shares_only(tmp_path: Path) -> None:
    """A new server on the same directory has the complete shares and no incomplete upload."""
    server = open_server(tmp_path)
    server.allocate_buckets(SI, frozenset({0, 1}), 4, UPLOAD, RENEW, CANCEL)
    server.write_immutable(SI, 0, UPLOAD, 0, b"done")
    server.write_immutable(SI, 1, UPLOAD, 0, b"ha")
    server.read_test_write(
        b"\x05" * 16, WE, RENEW, CANCEL, {2: Vectors((), (WriteVector(0, b"m"),))}, ()
    )

    restarted = open_server(tmp_path)
    assert restarted.list_immutable(SI) == {0}
    assert restarted.read_immutable(SI, 0, 0, 4) == b"done"
    metadata = restarted.backend.get_metadata(SI)
    assert metadata is not None and len(metadata.leases) == 1
    assert restarted.read_mutable(b"\x05" * 16, 2, 0, 1) == b"m"
    with pytest.raises(NoSuchUpload):
        restarted.write_immutable(SI, 1, UPLOAD, 2, b"lf")
    assert not any((tmp_path / "shares/incoming").rglob(f"{SI_TEXT}.1"))
    # The interrupted share can be uploaded again from scratch.
    restarted.allocate_buckets(SI, frozenset({1}), 4, UPLOAD, RENEW, CANCEL)
    assert restarted.write_immutable(SI, 1, UPLOAD, 0, b"half").finished


def test_crash_leftovers_cleaned(tmp_path: Path) -> None:
    """Files a kill -9 leaves in the incoming area are never readable and are removed at start."""
    DiskBackend(tmp_path)
    partial = tmp_path / "shares/incoming" / f"{SI_TEXT}.3"
    partial.write_bytes(b"half a sha")
    stray_temp = tmp_path / "shares/incoming/tmp/tmp-abc"  # as older versions left them
    stray_temp.parent.mkdir()
    stray_temp.write_bytes(b"half a metadata file")

    server = open_server(tmp_path)
    assert server.list_immutable(SI) == frozenset()
    with pytest.raises(NoSuchShare):
        server.read_immutable(SI, 3, 0, 1)
    assert not partial.exists() and not stray_temp.exists()
    assert list(server.backend.storage_indexes()) == []


def test_modes_private(tmp_path: Path) -> None:
    """Share directories and files are not readable by group or others."""
    old = os.umask(0o022)
    try:
        server = open_server(tmp_path)
        server.allocate_buckets(SI, frozenset({0}), 1, UPLOAD, RENEW, CANCEL)
        server.write_immutable(SI, 0, UPLOAD, 0, b"x")
        server.advise_corrupt_immutable(SI, 0, "x")
    finally:
        os.umask(old)
    paths = [tmp_path / "shares", *(tmp_path / "shares").rglob("*")]
    paths.append(tmp_path / "corruption-advisories.log")
    assert len(paths) > 5
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_corruption_log(tmp_path: Path) -> None:
    """Advisories are appended to a log file, one JSON object per line."""
    server = open_server(tmp_path)
    server.read_test_write(SI, WE, RENEW, CANCEL, {0: Vectors(write=(WriteVector(0, b"m"),))}, ())
    server.advise_corrupt_mutable(SI, 0, "bad signature\nsecond line")
    server.advise_corrupt_mutable(SI, 0, "again")
    lines = (tmp_path / "corruption-advisories.log").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["reason"] for r in records] == ["bad signature\nsecond line", "again"]
    assert records[0]["storage-index"] == SI_TEXT and records[0]["kind"] == "mutable"


def test_ignores_foreign_files(tmp_path: Path) -> None:
    """Names that are not canonical share numbers or storage indexes are ignored."""
    server = open_server(tmp_path)
    server.read_test_write(SI, WE, RENEW, CANCEL, {0: Vectors(write=(WriteVector(0, b"m"),))}, ())
    directory = tmp_path / "shares" / SI_TEXT[:2] / SI_TEXT
    for name in ("007", "256", "notes", "-1"):
        (directory / name).write_bytes(b"?")
    (tmp_path / "shares" / SI_TEXT[:2] / "not-an-index").mkdir()
    assert server.list_mutable(SI) == {0}
    assert list(server.backend.storage_indexes()) == [SI]


def test_mutable_delete_removes_directory(tmp_path: Path) -> None:
    """Deleting the last mutable share removes the storage index's directory and side file."""
    server = open_server(tmp_path)
    server.read_test_write(SI, WE, RENEW, CANCEL, {0: Vectors(write=(WriteVector(0, b"m"),))}, ())
    server.read_test_write(SI, WE, RENEW, CANCEL, {0: Vectors(new_length=0)}, ())
    assert not (tmp_path / "shares" / SI_TEXT[:2]).exists()


def test_corruption_log_is_bounded(tmp_path: Path) -> None:
    """Advisories without end (anyone holding the NURL may file them) keep the log and its
    one older file near ADVISORIES_MAX_BYTES each: the disk does not fill."""
    from storage import disk

    server = open_server(tmp_path)
    server.read_test_write(SI, WE, RENEW, CANCEL, {0: Vectors(write=(WriteVector(0, b"m"),))}, ())
    reason = "r" * 4000
    for _ in range(3 * disk.ADVISORIES_MAX_BYTES // 4000):
        server.advise_corrupt_mutable(SI, 0, reason)
    log = tmp_path / "corruption-advisories.log"
    older = tmp_path / "corruption-advisories.log.1"
    assert older.exists()
    assert not (tmp_path / "corruption-advisories.log.2").exists()
    for path in (log, older):
        assert path.stat().st_size <= disk.ADVISORIES_MAX_BYTES + 5000
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    assert '"reason": "rrrr' in log.read_text().splitlines()[-1]
