"""The disk backend's memory of what it wrote: share listings and mutable shares.

A test-and-write reads its slot from memory, and listings are not repeated, yet every
answer is what the files (and, after a restart, the replayed log) say.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

import storage.disk
import storage.redolog
from storage.disk import DiskBackend
from storage.errors import NoSuchShare
from storage.interfaces import ReadVector, WriteVector
from storage.interfaces import TestVector as Specimen
from storage.interfaces import TestWriteVectors as Vectors
from storage.server import StorageServer
from tests.storage.values import CANCEL, RENEW, SI, SI2, UPLOAD, WE


def open_server(path: Path) -> StorageServer:
    """A StorageServer over a disk backend at ``path``."""
    return StorageServer(DiskBackend(path), Clock())


def write(server: StorageServer, data: bytes, test: bytes | None = None) -> bool:
    """Test-and-write share 0 of the slot ``SI`` (the test: its first bytes are ``test``)."""
    tests = () if test is None else (Specimen(0, len(test), test),)
    vectors = {0: Vectors(tests, (WriteVector(0, data),), len(data))}
    return server.read_test_write(SI, WE, RENEW, CANCEL, vectors, ()).success


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every opening of a share file for reading by the backend from now on."""
    opened: list[str] = []
    real_os_open, real_open = os.open, open

    def os_open(path: os.PathLike[str] | str, flags: int, *args: int) -> int:
        if Path(path).name == "0" and flags & os.O_ACCMODE == os.O_RDONLY:
            opened.append(str(path))
        return real_os_open(path, flags, *args)

    def builtin_open(path: os.PathLike[str] | str, *args: Any, **kwargs: Any) -> Any:
        if Path(path).name == "0":
            opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(storage.disk.os, "open", os_open)
    monkeypatch.setattr(storage.disk, "open", builtin_open, raising=False)
    return opened


def test_a_slot_is_tested_and_rewritten_from_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After its first write, a slot's tests, reads and rewrites open no share file for
    reading, and still see exactly the last write; a restarted backend agrees."""
    server = open_server(tmp_path)
    assert write(server, b"version 1")
    opened = count_reads(monkeypatch)
    assert not write(server, b"version X", test=b"version 2")
    assert write(server, b"version 2!", test=b"version 1")
    assert server.read_mutable(SI, 0, 0, 100) == b"version 2!"
    result = server.read_test_write(SI, WE, RENEW, CANCEL, {}, (ReadVector(8, 5),))
    assert result.reads == {0: [b"2!"]}
    assert server.backend.share_length(SI, 0) == 10
    assert opened == []
    monkeypatch.undo()
    assert open_server(tmp_path).read_mutable(SI, 0, 0, 100) == b"version 2!"


def test_a_write_whose_flush_fails_is_not_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the redo log cannot be flushed the write fails, and reads go on answering what
    the file holds, not the bytes that were never made durable."""
    server = open_server(tmp_path)
    assert write(server, b"durable")

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(storage.redolog.os, "fdatasync", failing)
    with pytest.raises(OSError):
        write(server, b"lost!!!", test=b"durable")
    monkeypatch.undo()
    assert server.read_mutable(SI, 0, 0, 100) == b"durable"


def test_deleted_shares_are_forgotten(tmp_path: Path) -> None:
    """A share deleted by a write of length 0 is gone from listings and reads at once."""
    server = open_server(tmp_path)
    assert write(server, b"here")
    assert server.list_mutable(SI) == {0}
    vectors = {0: Vectors((), (), 0)}
    assert server.read_test_write(SI, WE, RENEW, CANCEL, vectors, ()).success
    assert server.list_mutable(SI) == set()
    with pytest.raises(NoSuchShare):
        server.backend.read_share(SI, 0, 0, 4)
    assert write(server, b"again")
    assert server.read_mutable(SI, 0, 0, 10) == b"again"


def test_listings_follow_completed_uploads(tmp_path: Path) -> None:
    """An index listed while empty lists each share once it completes, small (through the
    log) or large (moved into place), and a restart lists the same."""
    server = open_server(tmp_path)
    big = storage.disk.LOGGED_SHARE_BYTES + 1
    assert server.list_immutable(SI2) == set()
    server.allocate_buckets(SI2, frozenset({0}), 5, UPLOAD, RENEW, CANCEL)
    server.allocate_buckets(SI2, frozenset({1}), big, UPLOAD, RENEW, CANCEL)
    assert server.list_immutable(SI2) == set()
    assert server.write_immutable(SI2, 0, UPLOAD, 0, b"small").finished
    assert server.list_immutable(SI2) == {0}
    assert server.write_immutable(SI2, 1, UPLOAD, 0, b"b" * big).finished
    assert server.list_immutable(SI2) == {0, 1}
    assert open_server(tmp_path).list_immutable(SI2) == {0, 1}


def test_memory_for_slots_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the bound the kept slots are dropped, and reads come from the files again."""
    monkeypatch.setattr(storage.disk, "_KEPT_SHARE_BYTES", 16)
    server = open_server(tmp_path)
    assert write(server, b"0123456789")
    assert server.backend._kept_bytes == 10
    assert write(server, b"0123456789abcdefXYZ", test=b"0123")
    assert server.backend._kept_bytes == 0
    assert server.read_mutable(SI, 0, 0, 100) == b"0123456789abcdefXYZ"


def test_a_share_file_removed_by_hand_is_noticed(tmp_path: Path) -> None:
    """Listings are kept, but a read that finds a listed share's file gone lists the index
    again: the share can be uploaded anew (as a repair does after a disk lost it)."""
    server = open_server(tmp_path)
    server.allocate_buckets(SI2, frozenset({0, 1}), 5, UPLOAD, RENEW, CANCEL)
    for number in (0, 1):
        assert server.write_immutable(SI2, number, UPLOAD, 0, b"share").finished
    assert server.list_immutable(SI2) == {0, 1}
    name = storage.disk.si_b2a(SI2)
    (tmp_path / "shares" / name[:2] / name / "1").unlink()
    with pytest.raises(NoSuchShare):
        server.read_immutable(SI2, 1, 0, 5)
    assert server.list_immutable(SI2) == {0}
    allocated = server.allocate_buckets(SI2, frozenset({0, 1}), 5, UPLOAD, RENEW, CANCEL)
    assert allocated.already_have == {0} and allocated.allocated == {1}
    assert server.write_immutable(SI2, 1, UPLOAD, 0, b"again").finished
    assert server.read_immutable(SI2, 1, 0, 5) == b"again"


def test_a_slot_file_removed_by_hand_is_not_served_from_memory(tmp_path: Path) -> None:
    """A kept slot whose file is gone is forgotten at the next listing: it is neither listed
    nor read, and a new write starts from nothing."""
    server = open_server(tmp_path)
    assert write(server, b"remembered")
    name = storage.disk.si_b2a(SI)
    (tmp_path / "shares" / name[:2] / name / "0").unlink()
    assert server.list_mutable(SI) == set()
    with pytest.raises(NoSuchShare):
        server.read_mutable(SI, 0, 0, 10)
    vectors = {0: Vectors(write=(WriteVector(4, b"new"),))}
    assert server.read_test_write(SI, WE, RENEW, CANCEL, vectors, ()).success
    assert server.read_mutable(SI, 0, 0, 10) == b"\0\0\0\0new"
