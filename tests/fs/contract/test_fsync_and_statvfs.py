"""fsync publishes what a handle has written so far; statvfs gives consistent capacity figures.

``dd conv=fsync`` and databases rely on fsync: once it returns, the contents written so
far are kept even if the client then vanishes without a CLOSE. ``df`` relies on statvfs.
"""

from __future__ import annotations

import pytest

from gateway.fs.errors import NoSuchFile
from gateway.fs.interfaces import OpenFlags
from tests.fs.contract.subject import CREATE, READ, WRITE, Subject


def test_fsync_keeps_the_contents_if_the_client_then_vanishes(subject: Subject) -> None:
    """Write, fsync, write more, vanish without CLOSE: the file has what was fsynced."""
    handle = subject.open("/db", CREATE)
    subject.run(handle.write(0, b"synced"))
    subject.run(handle.fsync())
    subject.run(handle.write(6, b" and lost"))
    subject.run(handle.abort())
    assert subject.read("/db") == b"synced"
    subject.settle()
    assert subject.read("/db") == b"synced"
    assert subject.names("/") == ["db"]


def test_fsync_of_a_rewrite_replaces_the_old_contents(subject: Subject, when: str) -> None:
    """An existing file rewritten and fsynced is the new version, even without a CLOSE."""
    subject.write("/f", b"old version")
    subject.reach(when)
    handle = subject.open("/f", WRITE)
    subject.run(handle.write(0, b"NEW"))
    subject.run(handle.fsync())
    subject.run(handle.abort())
    subject.settle()
    assert subject.read("/f") == b"NEW version"


def test_the_close_after_an_fsync_publishes_everything(subject: Subject) -> None:
    """Writes after an fsync are published by the CLOSE: the newest contents win."""
    handle = subject.open("/f", CREATE)
    subject.run(handle.write(0, b"first"))
    subject.run(handle.fsync())
    subject.run(handle.write(5, b", second"))
    subject.run(handle.close())
    assert subject.read("/f") == b"first, second"
    subject.settle()
    assert subject.read("/f") == b"first, second"


def test_a_handle_reads_its_writes_across_an_fsync(subject: Subject) -> None:
    """fsync changes nothing the handle sees: size and bytes stay, and writing goes on."""
    handle = subject.open("/f", OpenFlags(read=True, write=True, create=True))
    subject.run(handle.write(0, b"0123456789"))
    subject.run(handle.fsync())
    assert subject.run(handle.read(0, 100)) == b"0123456789"
    assert subject.run(handle.stat()).size == 10
    subject.run(handle.write(10, b"!"))
    subject.run(handle.fsync())
    assert subject.run(handle.read(0, 100)) == b"0123456789!"
    subject.run(handle.close())
    subject.settle()
    assert subject.read("/f") == b"0123456789!"


def test_a_close_with_nothing_new_after_an_fsync_keeps_the_synced_file(
    subject: Subject,
) -> None:
    """fsync, then CLOSE with no write since: the file is what was synced."""
    handle = subject.open("/f", CREATE)
    subject.run(handle.write(0, b"synced"))
    subject.run(handle.fsync())
    subject.run(handle.close())
    for _ in range(2):
        assert subject.read("/f") == b"synced"
        assert subject.names("/") == ["f"]
        subject.settle()


def test_fsync_after_a_rename_publishes_under_the_new_name(subject: Subject) -> None:
    """An open file renamed, then fsynced, then lost: it is under its new name only."""
    handle = subject.open("/a", CREATE)
    subject.run(handle.write(0, b"moved and synced"))
    subject.run(subject.fs.rename("/a", "/b", False))
    subject.run(handle.fsync())
    subject.run(handle.abort())
    subject.settle()
    assert subject.names("/") == ["b"]
    assert subject.read("/b") == b"moved and synced"


def test_a_synced_file_removed_then_lost_is_gone(subject: Subject) -> None:
    """fsync, remove, then the client vanishes: nothing is left."""
    handle = subject.open("/f", CREATE)
    subject.run(handle.write(0, b"synced"))
    subject.run(handle.fsync())
    subject.run(subject.fs.remove("/f"))
    subject.run(handle.abort())
    subject.settle()
    assert subject.names("/") == []


def test_fsync_of_an_unchanged_or_read_handle(subject: Subject, when: str) -> None:
    """fsync of a handle that changed nothing, or that only reads, returns and changes
    nothing."""
    subject.write("/f", b"data")
    subject.reach(when)
    before = subject.stat("/f")
    for flags in (READ, WRITE):
        handle = subject.open("/f", flags)
        subject.run(handle.fsync())
        subject.run(handle.close())
    assert subject.stat("/f") == before
    assert subject.read("/f") == b"data"


def test_statvfs_figures_are_consistent(subject: Subject) -> None:
    """Blocks are positive in size; total >= free >= available; names up to 255 bytes."""
    stats = subject.run(subject.fs.statvfs("/"))
    assert stats.block_size > 0
    assert stats.total_blocks >= stats.free_blocks >= stats.available_blocks >= 0
    assert stats.total_files >= stats.free_files >= 0
    assert stats.max_name_length == 255


def test_statvfs_of_any_path_in_the_account(subject: Subject, when: str) -> None:
    """statvfs of a directory or a file (pending or uploaded) answers as for the root."""
    subject.mkdir("/d")
    subject.write("/d/f", b"x")
    subject.reach(when)
    root = subject.run(subject.fs.statvfs("/"))
    for path in ("/d", "/d/f"):
        stats = subject.run(subject.fs.statvfs(path))
        assert (stats.block_size, stats.max_name_length) == (root.block_size, 255)


def test_statvfs_of_a_missing_path(subject: Subject) -> None:
    """statvfs of a name that does not exist is NoSuchFile."""
    with pytest.raises(NoSuchFile):
        subject.run(subject.fs.statvfs("/none"))
