"""copy_data: a server-side copy between two open handles (SFTP copy-data, ``cp`` over sshfs).

The copy has exactly the bytes of the range copied, wherever the source is (open,
pending or uploaded), and changing the copy never changes the source.
"""

from __future__ import annotations

import random

import pytest

from gateway.fs.errors import InvalidArgument, PermissionDenied
from gateway.fs.interfaces import IOpenFile, OpenFlags
from tests.fs.contract.subject import CREATE, READ, READ_WRITE, WRITE, Subject

DATA = random.Random(5).randbytes(100_000)


def copy(
    subject: Subject, source: str, target: str, read_offset: int = 0, length: int = 0,
    write_offset: int = 0, target_flags: OpenFlags = CREATE,
) -> None:  # fmt: skip
    """OPEN source for reading and target for writing, copy_data, CLOSE both."""
    reading = subject.open(source, READ)
    writing = subject.open(target, target_flags)
    subject.run(subject.fs.copy_data(reading, read_offset, length, writing, write_offset))
    subject.run(reading.close())
    subject.run(writing.close())


def test_a_whole_file_is_copied(subject: Subject, when: str) -> None:
    """length 0 copies from the offset to the end; the copy reads the same, both sides."""
    subject.write("/original", DATA)
    subject.reach(when)
    copy(subject, "/original", "/copy")
    assert subject.read("/copy") == DATA
    assert subject.stat("/copy").size == len(DATA)
    subject.settle()
    assert subject.read("/copy") == DATA
    assert subject.read("/original") == DATA


def test_a_copy_outlives_its_source(subject: Subject, when: str) -> None:
    """The source (pending or uploaded) removed right after the copy: the copy stays whole."""
    subject.write("/original", DATA)
    subject.reach(when)
    copy(subject, "/original", "/copy")
    subject.run(subject.fs.remove("/original"))
    assert subject.read("/copy") == DATA
    subject.settle()
    assert subject.names("/") == ["copy"]
    assert subject.read("/copy") == DATA


def test_a_range_is_copied(subject: Subject, when: str) -> None:
    """A range of the source is copied byte for byte."""
    subject.write("/original", DATA)
    subject.reach(when)
    copy(subject, "/original", "/part", 1000, 5000)
    assert subject.read("/part") == DATA[1000:6000]
    subject.settle()
    assert subject.read("/part") == DATA[1000:6000]


def test_a_copy_to_an_offset_leaves_a_hole(subject: Subject, when: str) -> None:
    """Copied to offset 10 of an empty file, the bytes follow ten zeros."""
    subject.write("/original", DATA)
    subject.reach(when)
    copy(subject, "/original", "/shifted", write_offset=10)
    assert subject.read("/shifted") == bytes(10) + DATA


def test_a_copy_into_the_middle_of_a_file(subject: Subject, when: str) -> None:
    """Copied into an existing file (opened without truncation), the rest of it stays."""
    subject.write("/src", b"XYZ")
    subject.write("/dst", b"0123456789")
    subject.reach(when)
    copy(subject, "/src", "/dst", write_offset=4, target_flags=WRITE)
    assert subject.read("/dst") == b"0123XYZ789"
    subject.settle()
    assert subject.read("/dst") == b"0123XYZ789"


def test_a_length_past_the_end_copies_to_the_end(subject: Subject) -> None:
    """A length reaching past the source's end copies what there is."""
    subject.write("/src", b"0123456789")
    copy(subject, "/src", "/dst", 6, 1000)
    assert subject.read("/dst") == b"6789"


def test_copying_from_a_file_being_written(subject: Subject) -> None:
    """The source may be a file still open for writing: its bytes so far are copied."""
    writer = subject.open("/src", OpenFlags(read=True, write=True, create=True))
    subject.run(writer.write(0, b"written so far"))
    target = subject.open("/dst", CREATE)
    subject.run(subject.fs.copy_data(writer, 0, 0, target, 0))
    subject.run(target.close())
    subject.run(writer.close())
    subject.settle()
    assert subject.read("/dst") == b"written so far"


def test_changing_the_copy_leaves_the_source(subject: Subject, when: str) -> None:
    """Writes into the copy change the copy only."""
    subject.write("/original", DATA)
    subject.reach(when)
    reading = subject.open("/original", READ)
    writing = subject.open("/copy", OpenFlags(read=True, write=True, create=True))
    subject.run(subject.fs.copy_data(reading, 0, 0, writing, 0))
    subject.run(writing.write(100, b"CHANGED"))
    assert subject.run(writing.read(90, 30)) == DATA[90:100] + b"CHANGED" + DATA[107:120]
    subject.run(writing.close())
    subject.run(reading.close())
    subject.settle()
    assert subject.read("/copy") == DATA[:100] + b"CHANGED" + DATA[107:]
    assert subject.read("/original") == DATA


def test_copying_within_one_file(subject: Subject) -> None:
    """A range copied to a place in the same file that does not overlap it is copied."""
    subject.write("/f", b"abcdefghij")
    handle = subject.open("/f", READ_WRITE)
    subject.run(subject.fs.copy_data(handle, 0, 3, handle, 7))
    subject.run(handle.close())
    assert subject.read("/f") == b"abcdefgabc"


def test_overlapping_ranges_of_one_file_are_refused(subject: Subject) -> None:
    """A copy whose source and target ranges overlap in one file is InvalidArgument."""
    subject.write("/f", DATA)
    handle = subject.open("/f", READ_WRITE)
    with pytest.raises(InvalidArgument):
        subject.run(subject.fs.copy_data(handle, 0, 100, handle, 50))
    with pytest.raises(InvalidArgument):
        subject.run(subject.fs.copy_data(handle, 0, 0, handle, 0))
    subject.run(handle.close())
    assert subject.read("/f") == DATA


def test_the_target_must_be_open_for_writing(subject: Subject, when: str) -> None:
    """A target opened for reading only is PermissionDenied; nothing changes."""
    subject.write("/a", b"A")
    subject.write("/b", b"B")
    subject.reach(when)
    source, target = subject.open("/a", READ), subject.open("/b", READ)
    with pytest.raises(PermissionDenied):
        subject.run(subject.fs.copy_data(source, 0, 0, target, 0))
    for handle in (source, target):
        subject.run(handle.close())
    assert subject.read("/b") == b"B"


def test_the_source_must_be_open_for_reading(subject: Subject) -> None:
    """A source opened for writing only is PermissionDenied."""
    subject.write("/a", b"A")
    source: IOpenFile = subject.open("/a", WRITE)
    target = subject.open("/b", CREATE)
    with pytest.raises(PermissionDenied):
        subject.run(subject.fs.copy_data(source, 0, 0, target, 0))
    subject.run(target.close())
    subject.run(source.close())
