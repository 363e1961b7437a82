"""A new file is staged in memory until it holds more than a journal record can.

Creating and removing a file in the staging directory cost the kernel more than the
rest of a small file's CLOSE. So a small file is written, closed (durable by its journal
record, which holds its bytes), uploaded and kept without a file ever appearing in the
staging directory; past ``MEMORY_FILE_BYTES``, or past the area's memory budget, it moves
to the disk with every byte, and readers follow it there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.fs.interfaces import OpenFlags, SetAttributes
from gateway.fs.kept import KeptCopies
from gateway.fs.staging import MEMORY_FILE_BYTES
from gateway.fs.writing import WriteHandle
from tests.fs.support import CREATE, READ, VolumeHarness

pytestmark = pytest.mark.skipif(
    not hasattr(os, "memfd_create"), reason="this system has no memfd_create"
)

CREATE_RW = OpenFlags(read=True, write=True, create=True, truncate=True)


def _files(gw: VolumeHarness) -> list[str]:
    return sorted(p.name for p in gw.volume.staging.directory.iterdir())


def _open(gw: VolumeHarness, path: str, flags: OpenFlags = CREATE) -> WriteHandle:
    handle = gw.run(gw.fs.open(path, flags, SetAttributes()))
    assert isinstance(handle, WriteHandle)
    return handle


def test_a_small_new_file_never_makes_a_staged_file(tmp_path: Path) -> None:
    """Written, closed, read back while pending, uploaded, read back again: the staging
    directory stays empty, the memory the file held is given back after its upload, and
    the grid holds it exactly."""
    gw = VolumeHarness(tmp_path)
    gw.fs._writers._threads = gw.threads  # a thread runner, as a running gateway has
    data = os.urandom(16_384)
    handle = _open(gw, "/small")
    gw.run(handle.write(0, data))
    assert handle.state.staged is not None and handle.state.staged.in_memory
    assert gw.volume.staging.memory_used == len(data)
    gw.run(handle.close())
    assert gw.read("/small") == data  # pending: from memory
    assert _files(gw) == []
    gw.upload_everything()
    assert _files(gw) == []
    assert gw.volume.staging.memory_used == 0 and gw.volume.staging.used == 0
    assert gw.read("/small") == data


def test_a_crash_after_the_close_rebuilds_the_file_from_its_record(tmp_path: Path) -> None:
    """Closed (acknowledged) and killed before its upload: the record held the bytes, so
    after the restart the file is there, pending, and its upload stores it exactly."""
    gw = VolumeHarness(tmp_path)
    data = os.urandom(MEMORY_FILE_BYTES)
    gw.write("/a", data)
    gw.write("/b", b"short")
    assert _files(gw) == []
    gw.crash()
    assert gw.read("/a") == data and gw.read("/b") == b"short"
    gw.upload_everything()
    assert gw.read("/a") == data and gw.read("/b") == b"short"
    assert _files(gw) == []


def test_a_renamed_pending_file_keeps_its_bytes_in_the_rewritten_record(
    tmp_path: Path,
) -> None:
    """Renaming a file whose upload is pending rewrites its record, which takes the bytes
    from the staged file in memory again: a crash after the rename finds the file under
    its new name, exact."""
    gw = VolumeHarness(tmp_path)
    data = os.urandom(10_000)
    gw.write("/old", data)
    gw.run(gw.fs.rename("/old", "/new", False))
    gw.crash()
    assert gw.read("/new") == data
    gw.upload_everything()
    assert gw.read("/new") == data
    assert [name for name, _ in gw.run(gw.fs.list("/"))] == ["new"]


def test_growing_past_the_limit_moves_the_file_to_disk_with_every_byte(
    tmp_path: Path,
) -> None:
    """Small writes with a hole, then one that passes ``MEMORY_FILE_BYTES``: the file moves
    to one staged file on disk holding every byte written (the hole still a hole), the
    memory is given back, and the close uploads it exactly."""
    gw = VolumeHarness(tmp_path)
    handle = _open(gw, "/big")
    staged = handle.state.staged
    assert staged is not None
    gw.run(handle.write(0, b"head"))
    gw.run(handle.write(10_000, b"middle"))
    assert staged.in_memory and _files(gw) == []
    tail = os.urandom(MEMORY_FILE_BYTES)
    gw.run(handle.write(20_000, tail))
    assert not staged.in_memory and _files(gw) == [staged.path.name]
    assert gw.volume.staging.memory_used == 0
    assert gw.volume.staging.used == 4 + 6 + len(tail)
    gw.run(handle.close())
    expected = b"head" + bytes(10_000 - 4) + b"middle" + bytes(20_000 - 10_006) + tail
    assert gw.read("/big") == expected
    gw.upload_everything()
    assert gw.read("/big") == expected
    assert _files(gw) == []


def test_a_reader_follows_the_file_to_disk(tmp_path: Path) -> None:
    """Another handle reads the file while it is written: once the file has moved to the
    disk, that reader sees what is written after the move too."""
    gw = VolumeHarness(tmp_path)
    writer = _open(gw, "/f", CREATE_RW)
    gw.run(writer.write(0, b"before"))
    reader = gw.run(gw.fs.open("/f", READ, SetAttributes()))
    assert gw.run(reader.read(0, 100)) == b"before"
    more = os.urandom(MEMORY_FILE_BYTES)
    gw.run(writer.write(6, more))
    assert writer.state.staged is not None and not writer.state.staged.in_memory
    assert gw.run(reader.read(0, 1 << 20)) == b"before" + more
    gw.run(reader.close())
    gw.run(writer.close())
    gw.upload_everything()
    assert gw.read("/f") == b"before" + more


def test_files_past_the_memory_budget_start_on_disk(tmp_path: Path) -> None:
    """With room in memory for 50,000 bytes, five open files of 16,384 bytes: three are
    held in memory, the fourth moves to the disk when its write would pass the budget, the
    fifth starts there; the memory held never passes the budget, and all five upload
    exactly."""
    gw = VolumeHarness(tmp_path)
    gw.volume.staging.memory_bytes = 50_000
    handles, contents = [], {}
    for i in range(5):
        handle = _open(gw, f"/f{i}")
        contents[f"/f{i}"] = data = os.urandom(16_384)
        gw.run(handle.write(0, data))
        assert gw.volume.staging.memory_used <= 50_000
        handles.append(handle)
    in_memory = [h.state.staged is not None and h.state.staged.in_memory for h in handles]
    assert in_memory == [True, True, True, False, False]
    assert len(_files(gw)) == 2
    for handle in handles:
        gw.run(handle.close())
    gw.upload_everything()
    assert gw.volume.staging.memory_used == 0
    for path, data in contents.items():
        assert gw.read(path) == data


def test_an_uploaded_small_file_is_kept_in_memory_and_read_from_there(
    tmp_path: Path,
) -> None:
    """After its upload, the file staged in memory is kept as bytes: reading it back
    (``tar`` right after ``cp``) reads them, and no file appears in staging."""
    gw = VolumeHarness(tmp_path)
    gw.volume.kept = KeptCopies(1 << 20)
    data = os.urandom(20_000)
    gw.write("/k", data)
    gw.upload_everything()
    assert gw.volume.kept.memory_used == len(data)
    handle = gw.run(gw.fs.open("/k", READ, SetAttributes()))
    assert handle.read_ready(0, 1 << 20) == data  # a local read, no grid request
    gw.run(handle.close())
    assert _files(gw) == []
