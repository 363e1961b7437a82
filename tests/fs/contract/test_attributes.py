"""stat, lstat and setattr: sizes, kinds, modes and times as a client reads and sets them.

cp -p, tar x, rsync and make read and set modes and mtimes; truncate sets sizes; the
permission bits say whether a file can be written (``chmod a-w`` makes it read-only
until ``u+w``). What a client sets is what it reads back, before and after the upload.
"""

from __future__ import annotations

import pytest

from gateway.fs.errors import NoSuchFile, NotADirectory, PermissionDenied
from gateway.fs.interfaces import OpenFlags, SetAttributes
from tests.fs.contract.subject import (
    CREATE,
    READ,
    WRITE,
    Subject,
    flag_names,
)


def test_the_root_is_a_directory(subject: Subject) -> None:
    """stat('/') is a writable directory."""
    attrs = subject.stat("/")
    assert attrs.kind == "dir"
    assert attrs.mode & 0o700 == 0o700


def test_a_file_a_directory_and_a_link_have_their_kinds(subject: Subject, when: str) -> None:
    """stat reports kind, size and the matching st_mode type bits."""
    subject.write("/file", b"x" * 1234)
    subject.mkdir("/dir")
    subject.run(subject.fs.symlink("/link", "file"))
    subject.reach(when)
    file, directory = subject.stat("/file"), subject.stat("/dir")
    assert (file.kind, file.size, file.st_mode & 0o170000) == ("file", 1234, 0o100000)
    assert (directory.kind, directory.st_mode & 0o170000) == ("dir", 0o040000)
    assert subject.lstat("/link").st_mode & 0o170000 == 0o120000


def test_stat_follows_a_symlink_and_lstat_does_not(subject: Subject, when: str) -> None:
    """stat of a link is its target's attributes; lstat is the link's own (size: the target
    text's length)."""
    subject.write("/file", b"x" * 1234)
    subject.run(subject.fs.symlink("/link", "file"))
    subject.reach(when)
    assert subject.stat("/link") == subject.stat("/file")
    link = subject.lstat("/link")
    assert (link.kind, link.size) == ("symlink", len(b"file"))


def test_stat_of_a_missing_name(subject: Subject) -> None:
    """stat and lstat of a name that does not exist are NoSuchFile."""
    with pytest.raises(NoSuchFile):
        subject.stat("/missing")
    with pytest.raises(NoSuchFile):
        subject.lstat("/missing/below")


def test_a_file_used_as_a_directory(subject: Subject, when: str) -> None:
    """A path through a file (file/below) is NotADirectory (ENOTDIR), whether the file has
    landed or not."""
    subject.write("/file", b"x")
    subject.reach(when)
    with pytest.raises(NotADirectory):
        subject.stat("/file/below")


def test_new_files_and_directories_get_default_modes(subject: Subject, when: str) -> None:
    """Without a mode at OPEN or MKDIR, a file is 0644 and a directory 0755."""
    subject.write("/f", b"x")
    subject.mkdir("/d")
    subject.reach(when)
    assert subject.stat("/f").mode == 0o644
    assert subject.stat("/d").mode == 0o755


def test_a_mode_given_at_creation_is_kept_under_the_umask(subject: Subject, when: str) -> None:
    """The mode asked for at OPEN or MKDIR, less a 022 umask, is the new object's."""
    handle = subject.open("/private", CREATE, SetAttributes(mode=0o600))
    subject.run(handle.close())
    handle = subject.open("/shared", CREATE, SetAttributes(mode=0o666))
    subject.run(handle.close())
    subject.mkdir("/d", SetAttributes(mode=0o700))
    subject.reach(when)
    assert subject.stat("/private").mode == 0o600
    assert subject.stat("/shared").mode == 0o644
    assert subject.stat("/d").mode == 0o700


def test_setattr_size_truncates_and_extends(subject: Subject, when: str) -> None:
    """SETSTAT size cuts a closed file or extends it with zeros, on both sides of uploads."""
    subject.write("/f", b"0123456789")
    subject.reach(when)
    subject.setattr("/f", size=4)
    assert subject.read("/f") == b"0123"
    assert subject.stat("/f").size == 4
    subject.setattr("/f", size=8)
    assert subject.read("/f") == b"0123\0\0\0\0"
    subject.settle()
    assert subject.read("/f") == b"0123\0\0\0\0"
    assert subject.stat("/f").size == 8


def test_setattr_size_of_an_open_file(subject: Subject) -> None:
    """SETSTAT size by path on a file still open for writing changes what the handle sees."""
    handle = subject.open("/f", OpenFlags(read=True, write=True, create=True))
    subject.run(handle.write(0, b"0123456789"))
    subject.setattr("/f", size=3)
    assert subject.run(handle.read(0, 100)) == b"012"
    subject.run(handle.close())
    subject.settle()
    assert subject.read("/f") == b"012"


def test_setattr_mtime_comes_back(subject: Subject, when: str) -> None:
    """SETSTAT mtime is what stat and the listing report (atime reads as mtime: no atime
    is kept), before and after the upload."""
    subject.write("/f", b"data")
    subject.reach(when)
    subject.run(subject.fs.setattr("/f", SetAttributes(atime=1_500_000_000.0, mtime=1.6e9)))
    attrs = subject.stat("/f")
    assert (attrs.mtime, attrs.atime) == (1.6e9, 1.6e9)
    assert subject.listing("/")["f"].mtime == 1.6e9
    subject.settle()
    assert subject.stat("/f").mtime == 1.6e9


def test_setattr_mode_comes_back(subject: Subject, when: str) -> None:
    """SETSTAT mode is what stat and the listing report, before and after the upload."""
    subject.write("/f", b"data")
    subject.reach(when)
    subject.setattr("/f", mode=0o600)
    assert subject.stat("/f").mode == 0o600
    assert subject.listing("/")["f"].mode == 0o600
    subject.settle()
    assert subject.stat("/f").mode == 0o600


def test_setattr_through_a_handle(subject: Subject) -> None:
    """FSETSTAT size, mode and times on an open file are the closed file's."""
    subject.write("/f", b"0123456789")
    handle = subject.open("/f", WRITE)
    subject.run(handle.setattr(SetAttributes(size=2)))
    subject.run(handle.setattr(SetAttributes(mode=0o640)))
    subject.run(handle.setattr(SetAttributes(atime=1_400_000_000.0, mtime=1_450_000_000.0)))
    subject.run(handle.close())
    for _ in range(2):
        attrs = subject.stat("/f")
        assert (attrs.size, attrs.mode, attrs.mtime) == (2, 0o640, 1_450_000_000.0)
        assert subject.read("/f") == b"01"
        subject.settle()


def test_setattr_of_a_directory(subject: Subject) -> None:
    """A directory's mtime and mode can be set."""
    subject.mkdir("/d")
    subject.setattr("/d", mtime=1_300_000_000.0)
    subject.setattr("/d", mode=0o700)
    attrs = subject.stat("/d")
    assert (attrs.mtime, attrs.mode) == (1_300_000_000.0, 0o700)


def test_setattr_of_a_missing_name(subject: Subject) -> None:
    """SETSTAT of a name that does not exist is NoSuchFile, and creates nothing."""
    with pytest.raises(NoSuchFile):
        subject.setattr("/missing", mode=0o600)
    with pytest.raises(NoSuchFile):
        subject.setattr("/missing", size=0)
    assert subject.names("/") == []


def test_chmod_a_minus_w_shows_no_write_bits(subject: Subject, when: str) -> None:
    """chmod 0444: stat shows no w bit, on both sides of the upload."""
    subject.write("/ro", b"keep")
    subject.reach(when)
    subject.setattr("/ro", mode=0o444)
    assert subject.stat("/ro").mode == 0o444
    subject.settle()
    assert subject.stat("/ro").mode == 0o444


@pytest.mark.parametrize(
    "flags",
    [WRITE, CREATE, OpenFlags(write=True, append=True), OpenFlags(truncate=True)],
    ids=flag_names,
)
def test_chmod_a_minus_w_refuses_writers(subject: Subject, when: str, flags: OpenFlags) -> None:
    """A file without w bits cannot be opened for writing or truncation; it can be read."""
    subject.write("/ro", b"keep")
    subject.reach(when)
    subject.setattr("/ro", mode=0o444)
    subject.reach(when)
    with pytest.raises(PermissionDenied):
        subject.open("/ro", flags)
    assert subject.read("/ro") == b"keep"


def test_chmod_a_minus_w_refuses_setattr_size(subject: Subject, when: str) -> None:
    """truncate(1) of a file without w bits is refused."""
    subject.write("/ro", b"keep")
    subject.setattr("/ro", mode=0o444)
    subject.reach(when)
    with pytest.raises(PermissionDenied):
        subject.setattr("/ro", size=0)
    assert subject.read("/ro") == b"keep"


def test_u_plus_w_makes_a_file_writable_again(subject: Subject, when: str) -> None:
    """After chmod 0444 then 0644 the file can be rewritten."""
    subject.write("/ro", b"keep")
    subject.setattr("/ro", mode=0o444)
    subject.reach(when)
    subject.setattr("/ro", mode=0o644)
    assert subject.stat("/ro").mode == 0o644
    subject.write("/ro", b"changed")
    assert subject.read("/ro") == b"changed"
    subject.settle()
    assert subject.read("/ro") == b"changed"


def test_a_writer_keeps_writing_after_chmod_a_minus_w(subject: Subject) -> None:
    """A handle open for writing when its file is made read-only goes on writing (as a
    descriptor does); the closed file has its bytes and the read-only mode."""
    handle = subject.open("/f", CREATE)
    subject.setattr("/f", mode=0o444)
    subject.run(handle.write(0, b"still mine"))
    subject.run(handle.close())
    for _ in range(2):
        assert subject.read("/f") == b"still mine"
        assert subject.stat("/f").mode == 0o444
        subject.settle()
    with pytest.raises(PermissionDenied):
        subject.open("/f", WRITE)


def test_a_mode_set_on_an_open_unwritten_file_is_published(subject: Subject) -> None:
    """chmod by path of an uploaded file opened for writing but not written: the mode set
    is the file's after the CLOSE, and after the upload."""
    subject.write("/f", b"data")
    subject.settle()
    handle = subject.open("/f", WRITE)
    subject.setattr("/f", mode=0o600)
    subject.run(handle.close())
    assert subject.stat("/f").mode == 0o600
    subject.settle()
    assert subject.stat("/f").mode == 0o600
    assert subject.read("/f") == b"data"


def test_setattr_through_a_link_changes_its_target(subject: Subject) -> None:
    """SETSTAT of a symbolic link (following it) changes the file it points at."""
    subject.write("/target", b"0123456789")
    subject.run(subject.fs.symlink("/link", "target"))
    subject.setattr("/link", size=4)
    subject.setattr("/link", mode=0o600, mtime=1_000_000_000.0)
    attrs = subject.stat("/target")
    assert (attrs.mode, attrs.mtime, attrs.size) == (0o600, 1_000_000_000.0, 4)
    assert subject.lstat("/link").kind == "symlink"


def test_chmod_a_minus_w_of_an_open_file_refuses_new_writers(subject: Subject) -> None:
    """A file made read-only while a writer has it open refuses a further OPEN for writing
    (the handle already open keeps writing, as a descriptor does)."""
    handle = subject.open("/f", CREATE)
    subject.setattr("/f", mode=0o444)
    subject.run(handle.write(0, b"still mine"))
    with pytest.raises(PermissionDenied):
        subject.open("/f", WRITE)
    subject.run(handle.close())


def test_writing_sets_mtime_and_an_upload_keeps_it(subject: Subject) -> None:
    """mtime is when the file was last written; the upload changes no attribute."""
    handle = subject.open("/f", CREATE)
    subject.advance(5)
    subject.run(handle.write(0, b"data"))
    written = subject.now()
    subject.advance(5)
    subject.run(handle.close())
    before = subject.stat("/f")
    assert before.mtime == written
    subject.settle()
    assert subject.stat("/f") == before
    assert subject.listing("/")["f"] == before


def test_truncating_at_open_moves_mtime(subject: Subject, when: str) -> None:
    """OPEN with TRUNC of an existing file sets its mtime to the time of the OPEN, even with
    nothing written (as open(2) with O_TRUNC does)."""
    subject.write("/f", b"data")
    subject.reach(when)
    subject.advance(30)
    handle = subject.open("/f", CREATE)
    opened = subject.now()
    subject.advance(30)
    subject.run(handle.close())
    assert subject.stat("/f").mtime == opened
    subject.settle()
    assert subject.stat("/f").mtime == opened


def test_opening_without_writing_keeps_mtime(subject: Subject, when: str) -> None:
    """OPEN for writing and CLOSE with no write: the file's mtime does not move."""
    subject.write("/f", b"data")
    subject.reach(when)
    before = subject.stat("/f").mtime
    subject.advance(30)
    handle = subject.open("/f", WRITE)
    subject.run(handle.close())
    subject.advance(30)
    assert subject.stat("/f").mtime == before
    subject.settle()
    assert subject.stat("/f").mtime == before


def test_reading_keeps_mtime(subject: Subject, when: str) -> None:
    """Reading a file changes none of its attributes."""
    subject.write("/f", b"data")
    subject.reach(when)
    before = subject.stat("/f")
    subject.advance(30)
    handle = subject.open("/f", READ)
    subject.run(handle.read(0, 10))
    subject.run(handle.close())
    assert subject.stat("/f") == before


def test_a_read_only_file_can_be_removed_and_renamed(subject: Subject, when: str) -> None:
    """chmod a-w protects a file's contents, not its name: rm -f and mv still work (the
    directory is writable)."""
    subject.write("/a", b"A")
    subject.write("/b", b"B")
    subject.setattr("/a", mode=0o444)
    subject.setattr("/b", mode=0o444)
    subject.reach(when)
    subject.run(subject.fs.rename("/a", "/c", False))
    subject.run(subject.fs.remove("/b"))
    subject.settle()
    assert subject.names("/") == ["c"]
    assert subject.stat("/c").mode == 0o444


def test_a_file_created_read_only_is_written_by_its_creator(subject: Subject) -> None:
    """OPEN creating a file with mode 0444: the creating handle writes it; later writers are
    refused."""
    handle = subject.open("/ro", CREATE, SetAttributes(mode=0o444))
    subject.run(handle.write(0, b"written once"))
    subject.run(handle.close())
    for _ in range(2):
        assert subject.read("/ro") == b"written once"
        assert subject.stat("/ro").mode == 0o444
        with pytest.raises(PermissionDenied):
            subject.open("/ro", WRITE)
        subject.settle()


def test_chmod_a_minus_w_of_a_directory_refuses_new_entries(subject: Subject) -> None:
    """A directory without w bits shows none, and refuses new files, directories and links
    (as for any user but root); u+w allows them again."""
    subject.mkdir("/d")
    subject.setattr("/d", mode=0o555)
    assert subject.stat("/d").mode == 0o555
    with pytest.raises(PermissionDenied):
        subject.open("/d/new", CREATE)
    with pytest.raises(PermissionDenied):
        subject.mkdir("/d/sub")
    with pytest.raises(PermissionDenied):
        subject.run(subject.fs.symlink("/d/link", "x"))
    assert subject.names("/d") == []
    subject.setattr("/d", mode=0o755)
    subject.write("/d/new", b"now")
    assert subject.names("/d") == ["new"]


@pytest.mark.parametrize("via", ["/a/ro", "/link"])
def test_chmod_a_minus_w_of_a_nested_directory_refuses_every_change_of_its_entries(
    subject: Subject, when: str, via: str
) -> None:
    """A directory without w bits, deeper than the root and reached by its path or through a
    symbolic link, refuses new entries, renames in and out, removals and rmdir of what it
    holds; its entries' own modes still change (as in POSIX); u+w allows them all again."""
    subject.mkdir("/a")
    subject.mkdir("/a/ro")
    subject.mkdir("/a/ro/sub")
    subject.write("/a/ro/file", b"kept")
    subject.write("/a/out", b"outside")
    subject.run(subject.fs.symlink("/link", "a/ro"))
    subject.setattr("/a/ro", mode=0o555)
    subject.reach(when)
    fs = subject.fs
    refused = [
        lambda: fs.mkdir(f"{via}/new", SetAttributes()),
        lambda: fs.rmdir(f"{via}/sub"),
        lambda: fs.remove(f"{via}/file"),
        lambda: fs.rename(f"{via}/file", "/a/moved", False),
        lambda: fs.rename("/a/out", f"{via}/in", False),
        lambda: fs.rename(f"{via}/file", f"{via}/renamed", False),
        lambda: fs.symlink(f"{via}/l", "x"),
    ]
    for change in refused:
        with pytest.raises(PermissionDenied):
            subject.run(change())
    with pytest.raises(PermissionDenied):
        subject.open(f"{via}/new", CREATE)
    assert subject.names("/a/ro") == ["file", "sub"]
    assert subject.names("/a") == ["out", "ro"]
    subject.setattr(f"{via}/file", mode=0o444)
    assert subject.stat("/a/ro/file").mode == 0o444
    subject.setattr(via, mode=0o755)
    subject.run(fs.rename(f"{via}/file", "/a/moved", False))
    subject.run(fs.rmdir(f"{via}/sub"))
    subject.mkdir(f"{via}/new")
    assert subject.names("/a/ro") == ["new"]
    assert subject.read("/a/moved") == b"kept"
