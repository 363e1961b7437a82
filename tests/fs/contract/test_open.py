"""OPEN with every flag combination a client sends, and the errors it gets, as open(2) gives.

Clients (OpenSSH's sftp, sshfs, gvfs, WinSCP) choose their save strategy from these
answers: an exclusive create that fails on an existing name, a write without truncation
that keeps the rest of the file, an append that writes at the end.
"""

from __future__ import annotations

import pytest

from gateway.fs.errors import FileExists, IsADirectory, NoSuchFile, PermissionDenied
from gateway.fs.interfaces import OpenFlags, SetAttributes
from tests.fs.contract.subject import (
    APPEND,
    CREATE,
    EXCLUSIVE,
    READ,
    READ_WRITE,
    WRITE,
    Subject,
    flag_names,
)


@pytest.mark.parametrize("flags", [READ, WRITE, READ_WRITE, APPEND], ids=flag_names)
def test_opening_a_missing_file_without_create_fails(subject: Subject, flags: OpenFlags) -> None:
    """Without CREAT, a name that does not exist is NoSuchFile, and nothing is created."""
    with pytest.raises(NoSuchFile):
        subject.open("/missing", flags)
    assert subject.names("/") == []


def test_truncate_without_create_does_not_create(subject: Subject) -> None:
    """TRUNC alone on a missing name is NoSuchFile."""
    with pytest.raises(NoSuchFile):
        subject.open("/missing", OpenFlags(write=True, truncate=True))
    assert not subject.exists("/missing")


def test_opening_in_a_missing_directory_fails(subject: Subject) -> None:
    """Even with CREAT, a file cannot be made in a directory that does not exist."""
    with pytest.raises(NoSuchFile):
        subject.open("/nowhere/file", CREATE)
    assert subject.names("/") == []


def test_create_makes_an_empty_file_at_once(subject: Subject) -> None:
    """CREAT: the file exists (empty) from the OPEN on, before any write or CLOSE."""
    handle = subject.open("/new", CREATE)
    assert subject.stat("/new").size == 0
    assert subject.names("/") == ["new"]
    subject.run(handle.close())
    assert subject.read("/new") == b""


def test_create_without_write_makes_an_empty_file(subject: Subject, when: str) -> None:
    """CREAT|READ on a missing name (no WRITE) still creates it, empty."""
    handle = subject.open("/created", OpenFlags(read=True, create=True))
    assert subject.run(handle.read(0, 10)) == b""
    subject.run(handle.close())
    subject.reach(when)
    assert subject.stat("/created").size == 0
    assert subject.names("/") == ["created"]


def test_create_without_truncate_keeps_an_existing_file(subject: Subject, when: str) -> None:
    """CREAT|WRITE on an existing file opens it as it is: its bytes stay."""
    subject.write("/f", b"hello world")
    subject.reach(when)
    handle = subject.open("/f", OpenFlags(write=True, create=True))
    subject.run(handle.write(0, b"HELLO"))
    subject.run(handle.close())
    assert subject.read("/f") == b"HELLO world"


def test_exclusive_create_makes_a_new_file(subject: Subject) -> None:
    """CREAT|EXCL on a free name creates the file."""
    handle = subject.open("/fresh", EXCLUSIVE)
    subject.run(handle.write(0, b"first"))
    subject.run(handle.close())
    assert subject.read("/fresh") == b"first"


def test_exclusive_create_refuses_an_existing_file(subject: Subject, when: str) -> None:
    """CREAT|EXCL on a file that exists (pending or uploaded) is FileExists; the file stays."""
    subject.write("/taken", b"original")
    subject.reach(when)
    with pytest.raises(FileExists):
        subject.open("/taken", EXCLUSIVE)
    assert subject.read("/taken") == b"original"


def test_exclusive_create_refuses_a_file_being_written(subject: Subject) -> None:
    """CREAT|EXCL on a name another handle has open for writing is FileExists."""
    handle = subject.open("/busy", CREATE)
    with pytest.raises(FileExists):
        subject.open("/busy", EXCLUSIVE)
    subject.run(handle.close())


def test_exclusive_create_refuses_a_symlink_even_dangling(subject: Subject) -> None:
    """CREAT|EXCL does not follow a symbolic link: the link's name is taken (O_EXCL)."""
    subject.run(subject.fs.symlink("/link", "/nowhere"))
    with pytest.raises(FileExists):
        subject.open("/link", EXCLUSIVE)
    assert not subject.exists("/nowhere")


def test_exclusive_create_refuses_a_directory(subject: Subject) -> None:
    """CREAT|EXCL on a directory's name fails (EEXIST or EISDIR: both say the name is
    taken, and SFTP answers FX_FAILURE to either); the directory stays."""
    subject.mkdir("/d")
    with pytest.raises((FileExists, IsADirectory)):
        subject.open("/d", EXCLUSIVE)
    assert subject.stat("/d").kind == "dir"


@pytest.mark.parametrize("flags", [READ, WRITE, CREATE, READ_WRITE], ids=flag_names)
def test_a_directory_cannot_be_opened_as_a_file(subject: Subject, flags: OpenFlags) -> None:
    """OPEN of a directory, for reading or writing, is IsADirectory; the directory stays."""
    subject.mkdir("/d")
    with pytest.raises(IsADirectory):
        subject.open("/d", flags)
    assert subject.stat("/d").kind == "dir"


@pytest.mark.parametrize("flags", [READ, CREATE], ids=flag_names)
def test_the_root_cannot_be_opened_as_a_file(subject: Subject, flags: OpenFlags) -> None:
    """OPEN of '/' is IsADirectory."""
    with pytest.raises(IsADirectory):
        subject.open("/", flags)


def test_truncate_empties_an_existing_file(subject: Subject, when: str) -> None:
    """CREAT|TRUNC on an existing file empties it, even with nothing written."""
    subject.write("/f", b"0123456789")
    subject.reach(when)
    handle = subject.open("/f", CREATE)
    assert subject.stat("/f").size == 0
    subject.run(handle.close())
    assert subject.stat("/f").size == 0
    subject.settle()
    assert subject.read("/f") == b""


def test_write_without_truncate_keeps_the_rest(subject: Subject, when: str) -> None:
    """WRITE alone overwrites in place: bytes past the write stay."""
    subject.write("/f", b"hello world")
    subject.reach(when)
    handle = subject.open("/f", WRITE)
    subject.run(handle.write(0, b"HELLO"))
    subject.run(handle.close())
    assert subject.read("/f") == b"HELLO world"
    subject.settle()
    assert subject.read("/f") == b"HELLO world"


def test_append_writes_at_the_end_whatever_the_offset(subject: Subject, when: str) -> None:
    """An APPEND handle's writes go to the end of the file, whatever offset they name."""
    subject.write("/log", b"one\n")
    subject.reach(when)
    handle = subject.open("/log", APPEND)
    subject.run(handle.write(0, b"two\n"))
    subject.run(handle.write(2, b"three\n"))
    subject.run(handle.close())
    assert subject.read("/log") == b"one\ntwo\nthree\n"


def test_append_with_create_makes_the_file(subject: Subject) -> None:
    """APPEND|CREAT on a missing name creates it and writes from 0."""
    handle = subject.open("/new.log", OpenFlags(write=True, append=True, create=True))
    subject.run(handle.write(100, b"first"))
    subject.run(handle.close())
    assert subject.read("/new.log") == b"first"


def test_a_read_handle_refuses_writes(subject: Subject, when: str) -> None:
    """WRITE through a handle opened READ only is PermissionDenied; the file is unchanged."""
    subject.write("/f", b"keep")
    subject.reach(when)
    handle = subject.open("/f", READ)
    with pytest.raises(PermissionDenied):
        subject.run(handle.write(0, b"x"))
    assert subject.run(handle.read(0, 10)) == b"keep"
    subject.run(handle.close())
    assert subject.read("/f") == b"keep"


def test_a_write_only_handle_refuses_reads(subject: Subject) -> None:
    """READ through a handle opened WRITE only is PermissionDenied."""
    handle = subject.open("/f", CREATE)
    subject.run(handle.write(0, b"secret"))
    with pytest.raises(PermissionDenied):
        subject.run(handle.read(0, 10))
    subject.run(handle.close())


def test_a_read_write_handle_reads_its_own_writes(subject: Subject, when: str) -> None:
    """READ|WRITE: a write is read back through the same handle before CLOSE."""
    subject.write("/f", b"hello world!")
    subject.reach(when)
    handle = subject.open("/f", READ_WRITE)
    subject.run(handle.write(6, b"WORLD"))
    assert subject.run(handle.read(0, 100)) == b"hello WORLD!"
    subject.run(handle.close())
    assert subject.read("/f") == b"hello WORLD!"


def test_a_read_handle_refuses_setattr(subject: Subject) -> None:
    """FSETSTAT through a READ-only handle is PermissionDenied."""
    subject.write("/f", b"keep")
    handle = subject.open("/f", READ)
    with pytest.raises(PermissionDenied):
        subject.run(handle.setattr(SetAttributes(size=0)))
    subject.run(handle.close())
    assert subject.read("/f") == b"keep"


def test_a_handle_names_the_path_it_was_opened_on(subject: Subject) -> None:
    """A handle's path is the canonical path it opened ('.' and '..' resolved)."""
    subject.mkdir("/d")
    subject.write("/d/f", b"x")
    reading = subject.open("/d/./../d/f", READ)
    writing = subject.open("/d/../d/g", CREATE)
    assert (reading.path, writing.path) == ("/d/f", "/d/g")
    subject.run(reading.close())
    subject.run(writing.close())
