"""WRITE at any offset in any order, and READ of what was written, at every stage of a file.

A file's bytes are the same through the handle that writes it, through another handle
or session while it is open, once it is closed and waiting for its upload, and once it
is in the grid: sshfs reads back what it wrote, and a second client sees a file being
written.
"""

from __future__ import annotations

import random

import pytest

from gateway.fs.errors import FileExists
from gateway.fs.interfaces import OpenFlags, SetAttributes
from tests.fs.contract.subject import (
    CREATE,
    EXCLUSIVE,
    PENDING,
    READ,
    READ_WRITE,
    UPLOADED,
    WRITE,
    Subject,
)

DATA = random.Random(11).randbytes(200_000)


def test_writes_in_any_order_read_back_in_place(subject: Subject, when: str) -> None:
    """Chunks written last to first land where their offsets say."""
    handle = subject.open("/f", CREATE)
    for offset in reversed(range(0, len(DATA), 32768)):
        subject.run(handle.write(offset, DATA[offset : offset + 32768]))
    subject.run(handle.close())
    subject.reach(when)
    assert subject.read("/f") == DATA
    assert subject.stat("/f").size == len(DATA)


def test_a_hole_reads_as_zeros(subject: Subject, when: str) -> None:
    """A write past the end leaves zeros between the old end and the write."""
    handle = subject.open("/sparse", CREATE)
    subject.run(handle.write(0, b"start"))
    subject.run(handle.write(10_000, b"end"))
    subject.run(handle.close())
    subject.reach(when)
    assert subject.read("/sparse") == b"start" + bytes(9995) + b"end"
    assert subject.stat("/sparse").size == 10_003


def test_overlapping_writes_keep_the_last(subject: Subject) -> None:
    """A later write over an earlier one's bytes wins where they overlap."""
    handle = subject.open("/f", CREATE)
    subject.run(handle.write(0, b"aaaaaaaaaa"))
    subject.run(handle.write(3, b"BBBB"))
    subject.run(handle.write(5, b"cc"))
    subject.run(handle.close())
    assert subject.read("/f") == b"aaaBBcca" + b"aa"


def test_reads_through_the_writing_handle_before_close(subject: Subject) -> None:
    """A READ|WRITE handle reads what it has written so far, at any offset."""
    handle = subject.open("/f", OpenFlags(read=True, write=True, create=True))
    subject.run(handle.write(0, DATA))
    assert subject.run(handle.read(1000, 10)) == DATA[1000:1010]
    assert subject.read_handle(handle) == DATA
    subject.run(handle.close())


def test_another_handle_reads_what_is_written_so_far(subject: Subject) -> None:
    """A reader (in this session or another) sees the writes made so far, and a reader already
    open sees later ones; the closed file has them all."""
    other = subject.session()
    writer = subject.open("/growing", CREATE)
    subject.run(writer.write(0, b"first part;"))
    assert subject.read("/growing") == b"first part;"
    assert subject.read("/growing", fs=other) == b"first part;"
    reader = subject.open("/growing", READ, fs=other)
    subject.run(writer.write(11, b"second part"))
    assert subject.read_handle(reader) == b"first part;second part"
    assert subject.read("/growing", fs=other) == b"first part;second part"
    subject.run(writer.close())
    subject.run(reader.close())
    assert subject.read("/growing", fs=other) == b"first part;second part"


def test_another_session_reads_a_file_being_written(subject: Subject) -> None:
    """A second session of the account sees an open file, its size and its bytes so far."""
    other = subject.session()
    writer = subject.open("/shared", CREATE)
    subject.run(writer.write(0, b"x" * 5000))
    assert subject.stat("/shared", fs=other).size == 5000
    assert {n: a.size for n, a in subject.listing("/", fs=other).items()} == {"shared": 5000}
    assert subject.read("/shared", fs=other) == b"x" * 5000
    subject.run(writer.close())
    assert subject.read("/shared", fs=other) == b"x" * 5000


def test_the_same_bytes_at_every_stage(subject: Subject, when: str) -> None:
    """Bytes read while the upload waits, while it runs, and after it are the written ones."""
    subject.write("/f", DATA)
    subject.reach(when)
    assert subject.read("/f") == DATA
    assert subject.stat("/f").size == len(DATA)


def test_reads_past_the_end(subject: Subject, when: str) -> None:
    """A READ that crosses the end is short; one at or past the end is empty (EOF)."""
    subject.write("/f", b"0123456789")
    subject.reach(when)
    handle = subject.open("/f", READ)
    assert subject.run(handle.read(5, 100)) == b"56789"
    assert subject.run(handle.read(10, 5)) == b""
    assert subject.run(handle.read(1000, 5)) == b""
    subject.run(handle.close())


def test_an_empty_file_reads_empty(subject: Subject, when: str) -> None:
    """A file closed with nothing written is there, empty, on both sides of its upload."""
    subject.write("/empty", b"")
    subject.reach(when)
    assert subject.read("/empty") == b""
    assert subject.stat("/empty").size == 0
    assert subject.names("/") == ["empty"]


def test_handle_stat_sees_unclosed_writes(subject: Subject, when: str) -> None:
    """FSTAT through a writing handle reports the size written so far."""
    subject.write("/f", b"x" * 1234)
    subject.reach(when)
    handle = subject.open("/f", READ_WRITE)
    subject.run(handle.write(1234, b"yy"))
    attrs = subject.run(handle.stat())
    assert (attrs.kind, attrs.size) == ("file", 1236)
    assert subject.stat("/f").size == 1236
    subject.run(handle.close())
    assert subject.stat("/f").size == 1236


def test_a_read_handle_stat(subject: Subject, when: str) -> None:
    """FSTAT through a read handle reports the file's attributes."""
    subject.write("/f", b"12345")
    subject.reach(when)
    handle = subject.open("/f", READ)
    assert subject.run(handle.stat()) == subject.stat("/f")
    subject.run(handle.close())


def test_rewriting_a_file_replaces_its_bytes(subject: Subject, when: str) -> None:
    """CREAT|TRUNC and a shorter write: the old, longer contents are gone, on both sides."""
    subject.write("/f", b"a long first version")
    subject.reach(when)
    subject.write("/f", b"short")
    assert subject.read("/f") == b"short"
    subject.settle()
    assert subject.read("/f") == b"short"
    assert subject.stat("/f").size == 5


def test_versions_closed_in_a_row_end_with_the_last(subject: Subject) -> None:
    """Several versions closed before any lands: the last one closed is what stays."""
    for version in range(5):
        data = f"version {version} ".encode() * (1000 + version)
        subject.write("/churn", data)
        assert subject.read("/churn") == data
    subject.settle()
    assert subject.read("/churn") == b"version 4 " * 1004


def test_reopening_a_pending_file_edits_its_newest_contents(subject: Subject) -> None:
    """WRITE into a file whose previous CLOSE is still uploading edits that closed version."""
    subject.write("/churn", b"version 4 " * 10)
    handle = subject.open("/churn", WRITE)
    subject.run(handle.write(0, b"EDITED"))
    subject.run(handle.close())
    assert subject.read("/churn")[:20] == b"EDITEDn 4 version 4 "
    subject.settle()
    assert subject.read("/churn")[:20] == b"EDITEDn 4 version 4 "


def test_two_handles_on_one_path_share_the_file(subject: Subject) -> None:
    """Writers in two sessions write one file; a CLOSE publishes both writes so far, the last
    CLOSE publishes all."""
    subject.write("/shared", b"." * 20)
    other = subject.session()
    first = subject.open("/shared", READ_WRITE)
    second = subject.open("/shared", WRITE, fs=other)
    subject.run(first.write(0, b"AAAAA"))
    subject.run(second.write(10, b"BBBBB"))
    assert subject.run(first.stat()).size == 20
    assert subject.run(first.read(0, 100)) == b"AAAAA.....BBBBB....."
    subject.run(first.close())
    assert subject.read("/shared") == b"AAAAA.....BBBBB....."
    subject.run(second.write(15, b"CCCCCC"))
    subject.run(second.close())
    assert subject.read("/shared") == b"AAAAA.....BBBBBCCCCCC"
    assert subject.read("/shared", fs=other) == b"AAAAA.....BBBBBCCCCCC"
    assert subject.stat("/shared", fs=other).size == 21
    subject.settle()
    assert subject.read("/shared") == b"AAAAA.....BBBBBCCCCCC"


def test_closing_twice_is_harmless(subject: Subject) -> None:
    """A second CLOSE of a handle changes nothing."""
    handle = subject.open("/f", CREATE)
    subject.run(handle.write(0, b"once"))
    subject.run(handle.close())
    subject.run(handle.close())
    assert subject.read("/f") == b"once"


def test_an_aborted_new_file_never_appears(subject: Subject) -> None:
    """A client that vanishes without CLOSE leaves no new file behind, ever."""
    handle = subject.open("/half", CREATE)
    subject.run(handle.write(0, b"half of it"))
    subject.run(handle.abort())
    assert not subject.exists("/half")
    subject.settle()
    assert subject.names("/") == []


def test_an_aborted_rewrite_leaves_the_old_contents(subject: Subject, when: str) -> None:
    """A rewrite whose client vanished without CLOSE leaves the previous file, never a torn
    one."""
    subject.write("/victim", b"old contents")
    subject.reach(when)
    handle = subject.open("/victim", CREATE)
    subject.run(handle.write(0, b"half of the new"))
    subject.run(handle.abort())
    assert subject.read("/victim") == b"old contents"
    subject.settle()
    assert subject.read("/victim") == b"old contents"


def test_an_abort_keeps_what_another_handle_closed(subject: Subject) -> None:
    """When one writer CLOSEs and another on the same file is aborted, the file (whose CLOSE
    was acknowledged) is kept with every write."""
    first = subject.open("/f", CREATE)
    second = subject.open("/f", WRITE, fs=subject.session())
    subject.run(first.write(0, b"closed "))
    subject.run(first.close())
    subject.run(second.write(7, b"aborted"))
    subject.run(second.abort())
    subject.settle()
    assert subject.read("/f") == b"closed aborted"


def test_handle_setattr_truncates_and_extends(subject: Subject, when: str) -> None:
    """FSETSTAT size through a writing handle cuts the file or extends it with zeros."""
    subject.write("/f", b"0123456789")
    subject.reach(when)
    handle = subject.open("/f", READ_WRITE)
    subject.run(handle.setattr(SetAttributes(size=4)))
    assert subject.run(handle.read(0, 100)) == b"0123"
    subject.run(handle.setattr(SetAttributes(size=6)))
    assert subject.run(handle.read(0, 100)) == b"0123\0\0"
    assert subject.run(handle.stat()).size == 6
    subject.run(handle.close())
    assert subject.read("/f") == b"0123\0\0"
    subject.settle()
    assert subject.read("/f") == b"0123\0\0"


def test_a_reader_outlives_the_upload(subject: Subject) -> None:
    """A handle opened to read a pending file keeps reading it after the upload lands."""
    subject.write("/f", DATA)
    handle = subject.open("/f", READ)
    assert subject.run(handle.read(0, 10)) == DATA[:10]
    subject.settle()
    assert subject.read_handle(handle, 10) == DATA[10:]
    subject.run(handle.close())


def test_an_edit_outlives_the_upload_of_the_version_it_started_from(subject: Subject) -> None:
    """A pending file opened for writing, its upload landing while the handle is open: the
    CLOSE publishes the edit of that version."""
    subject.write("/f", b"0123456789")
    handle = subject.open("/f", WRITE)
    subject.settle()
    subject.run(handle.write(0, b"AB"))
    subject.run(handle.close())
    assert subject.read("/f") == b"AB23456789"
    subject.settle()
    assert subject.read("/f") == b"AB23456789"


def test_exclusive_create_in_two_sessions(subject: Subject) -> None:
    """Two sessions EXCL-creating one name: one gets the file, the other FileExists."""
    first = subject.open("/lock", EXCLUSIVE)
    with pytest.raises(FileExists):
        subject.open("/lock", EXCLUSIVE, fs=subject.session())
    subject.run(first.write(0, b"mine"))
    subject.run(first.close())
    assert subject.read("/lock") == b"mine"


def test_an_empty_write_changes_nothing(subject: Subject, when: str) -> None:
    """A WRITE of no bytes, even past the end, leaves size and bytes as they were (as a
    pwrite(2) of 0 bytes does)."""
    subject.write("/f", b"0123456789")
    subject.reach(when)
    handle = subject.open("/f", OpenFlags(read=True, write=True))
    subject.run(handle.write(100, b""))
    assert subject.run(handle.stat()).size == 10
    assert subject.read_handle(handle) == b"0123456789"
    subject.run(handle.close())
    subject.settle()
    assert subject.stat("/f").size == 10
    assert subject.read("/f") == b"0123456789"


def test_local_bytes_are_read_without_waiting(subject: Subject, when: str) -> None:
    """A file whose bytes are all in a local file (closed and waiting for its upload; new
    and open for reading and writing) is read without waiting, the bytes ``read`` gives; a
    write-only handle, a file only in the grid, and changes over a grid version are
    read the usual way (None)."""
    subject.write("/f", DATA)
    subject.reach(when)
    reader = subject.open("/f", READ)
    if when == PENDING:
        assert reader.read_ready(5, 100) == DATA[5:105]
        assert reader.read_ready(len(DATA), 100) == b""
    elif when == UPLOADED:
        assert reader.read_ready(5, 100) is None
    assert subject.read_handle(reader) == DATA  # (read_ready agrees at every read)
    subject.run(reader.close())
    writer = subject.open("/g", CREATE)
    subject.run(writer.write(0, b"abc"))
    assert writer.read_ready(0, 10) is None, "opened write-only"
    subject.run(writer.close())
    both = subject.open("/h", OpenFlags(read=True, write=True, create=True))
    subject.run(both.write(0, b"abc"))
    assert both.read_ready(1, 10) == b"bc"
    subject.run(both.close())
    subject.reach(UPLOADED)
    edit = subject.open("/f", READ_WRITE)
    subject.run(edit.write(0, b"xyz"))
    assert edit.read_ready(0, 10) is None, "changes over the grid version"
    assert subject.read_handle(edit)[:10] == b"xyz" + DATA[3:10]
    subject.run(edit.close())
