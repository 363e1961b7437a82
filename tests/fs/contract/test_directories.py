"""Directories: list (the grid's entries merged with files still being written or uploaded),
mkdir and rmdir, with the errors mkdir(2) and rmdir(2) give.

A file is listed from its OPEN on, with its current size, and its entry is the same
before and after its upload: sshfs, rsync and ``ls`` see one consistent directory.
"""

from __future__ import annotations

import pytest

from gateway.fs.errors import (
    DirectoryNotEmpty,
    FileExists,
    NoSuchFile,
    NotADirectory,
    PermissionDenied,
)
from tests.fs.contract.subject import (
    CREATE,
    Subject,
)


def test_a_new_account_is_empty(subject: Subject) -> None:
    """The root of a fresh account lists nothing."""
    assert subject.names("/") == []


def test_a_listing_has_every_kind_sorted_by_name(subject: Subject, when: str) -> None:
    """Files, directories and links are listed by name, with their kinds and sizes."""
    subject.write("/b.txt", b"12345")
    subject.mkdir("/c")
    subject.run(subject.fs.symlink("/a", "b.txt"))
    subject.reach(when)
    listing = subject.listing("/")
    assert list(listing) == ["a", "b.txt", "c"]
    assert [listing[n].kind for n in listing] == ["symlink", "file", "dir"]
    assert listing["b.txt"].size == 5
    assert listing["b.txt"] == subject.stat("/b.txt")


def test_a_listing_merges_open_pending_and_uploaded_files(subject: Subject) -> None:
    """Uploaded, pending and open files are all listed, each once, with current sizes."""
    subject.write("/uploaded", b"u" * 10)
    subject.settle()
    subject.write("/pending", b"p" * 20)
    handle = subject.open("/open", CREATE)
    subject.run(handle.write(0, b"o" * 30))
    listing = subject.listing("/")
    assert {n: a.size for n, a in listing.items()} == {"open": 30, "pending": 20, "uploaded": 10}
    assert list(listing) == ["open", "pending", "uploaded"]
    subject.run(handle.close())
    subject.settle()
    assert {n: a.size for n, a in subject.listing("/").items()} == {
        "open": 30, "pending": 20, "uploaded": 10,
    }  # fmt: skip


def test_a_file_is_listed_the_same_before_and_after_its_upload(subject: Subject) -> None:
    """A pending file's entry (size, mode, times) is exactly its entry once uploaded."""
    subject.mkdir("/d")
    subject.write("/d/f", b"contents")
    before = subject.listing("/d")
    subject.settle()
    assert subject.listing("/d") == before


def test_a_rewritten_file_is_listed_once(subject: Subject) -> None:
    """A file uploaded and then rewritten (pending again) is one entry with the new size."""
    subject.write("/f", b"old")
    subject.settle()
    subject.write("/f", b"newer")
    assert {n: a.size for n, a in subject.listing("/").items()} == {"f": 5}


def test_listing_a_missing_directory(subject: Subject) -> None:
    """list of a name that does not exist is NoSuchFile."""
    with pytest.raises(NoSuchFile):
        subject.names("/missing")


def test_listing_a_file(subject: Subject, when: str) -> None:
    """list of a file is NotADirectory."""
    subject.write("/f", b"x")
    subject.reach(when)
    with pytest.raises(NotADirectory):
        subject.names("/f")


def test_mkdir_makes_an_empty_directory(subject: Subject) -> None:
    """mkdir: the directory exists, is listed in its parent, and is empty."""
    subject.mkdir("/d")
    assert subject.stat("/d").kind == "dir"
    assert subject.names("/") == ["d"]
    assert subject.names("/d") == []


def test_mkdir_nested(subject: Subject) -> None:
    """Directories nest; files are made and listed inside them."""
    subject.mkdir("/a")
    subject.mkdir("/a/b")
    subject.write("/a/b/f", b"deep")
    assert subject.names("/a") == ["b"]
    assert subject.names("/a/b") == ["f"]
    subject.settle()
    assert subject.read("/a/b/f") == b"deep"


def test_mkdir_of_a_taken_name(subject: Subject, when: str) -> None:
    """mkdir where a directory, a file (pending or uploaded) or a link is: FileExists."""
    subject.mkdir("/d")
    subject.write("/f", b"x")
    subject.run(subject.fs.symlink("/l", "d"))
    subject.reach(when)
    for name in ("/d", "/f", "/l"):
        with pytest.raises(FileExists):
            subject.mkdir(name)
    assert subject.read("/f") == b"x"


def test_mkdir_where_a_file_is_open(subject: Subject) -> None:
    """mkdir of a name a handle has open for writing: FileExists."""
    handle = subject.open("/f", CREATE)
    with pytest.raises(FileExists):
        subject.mkdir("/f")
    subject.run(handle.close())
    assert subject.stat("/f").kind == "file"


def test_mkdir_in_a_missing_directory(subject: Subject) -> None:
    """mkdir of no/such: NoSuchFile (no parent is made)."""
    with pytest.raises(NoSuchFile):
        subject.mkdir("/no/such")
    assert subject.names("/") == []


def test_mkdir_of_the_root(subject: Subject) -> None:
    """mkdir('/') is FileExists (EEXIST, as OpenSSH answers it), and the root stays."""
    with pytest.raises(FileExists):
        subject.mkdir("/")
    assert subject.stat("/").kind == "dir"


def test_rmdir_removes_an_empty_directory(subject: Subject) -> None:
    """rmdir: the directory is gone, from stat and from its parent's listing."""
    subject.mkdir("/d")
    subject.run(subject.fs.rmdir("/d"))
    assert not subject.exists("/d")
    assert subject.names("/") == []


def test_rmdir_of_a_directory_with_a_file(subject: Subject, when: str) -> None:
    """rmdir of a directory holding a file (pending or uploaded): DirectoryNotEmpty, and the
    directory and file stay."""
    subject.mkdir("/d")
    subject.write("/d/f", b"x")
    subject.reach(when)
    with pytest.raises(DirectoryNotEmpty):
        subject.run(subject.fs.rmdir("/d"))
    assert subject.names("/d") == ["f"]
    subject.settle()
    assert subject.read("/d/f") == b"x"


def test_rmdir_of_a_directory_with_a_file_being_written(subject: Subject) -> None:
    """A file still open inside a directory keeps it from being removed."""
    subject.mkdir("/d")
    handle = subject.open("/d/f", CREATE)
    with pytest.raises(DirectoryNotEmpty):
        subject.run(subject.fs.rmdir("/d"))
    subject.run(handle.write(0, b"kept"))
    subject.run(handle.close())
    subject.settle()
    assert subject.read("/d/f") == b"kept"


def test_rmdir_of_a_directory_with_a_subdirectory(subject: Subject) -> None:
    """A directory holding an empty directory is not empty."""
    subject.mkdir("/d")
    subject.mkdir("/d/sub")
    with pytest.raises(DirectoryNotEmpty):
        subject.run(subject.fs.rmdir("/d"))
    assert subject.names("/d") == ["sub"]


def test_rmdir_after_its_files_are_removed(subject: Subject, when: str) -> None:
    """Once its files are removed (pending or uploaded), a directory can be removed."""
    subject.mkdir("/d")
    subject.write("/d/f", b"x")
    subject.reach(when)
    subject.run(subject.fs.remove("/d/f"))
    subject.run(subject.fs.rmdir("/d"))
    subject.settle()
    assert subject.names("/") == []


def test_rmdir_of_a_missing_directory(subject: Subject) -> None:
    """rmdir of a name that does not exist: NoSuchFile."""
    with pytest.raises(NoSuchFile):
        subject.run(subject.fs.rmdir("/missing"))


def test_rmdir_of_a_file(subject: Subject, when: str) -> None:
    """rmdir of a file: NotADirectory, and the file stays."""
    subject.write("/f", b"x")
    subject.reach(when)
    with pytest.raises(NotADirectory):
        subject.run(subject.fs.rmdir("/f"))
    assert subject.read("/f") == b"x"


def test_rmdir_of_the_root(subject: Subject) -> None:
    """The root cannot be removed (PermissionDenied)."""
    with pytest.raises(PermissionDenied):
        subject.run(subject.fs.rmdir("/"))
    assert subject.stat("/").kind == "dir"


def test_rmdir_of_a_symlink_to_a_directory(subject: Subject) -> None:
    """rmdir does not follow a link to a directory: NotADirectory, and both stay."""
    subject.mkdir("/d")
    subject.run(subject.fs.symlink("/l", "d"))
    with pytest.raises(NotADirectory):
        subject.run(subject.fs.rmdir("/l"))
    assert subject.names("/") == ["d", "l"]
