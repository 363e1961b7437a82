"""A read-only account: everything reads, nothing changes.

An account (or session) that is read-only sees the same files, without w bits, and
every request that would change anything is PermissionDenied and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gateway.fs.errors import PermissionDenied
from gateway.fs.interfaces import IFilesystem, OpenFlags, SetAttributes
from tests.fs.contract.subject import APPEND, CREATE, EXCLUSIVE, READ, WRITE, Subject, flag_names


@pytest.fixture
def ro(subject: Subject, when: str) -> IFilesystem:
    """A read-only session of an account holding /f (pending or uploaded), /d and /l -> f."""
    subject.write("/f", b"contents")
    subject.mkdir("/d")
    subject.run(subject.fs.symlink("/l", "f"))
    subject.reach(when)
    return subject.session(read_only=True)


def test_a_read_only_session_says_so(subject: Subject, ro: IFilesystem) -> None:
    """read_only is true for it, and false for a read-write session."""
    assert ro.read_only is True
    assert subject.fs.read_only is False


def test_everything_reads(subject: Subject, ro: IFilesystem) -> None:
    """Reads, stats, listings, readlink and realpath work as for a read-write session."""
    assert subject.read("/f", fs=ro) == b"contents"
    assert subject.read("/l", fs=ro) == b"contents"
    assert subject.names("/", fs=ro) == ["d", "f", "l"]
    assert subject.stat("/f", fs=ro).size == 8
    assert subject.run(ro.readlink("/l")) == "f"
    assert subject.run(ro.realpath("/d/../l")) == "/f"
    assert subject.run(ro.statvfs("/")).block_size > 0


def test_no_write_bits_are_shown(subject: Subject, ro: IFilesystem) -> None:
    """Files and directories, the root included, show no w bit."""
    assert subject.stat("/", fs=ro).mode & 0o222 == 0
    assert all(a.mode & 0o222 == 0 for n, a in subject.listing("/", fs=ro).items() if n != "l")
    assert subject.stat("/f", fs=ro).mode == 0o444
    assert subject.stat("/d", fs=ro).mode == 0o555


def test_a_file_being_written_shows_no_write_bits(subject: Subject, ro: IFilesystem) -> None:
    """A file another session is writing shows no w bit to the read-only session."""
    handle = subject.open("/new", CREATE)
    assert subject.stat("/new", fs=ro).mode & 0o222 == 0
    subject.run(handle.close())


WRITING_OPENS = [
    (path, flags)
    for path in ("/f", "/l", "/new")
    for flags in (WRITE, CREATE, APPEND, EXCLUSIVE, OpenFlags(truncate=True))
] + [("/new", OpenFlags(create=True))]  # (CREAT alone opens an existing file for reading)


@pytest.mark.parametrize(("path", "flags"), WRITING_OPENS, ids=flag_names)
def test_opening_for_writing_is_refused(
    subject: Subject, ro: IFilesystem, path: str, flags: OpenFlags
) -> None:
    """No open that writes, truncates or creates is allowed, on any name."""
    with pytest.raises(PermissionDenied):
        subject.run(ro.open(path, flags, SetAttributes()))
    assert subject.read("/f") == b"contents"
    assert not subject.exists("/new")


CHANGES: dict[str, Callable[[IFilesystem], Any]] = {
    "mkdir": lambda fs: fs.mkdir("/new", SetAttributes()),
    "mkdir in dir": lambda fs: fs.mkdir("/d/new", SetAttributes()),
    "rmdir": lambda fs: fs.rmdir("/d"),
    "remove": lambda fs: fs.remove("/f"),
    "remove link": lambda fs: fs.remove("/l"),
    "rename": lambda fs: fs.rename("/f", "/g", False),
    "rename over": lambda fs: fs.rename("/f", "/l", True),
    "rename dir": lambda fs: fs.rename("/d", "/e", False),
    "symlink": lambda fs: fs.symlink("/new", "f"),
    "setattr size": lambda fs: fs.setattr("/f", SetAttributes(size=0)),
    "setattr mode": lambda fs: fs.setattr("/f", SetAttributes(mode=0o777)),
    "setattr mtime": lambda fs: fs.setattr("/f", SetAttributes(mtime=1.0)),
    "setattr dir": lambda fs: fs.setattr("/d", SetAttributes(mtime=1.0)),
    "setattr root": lambda fs: fs.setattr("/", SetAttributes(mode=0o777)),
    "lsetstat": lambda fs: fs.setattr("/l", SetAttributes(mtime=1.0), follow_symlinks=False),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_every_change_is_refused(subject: Subject, ro: IFilesystem, change: str) -> None:
    """Each request that changes something is PermissionDenied, and nothing changed."""
    before = subject.listing("/")
    with pytest.raises(PermissionDenied):
        subject.run(CHANGES[change](ro))
    assert subject.listing("/") == before
    assert subject.names("/d") == []
    assert subject.read("/f") == b"contents"


def test_a_read_handle_of_a_read_only_session_refuses_writes(
    subject: Subject, ro: IFilesystem
) -> None:
    """A handle it opened for reading refuses WRITE and FSETSTAT."""
    handle = subject.run(ro.open("/f", READ, SetAttributes()))
    with pytest.raises(PermissionDenied):
        subject.run(handle.write(0, b"x"))
    with pytest.raises(PermissionDenied):
        subject.run(handle.setattr(SetAttributes(size=0)))
    subject.run(handle.close())
    assert subject.read("/f") == b"contents"
