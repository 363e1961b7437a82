"""rename: plain (refusing an existing target) or overwriting (replacing it atomically), of
files and directories in any state.

Save strategies rely on it: a temp file renamed over the original while still open
(editors), or closed and renamed right away (WinSCP, gvfs), must end as the new file
under the old name, with no trace of the temp name, before and after the upload lands.
"""

from __future__ import annotations

import pytest

from gateway.fs.errors import (
    DirectoryNotEmpty,
    FileExists,
    InvalidArgument,
    IsADirectory,
    NoSuchFile,
    NotADirectory,
)
from gateway.fs.interfaces import SetAttributes
from tests.fs.contract.subject import (
    CREATE,
    EXCLUSIVE,
    PENDING,
    UPLOADED,
    UPLOADING,
    WRITE,
    Subject,
)


def rename(subject: Subject, old: str, new: str, overwrite: bool = False) -> None:
    """RENAME (or posix-rename, with ``overwrite``)."""
    subject.run(subject.fs.rename(old, new, overwrite))


@pytest.mark.parametrize("overwrite", [False, True])
def test_rename_to_a_free_name(subject: Subject, when: str, overwrite: bool) -> None:
    """The file is under its new name only, with its bytes and attributes, for good."""
    subject.write("/a", b"contents")
    subject.setattr("/a", mode=0o600, mtime=1_000_000_000.0)
    subject.reach(when)
    before = subject.stat("/a")
    rename(subject, "/a", "/b", overwrite)
    assert subject.names("/") == ["b"]
    assert subject.read("/b") == b"contents"
    assert subject.stat("/b") == before
    subject.settle()
    assert subject.names("/") == ["b"]
    assert subject.read("/b") == b"contents"


def test_plain_rename_refuses_an_existing_file(subject: Subject, when: str) -> None:
    """Without overwrite, an existing target (pending or uploaded) is FileExists; both files
    stay as they were."""
    subject.write("/a", b"A")
    subject.write("/b", b"B")
    subject.reach(when)
    with pytest.raises(FileExists):
        rename(subject, "/a", "/b")
    subject.settle()
    assert (subject.read("/a"), subject.read("/b")) == (b"A", b"B")


def test_plain_rename_refuses_a_file_being_written(subject: Subject) -> None:
    """Without overwrite, a target open for writing is FileExists."""
    subject.write("/a", b"A")
    handle = subject.open("/b", CREATE)
    with pytest.raises(FileExists):
        rename(subject, "/a", "/b")
    subject.run(handle.write(0, b"B"))
    subject.run(handle.close())
    subject.settle()
    assert (subject.read("/a"), subject.read("/b")) == (b"A", b"B")


@pytest.mark.parametrize("target", [PENDING, UPLOADING, UPLOADED])
def test_overwrite_replaces_an_existing_file(subject: Subject, when: str, target: str) -> None:
    """With overwrite, the source (pending or uploaded) replaces the target (pending or
    uploaded): one name, the source's bytes, on both sides of the uploads."""
    subject.write("/b", b"old target")
    subject.reach(target)
    subject.write("/a", b"the source")
    subject.reach(when)
    rename(subject, "/a", "/b", overwrite=True)
    assert subject.names("/") == ["b"]
    assert subject.read("/b") == b"the source"
    subject.settle()
    assert subject.names("/") == ["b"]
    assert subject.read("/b") == b"the source"


def test_overwrite_replaces_a_file_being_written(subject: Subject) -> None:
    """A target still open for writing is replaced: its handle's CLOSE publishes nothing."""
    subject.write("/a", b"the source")
    handle = subject.open("/b", CREATE)
    subject.run(handle.write(0, b"the open target"))
    rename(subject, "/a", "/b", overwrite=True)
    subject.run(handle.close())
    assert subject.read("/b") == b"the source"
    subject.settle()
    assert subject.names("/") == ["b"]
    assert subject.read("/b") == b"the source"


def test_rename_of_a_missing_name(subject: Subject) -> None:
    """Renaming a name that does not exist is NoSuchFile, and makes nothing."""
    for overwrite in (False, True):
        with pytest.raises(NoSuchFile):
            rename(subject, "/none", "/x", overwrite)
    assert subject.names("/") == []


def test_rename_into_a_missing_directory(subject: Subject, when: str) -> None:
    """A target in a directory that does not exist is NoSuchFile; the source stays."""
    subject.write("/a", b"A")
    subject.reach(when)
    with pytest.raises(NoSuchFile):
        rename(subject, "/a", "/no/such")
    subject.settle()
    assert subject.read("/a") == b"A"


def test_rename_to_itself_changes_nothing(subject: Subject, when: str) -> None:
    """Renaming a file to its own name succeeds (with or without overwrite) and keeps it."""
    subject.write("/a", b"A")
    subject.reach(when)
    rename(subject, "/a", "/a")
    rename(subject, "/a", "/a", overwrite=True)
    subject.settle()
    assert subject.names("/") == ["a"]
    assert subject.read("/a") == b"A"


def test_rename_between_directories(subject: Subject, when: str) -> None:
    """A file moves into another directory, and back out."""
    subject.mkdir("/d1")
    subject.mkdir("/d2")
    subject.write("/d1/f", b"moving")
    subject.reach(when)
    rename(subject, "/d1/f", "/d2/g")
    assert (subject.names("/d1"), subject.names("/d2")) == ([], ["g"])
    subject.settle()
    assert subject.read("/d2/g") == b"moving"
    rename(subject, "/d2/g", "/top")
    assert subject.names("/") == ["d1", "d2", "top"]
    assert subject.read("/top") == b"moving"


@pytest.mark.parametrize("overwrite", [False, True])
def test_renaming_an_open_file_retargets_it(subject: Subject, overwrite: bool) -> None:
    """A file renamed while still open (the write-path seed 000): writes after the rename and
    the CLOSE go to the new name; every session sees the new name only, before and after the
    upload."""
    other = subject.session()
    handle = subject.open("/file.tmp", CREATE)
    subject.run(handle.write(0, b"written before the rename, "))
    rename(subject, "/file.tmp", "/file", overwrite)
    assert subject.names("/", fs=other) == ["file"]
    assert handle.path == "/file"
    subject.run(handle.write(27, b"and after it"))
    subject.run(handle.close())
    assert subject.read("/file", fs=other) == b"written before the rename, and after it"
    with pytest.raises(NoSuchFile):
        subject.stat("/file.tmp", fs=other)
    subject.settle()
    assert subject.names("/", fs=other) == ["file"]
    assert subject.read("/file", fs=other) == b"written before the rename, and after it"


def test_an_open_temp_file_renamed_over_the_original(subject: Subject, when: str) -> None:
    """An editor's save: a temp file, still open, renamed with overwrite over the original
    (pending or uploaded) replaces it for every session; a plain rename is refused first."""
    other = subject.session()
    subject.write("/doc", b"old contents")
    subject.reach(when)
    handle = subject.open("/doc.swp", CREATE)
    subject.run(handle.write(0, b"new contents"))
    with pytest.raises(FileExists):
        rename(subject, "/doc.swp", "/doc")
    rename(subject, "/doc.swp", "/doc", overwrite=True)
    subject.run(handle.close())
    assert subject.read("/doc", fs=other) == b"new contents"
    subject.settle()
    assert subject.names("/", fs=other) == ["doc"]
    assert subject.read("/doc", fs=other) == b"new contents"


def test_renaming_a_pending_file_lands_it_under_the_new_name(subject: Subject, when: str) -> None:
    """A closed file renamed before (or while) its upload lands under its new name only."""
    subject.write("/report.pdf.filepart", b"payload")
    subject.reach(when)
    rename(subject, "/report.pdf.filepart", "/report.pdf")
    subject.settle()
    assert subject.names("/") == ["report.pdf"]
    assert subject.read("/report.pdf") == b"payload"


def test_renaming_a_rewritten_file_moves_its_newest_version(subject: Subject) -> None:
    """An uploaded file rewritten (new version pending) and renamed: the new name has the
    new version, on both sides of its upload; the old name is gone."""
    subject.write("/a", b"version 1")
    subject.settle()
    subject.write("/a", b"version 2")
    rename(subject, "/a", "/b")
    assert subject.read("/b") == b"version 2"
    subject.settle()
    assert subject.names("/") == ["b"]
    assert subject.read("/b") == b"version 2"


def test_renaming_back_and_forth_before_the_upload(subject: Subject) -> None:
    """a -> b -> a while pending: the file lands at a, once."""
    subject.write("/a", b"A")
    rename(subject, "/a", "/b")
    rename(subject, "/b", "/a")
    subject.settle()
    assert subject.names("/") == ["a"]
    assert subject.read("/a") == b"A"


def test_a_new_file_under_a_renamed_pending_name(subject: Subject, when: str) -> None:
    """Rename a pending file away, write a new one under its old name: both land, apart."""
    subject.write("/a", b"first")
    subject.reach(when)
    rename(subject, "/a", "/b")
    subject.write("/a", b"second")
    subject.settle()
    assert (subject.read("/a"), subject.read("/b")) == (b"second", b"first")


@pytest.mark.parametrize("target", ["/d2", "/other/d2"])
def test_renaming_a_directory_moves_its_pending_files(
    subject: Subject, when: str, target: str
) -> None:
    """A directory renamed (or moved elsewhere) while files inside it wait for their upload
    or are uploading: they land inside it under its new name, and the old name is gone."""
    subject.mkdir("/other")
    subject.mkdir("/d1")
    subject.mkdir("/d1/sub")
    subject.write("/d1/inner", b"I")
    subject.write("/d1/sub/deep", b"D")
    subject.reach(when)
    rename(subject, "/d1", target)
    assert subject.read(target + "/inner") == b"I"
    assert subject.names(target) == ["inner", "sub"]
    assert not subject.exists("/d1")
    subject.settle()
    assert subject.names("/") == sorted({"other", target.split("/")[1]})
    assert subject.read(target + "/inner") == b"I"
    assert subject.read(target + "/sub/deep") == b"D"


def test_a_pending_file_follows_its_directory_through_two_moves(subject: Subject) -> None:
    """Moved into a directory that is then renamed, a pending file lands in it."""
    subject.write("/a", b"A")
    subject.mkdir("/d")
    rename(subject, "/a", "/d/a")
    rename(subject, "/d", "/e")
    subject.settle()
    assert (subject.names("/"), subject.names("/e")) == (["e"], ["a"])
    assert subject.read("/e/a") == b"A"


def test_an_open_file_moved_away_frees_its_directory(subject: Subject) -> None:
    """After an open file is renamed out of a directory, the directory can be removed."""
    subject.mkdir("/d")
    handle = subject.open("/d/f", CREATE)
    subject.run(handle.write(0, b"moved"))
    rename(subject, "/d/f", "/f")
    subject.run(subject.fs.rmdir("/d"))
    subject.run(handle.close())
    subject.settle()
    assert subject.names("/") == ["f"]
    assert subject.read("/f") == b"moved"


def test_renaming_an_uploaded_file_being_rewritten(subject: Subject) -> None:
    """An uploaded file renamed into another directory while a writer rewrites it: the
    writer's CLOSE publishes at the new place, and only there."""
    subject.mkdir("/d")
    subject.write("/a", b"old contents")
    subject.settle()
    handle = subject.open("/a", WRITE)
    subject.run(handle.write(0, b"NEW"))
    rename(subject, "/a", "/d/b")
    assert subject.read("/d/b") == b"NEW contents"
    subject.run(handle.close())
    subject.settle()
    assert (subject.names("/"), subject.names("/d")) == (["d"], ["b"])
    assert subject.read("/d/b") == b"NEW contents"


def test_renaming_a_directory_moves_its_open_files(subject: Subject) -> None:
    """A directory renamed while a file inside is open: the handle follows, and its CLOSE
    publishes in the renamed directory."""
    subject.mkdir("/d1")
    handle = subject.open("/d1/f", CREATE)
    subject.run(handle.write(0, b"before "))
    rename(subject, "/d1", "/d2")
    assert handle.path == "/d2/f"
    subject.run(handle.write(7, b"after"))
    subject.run(handle.close())
    subject.settle()
    assert subject.names("/") == ["d2"]
    assert subject.read("/d2/f") == b"before after"


def test_renaming_an_uploaded_directory(subject: Subject) -> None:
    """A directory and everything in it move together."""
    subject.mkdir("/d1")
    subject.write("/d1/inner", b"I")
    subject.settle()
    rename(subject, "/d1", "/d2")
    assert subject.names("/") == ["d2"]
    assert subject.read("/d2/inner") == b"I"


@pytest.mark.parametrize("target", ["/d/d3", "/d/sub/d3", "/d/sub"])
def test_a_directory_cannot_move_into_itself(subject: Subject, target: str) -> None:
    """Moving a directory under itself is InvalidArgument; everything stays."""
    subject.mkdir("/d")
    subject.mkdir("/d/sub")
    for overwrite in (False, True):
        with pytest.raises(InvalidArgument):
            rename(subject, "/d", target, overwrite)
    assert subject.names("/") == ["d"]
    assert subject.names("/d") == ["sub"]


def test_a_file_never_replaces_a_directory(subject: Subject) -> None:
    """Even with overwrite, a file renamed onto a directory is refused; both stay."""
    subject.write("/f", b"F")
    subject.mkdir("/d")
    subject.write("/d/inside", b"I")
    with pytest.raises((FileExists, IsADirectory)):
        rename(subject, "/f", "/d", overwrite=True)
    assert subject.names("/") == ["d", "f"]
    assert subject.read("/d/inside") == b"I"


def test_a_directory_never_replaces_a_non_empty_directory(subject: Subject) -> None:
    """Even with overwrite, a directory renamed onto a non-empty one is refused; both stay."""
    subject.mkdir("/a")
    subject.mkdir("/b")
    subject.write("/b/inside", b"I")
    with pytest.raises((FileExists, DirectoryNotEmpty)):
        rename(subject, "/a", "/b", overwrite=True)
    assert subject.names("/") == ["a", "b"]
    assert subject.read("/b/inside") == b"I"


def test_a_directory_never_replaces_a_file(subject: Subject, when: str) -> None:
    """Even with overwrite, a directory renamed onto a file is refused; both stay."""
    subject.mkdir("/d")
    subject.write("/f", b"F")
    subject.reach(when)
    with pytest.raises((FileExists, NotADirectory)):
        rename(subject, "/d", "/f", overwrite=True)
    assert subject.read("/f") == b"F"


def test_renaming_a_link_moves_the_link(subject: Subject) -> None:
    """rename of a symbolic link renames the link, not its target."""
    subject.write("/target", b"T")
    subject.run(subject.fs.symlink("/link", "target"))
    rename(subject, "/link", "/moved")
    assert subject.run(subject.fs.readlink("/moved")) == "target"
    assert subject.names("/") == ["moved", "target"]


def test_a_rename_onto_a_link_replaces_the_link(subject: Subject) -> None:
    """With overwrite, a file renamed onto a symbolic link replaces the link, not the file the
    link points at."""
    subject.write("/target", b"T")
    subject.run(subject.fs.symlink("/link", "target"))
    subject.write("/new", b"N")
    rename(subject, "/new", "/link", overwrite=True)
    subject.settle()
    assert subject.lstat("/link").kind == "file"
    assert (subject.read("/link"), subject.read("/target")) == (b"N", b"T")


def test_removing_the_target_of_an_overwrite_before_the_upload(subject: Subject) -> None:
    """A pending file renamed over an uploaded one, then removed: neither comes back."""
    subject.write("/b", b"old")
    subject.settle()
    subject.write("/a", b"new")
    rename(subject, "/a", "/b", overwrite=True)
    subject.run(subject.fs.remove("/b"))
    assert not subject.exists("/b")
    subject.settle()
    assert subject.names("/") == []


def test_winscp_save_sequence(subject: Subject) -> None:
    """WinSCP: write name.filepart, close, remove the target, rename, set mtime and mode:
    the target has the new bytes, mtime and mode, while pending and after the upload."""
    subject.write("/report.pdf", b"previous version")
    subject.settle()
    payload = bytes(range(256)) * 400
    handle = subject.open("/report.pdf.filepart", CREATE)
    for offset in range(0, len(payload), 32768):
        subject.run(handle.write(offset, payload[offset : offset + 32768]))
    subject.run(handle.close())
    subject.run(subject.fs.remove("/report.pdf"))
    rename(subject, "/report.pdf.filepart", "/report.pdf")
    subject.setattr("/report.pdf", atime=1_234_567_890.0, mtime=1_234_567_890.0)
    subject.setattr("/report.pdf", mode=0o640)
    for _ in range(2):
        attrs = subject.stat("/report.pdf")
        assert (attrs.mtime, attrs.size, attrs.mode) == (1_234_567_890.0, len(payload), 0o640)
        assert subject.read("/report.pdf") == payload
        assert subject.names("/") == ["report.pdf"]
        subject.settle()


def test_gvfs_save_sequence(subject: Subject) -> None:
    """gvfs: EXCL-create a temp name, write, copy the old mode, delete, rename over."""
    subject.write("/notes.txt", b"draft 1")
    subject.setattr("/notes.txt", mode=0o600)
    with pytest.raises(FileExists):
        subject.open("/notes.txt", EXCLUSIVE)
    handle = subject.open("/.goutputstream-ABC123", EXCLUSIVE, SetAttributes(mode=0o644))
    subject.run(handle.write(0, b"draft 2, longer than the first"))
    mode = subject.stat("/notes.txt").mode
    subject.run(handle.setattr(SetAttributes(mode=mode)))
    subject.run(handle.close())
    subject.run(subject.fs.remove("/notes.txt"))
    rename(subject, "/.goutputstream-ABC123", "/notes.txt")
    for _ in range(2):
        assert subject.read("/notes.txt") == b"draft 2, longer than the first"
        assert subject.stat("/notes.txt").mode == 0o600
        assert subject.names("/") == ["notes.txt"]
        subject.settle()


def test_a_reopened_renamed_file_is_written_where_it_is(subject: Subject) -> None:
    """A file renamed while pending and then opened under its new name is edited there."""
    subject.write("/a", b"0123456789")
    rename(subject, "/a", "/b")
    handle = subject.open("/b", WRITE)
    subject.run(handle.write(0, b"AB"))
    subject.run(handle.close())
    subject.settle()
    assert subject.names("/") == ["b"]
    assert subject.read("/b") == b"AB23456789"
