"""Symbolic links are followed in every component of a path, as the kernel follows them under
OpenSSH's sftp-server: never out of the account's root, with a loop limit and a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.fs.errors import FileExists, NoSuchFile, NotSupported, SymlinkLoop
from gateway.fs.interfaces import OpenFlags, SetAttributes
from tests.fs.support import VolumeHarness

EXCLUSIVE = OpenFlags(write=True, create=True, exclusive=True)


@pytest.fixture
def gw(tmp_path: Path) -> VolumeHarness:
    """A volume with /releases/v2/app.txt and current -> releases/v2."""
    gw = VolumeHarness(tmp_path)
    gw.run(gw.fs.mkdir("/releases", SetAttributes()))
    gw.run(gw.fs.mkdir("/releases/v2", SetAttributes()))
    gw.write("/releases/v2/app.txt", b"version 2")
    gw.run(gw.fs.symlink("/current", "releases/v2"))
    return gw


def test_a_link_to_a_directory_is_followed_inside_a_path(gw: VolumeHarness) -> None:
    """stat, open, list and realpath go through current/ to releases/v2/."""
    assert gw.read("/current/app.txt") == b"version 2"
    assert gw.stat("/current/app.txt") == gw.stat("/releases/v2/app.txt")
    assert [name for name, _ in gw.run(gw.fs.list("/current"))] == ["app.txt"]
    assert gw.stat("/current").kind == "dir"
    assert gw.stat("/current", follow_symlinks=False).kind == "symlink"
    assert gw.stat("/current/", follow_symlinks=False).kind == "dir"  # 'link/' is the directory
    assert gw.run(gw.fs.realpath("/current/app.txt")) == "/releases/v2/app.txt"
    assert gw.run(gw.fs.realpath("/current/new.txt")) == "/releases/v2/new.txt"


def test_files_written_through_a_link_land_in_its_target(gw: VolumeHarness) -> None:
    """A file created through the link is the target directory's, before and after upload."""
    gw.write("/current/notes.txt", b"through the link")
    assert gw.read("/releases/v2/notes.txt") == b"through the link"
    gw.upload_everything()
    assert gw.read("/releases/v2/notes.txt") == b"through the link"
    names = [name for name, _ in gw.run(gw.fs.list("/releases/v2"))]
    assert names == ["app.txt", "notes.txt"]


def test_absolute_targets_start_at_the_root_and_dotdot_stops_there(gw: VolumeHarness) -> None:
    """'/releases' is the account's /releases; '../../../../releases' cannot climb above it."""
    gw.run(gw.fs.symlink("/abs", "/releases/v2"))
    gw.run(gw.fs.symlink("/releases/up", "../../../../releases"))
    assert gw.read("/abs/app.txt") == b"version 2"
    assert gw.read("/releases/up/v2/app.txt") == b"version 2"
    assert gw.run(gw.fs.realpath("/releases/up/v2")) == "/releases/v2"


def test_a_loop_fails_clearly(gw: VolumeHarness) -> None:
    """a -> b, b -> a: a clear 'too many levels of symbolic links', never a hang."""
    gw.run(gw.fs.symlink("/a", "b"))
    gw.run(gw.fs.symlink("/b", "a"))
    with pytest.raises(SymlinkLoop, match="too many levels of symbolic links"):
        gw.stat("/a/x")
    with pytest.raises(SymlinkLoop):
        gw.read("/a")
    assert gw.stat("/a", follow_symlinks=False).kind == "symlink"


def test_a_dangling_link_names_nothing_and_opening_it_creates_the_target(
    gw: VolumeHarness,
) -> None:
    """open(O_CREAT) through a dangling link creates its target, as open(2) does."""
    gw.run(gw.fs.symlink("/later", "releases/v3.txt"))
    with pytest.raises(NoSuchFile):
        gw.stat("/later")
    gw.write("/later", b"made through the link")
    assert gw.read("/releases/v3.txt") == b"made through the link"
    with pytest.raises(FileExists):
        gw.run(gw.fs.open("/current", EXCLUSIVE, SetAttributes()))


def test_link_operations_act_on_the_link_itself(gw: VolumeHarness) -> None:
    """readlink, lsetstat times, remove and rename touch the link, not its target."""
    assert gw.run(gw.fs.readlink("/current")) == "releases/v2"
    gw.run(gw.fs.setattr("/current", SetAttributes(mtime=1_000_000.0), follow_symlinks=False))
    assert gw.stat("/current", follow_symlinks=False).mtime == 1_000_000.0
    assert gw.stat("/current").mtime != 1_000_000.0
    with pytest.raises(NotSupported):
        gw.run(gw.fs.setattr("/current", SetAttributes(mode=0o700), follow_symlinks=False))
    gw.run(gw.fs.rename("/current", "/live", overwrite=False))
    assert gw.read("/live/app.txt") == b"version 2"
    gw.run(gw.fs.remove("/live"))
    assert gw.read("/releases/v2/app.txt") == b"version 2"


def test_stat_and_list_look_each_component_up_once(
    gw: VolumeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A STAT or a listing walks its path once: each component is looked up in its directory
    one time (twice per component made every STAT and OPENDIR walk the path again), through
    a link too (the link's own entry, then its target's components), and the answers are the
    same as a walk that looks every component up afresh."""
    looked_up: list[str] = []
    real_lookup = type(gw.fs.volume).lookup

    async def counted(self: object, node: object, name: str) -> object:
        looked_up.append(name)
        return await real_lookup(self, node, name)  # type: ignore[arg-type]

    gw.upload_everything()  # app.txt in the grid, not served from the overlay
    monkeypatch.setattr(type(gw.fs.volume), "lookup", counted)
    assert gw.stat("/releases/v2/app.txt").size == len(b"version 2")
    assert looked_up == ["releases", "v2", "app.txt"]
    looked_up.clear()
    assert gw.stat("/current/app.txt", follow_symlinks=False).kind == "file"
    assert looked_up == ["current", "releases", "v2", "app.txt"]
    looked_up.clear()
    assert [name for name, _ in gw.run(gw.fs.list("/current"))] == ["app.txt"]
    assert looked_up == ["current", "releases", "v2"]
    looked_up.clear()
    with pytest.raises(NoSuchFile):
        gw.stat("/releases/v2/missing.txt")
    assert looked_up == ["releases", "v2", "missing.txt"]
