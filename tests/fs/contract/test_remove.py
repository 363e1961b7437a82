"""remove: a file or link goes; a file still open or waiting for its upload is abandoned.

A removed file never comes back: not when its writer later writes and closes, not when
its upload would have landed. Editors and WinSCP remove the old file before renaming the
new one into place; that must not resurrect either.
"""

from __future__ import annotations

import pytest

from gateway.fs.errors import IsADirectory, NoSuchFile
from tests.fs.contract.subject import CREATE, READ, WRITE, Subject


def test_remove_of_a_file(subject: Subject, when: str) -> None:
    """A removed file (pending or uploaded) is gone from stat and the listing, for good."""
    subject.write("/f", b"x")
    subject.reach(when)
    subject.run(subject.fs.remove("/f"))
    assert not subject.exists("/f")
    assert subject.names("/") == []
    subject.settle()
    assert subject.names("/") == []


def test_remove_of_a_file_being_written(subject: Subject) -> None:
    """A file removed while open is gone for every session; its later writes and CLOSE
    succeed and publish nothing, ever."""
    other = subject.session()
    handle = subject.open("/doomed", CREATE)
    subject.run(handle.write(0, b"never to be seen"))
    subject.run(subject.fs.remove("/doomed"))
    with pytest.raises(NoSuchFile):
        subject.stat("/doomed", fs=other)
    subject.run(handle.write(16, b"!"))
    subject.run(handle.close())
    assert not subject.exists("/doomed")
    subject.settle()
    assert subject.names("/", fs=other) == []


def test_remove_of_an_uploaded_file_being_rewritten(subject: Subject) -> None:
    """An uploaded file removed while a writer has it open: neither version stays."""
    subject.write("/f", b"old")
    subject.settle()
    handle = subject.open("/f", WRITE)
    subject.run(handle.write(0, b"new"))
    subject.run(subject.fs.remove("/f"))
    subject.run(handle.close())
    subject.settle()
    assert subject.names("/") == []


def test_a_name_removed_while_pending_can_be_written_again(subject: Subject, when: str) -> None:
    """Remove a pending file, write a new one under its name: only the new one lands."""
    subject.write("/f", b"first")
    subject.reach(when)
    subject.run(subject.fs.remove("/f"))
    subject.write("/f", b"second")
    assert subject.read("/f") == b"second"
    subject.settle()
    assert subject.read("/f") == b"second"
    assert subject.names("/") == ["f"]


def test_a_new_file_is_not_the_removed_one_still_open(subject: Subject) -> None:
    """After a remove, a new file of the same name is independent of the old open handle."""
    old = subject.open("/f", CREATE)
    subject.run(old.write(0, b"old handle"))
    subject.run(subject.fs.remove("/f"))
    subject.write("/f", b"new file")
    subject.run(old.write(0, b"OLD"))
    subject.run(old.close())
    assert subject.read("/f") == b"new file"
    subject.settle()
    assert subject.read("/f") == b"new file"


def test_a_reader_keeps_reading_a_removed_file(subject: Subject, when: str) -> None:
    """A handle open for reading still reads the bytes after the file is removed (as a
    descriptor does)."""
    subject.write("/f", b"still here")
    subject.reach(when)
    handle = subject.open("/f", READ)
    subject.run(subject.fs.remove("/f"))
    assert subject.run(handle.read(0, 100)) == b"still here"
    subject.run(handle.close())


def test_remove_of_a_missing_name(subject: Subject) -> None:
    """remove of a name that does not exist: NoSuchFile."""
    with pytest.raises(NoSuchFile):
        subject.run(subject.fs.remove("/missing"))


def test_remove_twice(subject: Subject, when: str) -> None:
    """The second remove of a file is NoSuchFile."""
    subject.write("/f", b"x")
    subject.reach(when)
    subject.run(subject.fs.remove("/f"))
    with pytest.raises(NoSuchFile):
        subject.run(subject.fs.remove("/f"))


def test_remove_of_a_directory(subject: Subject) -> None:
    """remove of a directory (empty or not) is IsADirectory; it stays with its contents."""
    subject.mkdir("/d")
    subject.write("/d/f", b"x")
    with pytest.raises(IsADirectory):
        subject.run(subject.fs.remove("/d"))
    assert subject.names("/d") == ["f"]


def test_remove_of_a_link_keeps_its_target(subject: Subject) -> None:
    """remove of a symbolic link removes the link only."""
    subject.write("/target", b"T")
    subject.mkdir("/d")
    subject.run(subject.fs.symlink("/file-link", "target"))
    subject.run(subject.fs.symlink("/dir-link", "d"))
    subject.run(subject.fs.remove("/file-link"))
    subject.run(subject.fs.remove("/dir-link"))
    assert subject.names("/") == ["d", "target"]
    assert subject.read("/target") == b"T"


def test_remove_inside_a_directory(subject: Subject, when: str) -> None:
    """A file removed from a directory leaves its siblings."""
    subject.mkdir("/d")
    subject.write("/d/a", b"a")
    subject.write("/d/b", b"b")
    subject.reach(when)
    subject.run(subject.fs.remove("/d/a"))
    subject.settle()
    assert subject.names("/d") == ["b"]
    assert subject.read("/d/b") == b"b"
