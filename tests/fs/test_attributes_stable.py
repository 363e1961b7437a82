"""A file's attributes change only when a client changes the file: its upload changes nothing.

One volume in process on an in-memory grid with a fake clock. A file is written and
closed, its attributes are read, the clock moves on and the upload links the file into
its directory: size, mtime, ctime and mode are what they were before. make, rsync and
tar (``file changed as we read it``) rely on this.
"""

from __future__ import annotations

from pathlib import Path

from gateway.fs.interfaces import SetAttributes
from tests.fs.support import READ_WRITE, VolumeHarness


def test_upload_changes_no_attribute(tmp_path: Path) -> None:
    """size, mtime, ctime and mode read before the upload are read after it."""
    gw = VolumeHarness(tmp_path)
    gw.write("/new.txt", b"hello")
    written = gw.clock.seconds() - 1
    before = gw.stat("/new.txt")
    assert before.mtime == written and before.size == 5
    gw.upload_everything()
    after = gw.stat("/new.txt")
    assert after == before
    (listed,) = [a for name, a in gw.run(gw.fs.list("/")) if name == "new.txt"]
    assert listed == before


def test_times_a_client_set_survive_the_upload(tmp_path: Path) -> None:
    """tar x / cp -p set mtime and mode after CLOSE, while the upload is pending: kept."""
    gw = VolumeHarness(tmp_path)
    gw.write("/kept.txt", b"data")
    gw.run(gw.fs.setattr("/kept.txt", SetAttributes(mode=0o600, mtime=1_000_000_000.0)))
    before = gw.stat("/kept.txt")
    assert before.mtime == 1_000_000_000.0 and before.mode & 0o777 == 0o600
    gw.upload_everything()
    assert gw.stat("/kept.txt") == before


def test_opening_without_writing_changes_nothing(tmp_path: Path) -> None:
    """OPEN read+write of an uploaded file, then CLOSE with no WRITE: mtime stays."""
    gw = VolumeHarness(tmp_path)
    gw.write("/same.txt", b"data")
    gw.upload_everything()
    before = gw.stat("/same.txt")
    handle = gw.run(gw.fs.open("/same.txt", READ_WRITE, SetAttributes()))
    gw.clock.advance(30)
    assert gw.stat("/same.txt").mtime == before.mtime  # open, not written
    gw.run(handle.close())
    gw.upload_everything()
    assert gw.stat("/same.txt") == before


def test_a_rewrite_moves_mtime_to_the_last_write_and_keeps_it(tmp_path: Path) -> None:
    """Changing a file sets mtime to when it was written; its upload keeps that time."""
    gw = VolumeHarness(tmp_path)
    gw.write("/log.txt", b"one")
    gw.upload_everything()
    first = gw.stat("/log.txt")
    gw.write("/log.txt", b"two!", READ_WRITE)
    written = gw.clock.seconds() - 1
    second = gw.stat("/log.txt")
    assert second.mtime == written > first.mtime and second.size == 4
    assert second.ctime == first.ctime
    gw.upload_everything()
    assert gw.stat("/log.txt") == second
