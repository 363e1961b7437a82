"""Symbolic links: stored as given, read back by readlink, followed by everything else, never
out of the account's root.

ln -s, tar and rsync -l store and read link targets verbatim; clients follow links to
files and directories as the kernel does under OpenSSH's sftp-server.
"""

from __future__ import annotations

import pytest

from gateway.fs.errors import FileExists, InvalidArgument, NoSuchFile, SymlinkLoop
from gateway.fs.interfaces import SetAttributes
from tests.fs.contract.subject import CREATE, Subject


def symlink(subject: Subject, link: str, target: str) -> None:
    """SYMLINK ``link`` -> ``target``."""
    subject.run(subject.fs.symlink(link, target))


@pytest.mark.parametrize("target", ["target", "/nowhere/at/all", "../../up", "a/./b/../c"])
def test_readlink_returns_the_target_as_given(subject: Subject, target: str) -> None:
    """The target text is stored verbatim (not resolved, not required to exist)."""
    symlink(subject, "/link", target)
    assert subject.run(subject.fs.readlink("/link")) == target
    assert subject.lstat("/link").size == len(target.encode())


def test_reading_through_a_link(subject: Subject, when: str) -> None:
    """OPEN of a link reads its target file (pending or uploaded)."""
    subject.write("/target", b"T")
    symlink(subject, "/rel", "target")
    symlink(subject, "/abs", "/target")
    subject.reach(when)
    assert subject.read("/rel") == b"T"
    assert subject.read("/abs") == b"T"


def test_writing_through_a_link_writes_its_target(subject: Subject) -> None:
    """OPEN for writing of a link to a file writes the target; the link stays a link."""
    subject.write("/target", b"old")
    symlink(subject, "/link", "target")
    subject.write("/link", b"new")
    subject.settle()
    assert subject.read("/target") == b"new"
    assert subject.lstat("/link").kind == "symlink"


def test_a_dangling_link(subject: Subject) -> None:
    """A link to nothing: stat is NoSuchFile, lstat and readlink work, it is listed."""
    symlink(subject, "/dangling", "/nowhere")
    with pytest.raises(NoSuchFile):
        subject.stat("/dangling")
    assert subject.lstat("/dangling").kind == "symlink"
    assert subject.names("/") == ["dangling"]


def test_a_link_to_a_directory_is_followed_inside_paths(subject: Subject) -> None:
    """With ld -> d, ld/x is d/x: read, listed, and created in d."""
    subject.mkdir("/d")
    subject.write("/d/x", b"in d")
    symlink(subject, "/ld", "d")
    assert subject.read("/ld/x") == b"in d"
    assert subject.names("/ld") == ["x"]
    subject.write("/ld/y", b"through the link")
    assert subject.names("/d") == ["x", "y"]
    subject.settle()
    assert subject.read("/d/y") == b"through the link"


def test_readlink_of_something_else(subject: Subject, when: str) -> None:
    """readlink of a file (pending or uploaded) or directory is InvalidArgument; of nothing,
    NoSuchFile."""
    subject.write("/file", b"x")
    subject.mkdir("/dir")
    subject.reach(when)
    for path in ("/file", "/dir"):
        with pytest.raises(InvalidArgument):
            subject.run(subject.fs.readlink(path))
    with pytest.raises(NoSuchFile):
        subject.run(subject.fs.readlink("/none"))


def test_readlink_of_a_file_being_written(subject: Subject) -> None:
    """readlink of a file open for writing is InvalidArgument."""
    handle = subject.open("/f", CREATE)
    with pytest.raises(InvalidArgument):
        subject.run(subject.fs.readlink("/f"))
    subject.run(handle.close())


def test_symlink_onto_a_taken_name(subject: Subject, when: str) -> None:
    """SYMLINK where a file (pending or uploaded), directory or link is: FileExists, nothing
    changes."""
    subject.write("/file", b"x")
    subject.mkdir("/dir")
    symlink(subject, "/link", "file")
    subject.reach(when)
    for path in ("/file", "/dir", "/link"):
        with pytest.raises(FileExists):
            symlink(subject, path, "elsewhere")
    assert subject.read("/file") == b"x"
    assert subject.run(subject.fs.readlink("/link")) == "file"


def test_symlink_onto_a_file_being_written(subject: Subject) -> None:
    """SYMLINK where a file is open for writing: FileExists."""
    handle = subject.open("/f", CREATE)
    with pytest.raises(FileExists):
        symlink(subject, "/f", "elsewhere")
    subject.run(handle.close())
    assert subject.stat("/f").kind == "file"


def test_symlink_in_a_missing_directory(subject: Subject) -> None:
    """SYMLINK in a directory that does not exist: NoSuchFile."""
    with pytest.raises(NoSuchFile):
        symlink(subject, "/no/link", "x")


def test_a_link_loop_fails_clearly(subject: Subject) -> None:
    """a -> b, b -> a: SymlinkLoop (too many levels of symbolic links), never a hang."""
    symlink(subject, "/loop1", "loop2")
    symlink(subject, "/loop2", "loop1")
    with pytest.raises(SymlinkLoop, match="too many levels of symbolic links"):
        subject.stat("/loop1/x")
    with pytest.raises(SymlinkLoop):
        subject.read("/loop1")
    assert subject.lstat("/loop1").kind == "symlink"


def test_links_cannot_climb_out_of_the_root(subject: Subject) -> None:
    """'..' in a link's target stops at the account's root; an absolute target starts there."""
    subject.mkdir("/d")
    subject.write("/d/f", b"F")
    symlink(subject, "/d/up", "../../../../..")
    symlink(subject, "/d/abs", "/d")
    assert subject.run(subject.fs.realpath("/d/up")) == "/"
    assert subject.read("/d/up/d/f") == b"F"
    assert subject.read("/d/abs/f") == b"F"
    assert subject.names("/d/up") == ["d"]


def test_lstat_of_a_link_with_a_trailing_slash_is_its_directory(subject: Subject) -> None:
    """'link/' names the directory the link points at, as the kernel reads it."""
    subject.mkdir("/d")
    symlink(subject, "/ld", "d")
    assert subject.lstat("/ld").kind == "symlink"
    assert subject.lstat("/ld/").kind == "dir"


def test_setattr_without_following_changes_the_links_times(subject: Subject) -> None:
    """lsetstat sets a link's own mtime; its target keeps its own."""
    subject.write("/target", b"0123456789")
    symlink(subject, "/link", "target")
    changes = SetAttributes(atime=1_000_000.0, mtime=1_000_000.0)
    subject.run(subject.fs.setattr("/link", changes, follow_symlinks=False))
    assert subject.lstat("/link").mtime == 1_000_000.0
    assert subject.stat("/link").mtime != 1_000_000.0
