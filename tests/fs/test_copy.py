"""Server-side copies (SFTP copy-data) and files opened without truncation: a grid file's
bytes are used where they are, and copied only when the file changes.

A whole immutable file copied into an empty file is a link of the same capability: its
CLOSE journals a link, nothing is read or uploaded, and it survives a restart. A file
opened for read+write is read from the grid until its first change; pipelined WRITEs
behind that change wait for one copy and are all applied.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred

from gateway.fs.errors import InvalidArgument, PermissionDenied
from gateway.fs.interfaces import OpenFlags, SetAttributes
from gateway.fs.volume import Volume
from gateway.fs.writing import WriteHandle
from gateway.uploads.journal import UploadJournal
from tests.fs.support import CREATE, READ, READ_WRITE, VolumeHarness

DATA = random.Random(7).randbytes(300_000)


def _entry_cap(gw: VolumeHarness, name: str) -> str:
    directory = gw.run(gw.volume.directory(()))
    return gw.run(directory.get(name)).cap.to_string()  # type: ignore[no-any-return]


def _copy(gw: VolumeHarness, source: str, target: str, *args: int) -> WriteHandle:
    """OPEN source for reading and target as OpenSSH's cp does, copy-data, CLOSE both."""
    reading = gw.run(gw.fs.open(source, READ, SetAttributes()))
    writing = gw.run(gw.fs.open(target, CREATE, SetAttributes()))
    assert isinstance(writing, WriteHandle)
    offsets = args or (0, 0, 0)
    gw.run(gw.fs.copy_data(reading, offsets[0], offsets[1], writing, offsets[2]))
    gw.run(reading.close())
    gw.run(writing.close())
    return writing


def test_copying_a_whole_grid_file_links_its_capability(tmp_path: Path) -> None:
    """cp of an uploaded file: the copy names the same immutable object; nothing uploads."""
    gw = VolumeHarness(tmp_path)
    gw.write("/original.bin", DATA)
    gw.upload_everything()
    handle = _copy(gw, "/original.bin", "/copy.bin")
    pending = gw.volume.overlay.pending[("copy.bin",)]
    assert pending.unchanged_base is not None  # the source's version, unchanged
    assert pending.staged.written.covered == 0  # nothing staged
    assert gw.stat("/copy.bin").size == len(DATA)
    assert gw.read("/copy.bin") == DATA  # read from the grid while pending
    gw.upload_everything()
    assert _entry_cap(gw, "copy.bin") == _entry_cap(gw, "original.bin")
    assert gw.read("/copy.bin") == DATA
    assert handle.state.unchanged_base is not None


def test_a_clone_journaled_before_a_crash_is_linked_after_it(tmp_path: Path) -> None:
    """The journal record of a copy carries what it links: a new volume adopts and links it."""
    gw = VolumeHarness(tmp_path)
    gw.write("/original.bin", DATA)
    gw.upload_everything()
    _copy(gw, "/original.bin", "/copy.bin")
    (job,) = [j for j in UploadJournal(tmp_path / "journal").load() if j.display == "/copy.bin"]
    again = VolumeHarness(tmp_path / "restarted")
    volume = Volume(
        gw.volume.root_cap, gw.volume.store, again.volume.staging, again.queue, again.clock
    )
    volume.adopt(job)
    assert volume.overlay.pending[("copy.bin",)].size == len(DATA)
    uploaded = Deferred.fromCoroutine(volume.upload(job))
    for _ in range(10):
        again.clock.advance(1)  # the link batches for a moment, as after any upload
        again.threads.run_all()
    assert uploaded.called
    directory = gw.run(volume.directory(()))
    assert gw.run(directory.get("copy.bin")).cap.to_string() == _entry_cap(gw, "original.bin")


def test_partial_and_offset_copies_copy_bytes(tmp_path: Path) -> None:
    """A range of a file, or into a place other than the start, is copied byte for byte."""
    gw = VolumeHarness(tmp_path)
    gw.write("/original.bin", DATA)
    gw.upload_everything()
    _copy(gw, "/original.bin", "/part.bin", 1000, 5000, 0)
    assert gw.read("/part.bin") == DATA[1000:6000]
    _copy(gw, "/original.bin", "/shifted.bin", 0, 0, 10)
    assert gw.read("/shifted.bin") == bytes(10) + DATA
    gw.upload_everything()
    assert gw.read("/part.bin") == DATA[1000:6000]


def test_a_pending_file_is_copied_byte_for_byte(tmp_path: Path) -> None:
    """A source still waiting for its upload has no capability yet: its bytes are copied."""
    gw = VolumeHarness(tmp_path)
    gw.write("/fresh.bin", DATA)
    _copy(gw, "/fresh.bin", "/copy.bin")
    assert gw.volume.overlay.pending[("copy.bin",)].base is None
    gw.upload_everything()
    assert gw.read("/copy.bin") == DATA


def test_a_changed_copy_is_the_source_with_the_change(tmp_path: Path) -> None:
    """Writing into a cloned file stages only the change, over the grid bytes; the result
    is exact."""
    gw = VolumeHarness(tmp_path)
    gw.write("/original.bin", DATA)
    gw.upload_everything()
    reading = gw.run(gw.fs.open("/original.bin", READ, SetAttributes()))
    flags = OpenFlags(read=True, write=True, create=True, truncate=True)
    writing = gw.run(gw.fs.open("/copy.bin", flags, SetAttributes()))
    gw.run(gw.fs.copy_data(reading, 0, 0, writing, 0))
    gw.run(writing.write(100, b"CHANGED"))
    assert gw.run(writing.read(90, 30)) == DATA[90:100] + b"CHANGED" + DATA[107:120]
    assert writing.state.staged.written.covered == len(b"CHANGED")
    gw.run(writing.close())
    gw.upload_everything()
    assert gw.read("/copy.bin") == DATA[:100] + b"CHANGED" + DATA[107:]
    assert gw.read("/original.bin") == DATA


def test_opening_read_write_reads_the_grid_until_the_first_change(tmp_path: Path) -> None:
    """OPEN without TRUNC copies nothing; pipelined WRITEs stage only what they write."""
    gw = VolumeHarness(tmp_path)
    gw.write("/db.bin", DATA)
    gw.upload_everything()
    handle = gw.run(gw.fs.open("/db.bin", READ_WRITE, SetAttributes()))
    assert isinstance(handle, WriteHandle)
    assert handle.state.unchanged_base is not None and handle.state.size == len(DATA)
    assert gw.run(handle.read(299_990, 100)) == DATA[299_990:]
    writes = [Deferred.fromCoroutine(handle.write(i * 10, b"%010d" % i)) for i in range(50)]
    gw.threads.run_all()
    assert all(w.called for w in writes)
    gw.run(handle.close())
    expected = bytearray(DATA)
    for i in range(50):
        expected[i * 10 : i * 10 + 10] = b"%010d" % i
    assert gw.read("/db.bin") == bytes(expected)
    gw.upload_everything()
    assert gw.read("/db.bin") == bytes(expected)


def test_copy_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    """A target not open for writing, or overlapping ranges of one file, are refused."""
    gw = VolumeHarness(tmp_path)
    gw.write("/a.bin", DATA)
    gw.upload_everything()
    reading = gw.run(gw.fs.open("/a.bin", READ, SetAttributes()))
    with pytest.raises(PermissionDenied):
        gw.run(gw.fs.copy_data(reading, 0, 0, reading, 0))
    both = gw.run(gw.fs.open("/a.bin", OpenFlags(read=True, write=True), SetAttributes()))
    with pytest.raises(InvalidArgument):
        gw.run(gw.fs.copy_data(both, 0, 100, both, 50))
