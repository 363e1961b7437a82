"""An fsync's snapshot of a file with large changes is copied in a thread.

The kernel copies the changed ranges (``copy_file_range``, or ``pread``/``pwrite`` where
it cannot) in a background call while the reactor goes on serving; writes and truncates
of that file wait for the copy, so the snapshot stored is exactly the file as the fsync
found it, and what is written after it is in the next version.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred

from gateway.fs import rangecopy
from gateway.fs.contents import COPY_IN_THREAD
from gateway.fs.interfaces import OpenFlags, SetAttributes
from gateway.fs.writing import Writers
from gateway.objects.dirformat import Entry
from tests.fs.support import VolumeHarness

NEW = OpenFlags(read=True, write=True, create=True, truncate=True)
NO_ATTRS = SetAttributes()


def _in_grid(gw: VolumeHarness, name: str) -> bytes:
    """The bytes of the version the directory links (not what an open handle sees)."""
    directory = gw.run(gw.volume.directory(()))
    entry = gw.run(directory.get(name))
    assert isinstance(entry, Entry) and entry.cap is not None
    return gw.run(gw.store.reader(entry.cap).read(0, 1 << 30))


def _copies(gw: VolumeHarness) -> int:
    return sum(
        1 for call, _ in gw.threads.queue if getattr(call, "func", None) is rangecopy.copy_and_close
    )


def test_a_large_snapshot_is_copied_in_a_thread_while_writes_wait(tmp_path: Path) -> None:
    """The fsync of a new 4 MiB file copies it in a thread: meanwhile a read of the file is
    answered at once and a write to it waits; the version the fsync stores is the file
    before that write, and the write is in the version its CLOSE stores."""
    gw = VolumeHarness(tmp_path)
    data = os.urandom(COPY_IN_THREAD + 12_345)
    handle = gw.run(Writers(gw.volume, gw.clock, gw.threads).open(("big.bin",), NEW, NO_ATTRS))
    gw.run(handle.write(0, data))
    synced: list[object] = []
    Deferred.fromCoroutine(handle.fsync()).addBoth(synced.append)
    assert _copies(gw) == 1, "the copy waits in a thread"
    wrote: list[object] = []
    Deferred.fromCoroutine(handle.write(0, b"later")).addBoth(wrote.append)
    truncated: list[object] = []
    Deferred.fromCoroutine(handle.setattr(SetAttributes(size=len(data) + 10))).addBoth(
        truncated.append
    )
    read: list[object] = []
    Deferred.fromCoroutine(handle.read(0, 5)).addBoth(read.append)
    assert read == [data[:5]] and wrote == [] and truncated == []
    while _copies(gw):
        gw.threads.run_next()
    assert wrote == [None] and truncated == [None]
    while not synced:
        if gw.threads.queue:
            gw.threads.run_next()
        else:
            gw.clock.advance(1)
    assert synced == [None]
    assert _in_grid(gw, "big.bin") == data
    gw.run(handle.close())
    gw.upload_everything()
    assert _in_grid(gw, "big.bin") == b"later" + data[5:] + bytes(10)
    assert gw.volume.staging.used == 0


def test_a_small_snapshot_is_copied_at_once(tmp_path: Path) -> None:
    """Changes under the threshold are copied without a thread handoff."""
    gw = VolumeHarness(tmp_path)
    handle = gw.run(Writers(gw.volume, gw.clock, gw.threads).open(("small.bin",), NEW, NO_ATTRS))
    gw.run(handle.write(0, b"s" * 1000))
    synced: list[object] = []
    Deferred.fromCoroutine(handle.fsync()).addBoth(synced.append)
    assert _copies(gw) == 0
    gw.run_waiting(handle.close())
    gw.upload_everything()
    assert _in_grid(gw, "small.bin") == b"s" * 1000


@pytest.mark.parametrize("kernel", [True, False])
def test_copy_ranges_copies_the_ranges_and_leaves_holes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel: bool
) -> None:
    """Each range lands at its own offset, what lies between stays a hole (zeros), and a
    range past the source's end copies what there is; by the kernel or by hand alike."""
    monkeypatch.setattr(rangecopy, "_kernel_copy", kernel and hasattr(os, "copy_file_range"))
    monkeypatch.setattr(rangecopy, "COPY_STEP", 4096)  # several steps per range
    source_data = os.urandom(50_000)
    (tmp_path / "src").write_bytes(source_data)
    src = os.open(tmp_path / "src", os.O_RDONLY)
    dst = os.open(tmp_path / "dst", os.O_RDWR | os.O_CREAT)
    try:
        os.ftruncate(dst, 60_000)
        rangecopy.copy_ranges(src, dst, [(100, 10_000), (20_000, 30_000), (45_000, 60_000)])
    finally:
        os.close(src)
        os.close(dst)
    expected = bytearray(60_000)
    expected[100:10_000] = source_data[100:10_000]
    expected[20_000:30_000] = source_data[20_000:30_000]
    expected[45_000:50_000] = source_data[45_000:50_000]
    assert (tmp_path / "dst").read_bytes() == bytes(expected)


def test_a_second_open_of_a_large_pending_file_copies_nothing(tmp_path: Path) -> None:
    """A second OPEN of a file whose CLOSE still waits for the grid, with 1 MiB or more of
    changes, copies nothing (gateway.fs.under): it answers at once, and a STAT and a
    listing made meanwhile report the file's size."""
    gw = VolumeHarness(tmp_path)
    data = os.urandom(COPY_IN_THREAD + 12_345)
    gw.write("/big.bin", data)  # closed, not uploaded
    used = gw.volume.staging.used
    opened: list[object] = []
    writers = Writers(gw.volume, gw.clock, gw.threads)
    flags = OpenFlags(read=True, write=True)
    Deferred.fromCoroutine(writers.open(("big.bin",), flags, NO_ATTRS)).addBoth(opened.append)
    assert len(opened) == 1 and _copies(gw) == 0 and gw.volume.staging.used == used
    (listed,) = gw.run(gw.fs.list("/"))
    assert listed[0] == "big.bin" and listed[1].size == len(data)
    assert gw.run(gw.fs.stat("/big.bin")).size == len(data)
    (handle,) = opened
    assert gw.run(handle.read(0, len(data))) == data  # type: ignore[attr-defined]


@pytest.mark.skipif(not hasattr(os, "copy_file_range"), reason="no copy_file_range here")
@pytest.mark.parametrize(("error", "kernel_after"), [(errno.EXDEV, True), (errno.ENOSYS, False)])
def test_a_refused_kernel_copy_is_made_by_hand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: int, kernel_after: bool
) -> None:
    """A copy the kernel refuses for these two files (EXDEV: another filesystem) is made by
    hand and later copies still ask the kernel; a kernel without the call (ENOSYS) is
    not asked again."""
    monkeypatch.setattr(rangecopy, "_kernel_copy", True)

    def refuse(*args: object) -> int:
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(rangecopy.os, "copy_file_range", refuse)
    data = os.urandom(10_000)
    (tmp_path / "src").write_bytes(data)
    src = os.open(tmp_path / "src", os.O_RDONLY)
    dst = os.open(tmp_path / "dst", os.O_RDWR | os.O_CREAT)
    try:
        rangecopy.copy_ranges(src, dst, [(100, 5_000)])
    finally:
        os.close(src)
        os.close(dst)
    assert (tmp_path / "dst").read_bytes() == bytes(100) + data[100:5_000]
    assert rangecopy._kernel_copy is kernel_after
