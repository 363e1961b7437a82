"""A path closed twice before its first upload has two versions in flight: a rename moves
both and a remove abandons both, so no upload links the older one where the file was.

Before, only the newest version followed: ``echo a > x; echo b >> x; mv x y`` (or ``rm
x``) within the upload grace left ``x`` to reappear later with its first contents.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred

from gateway.fs.interfaces import SetAttributes
from tests.fs.support import CREATE, READ_WRITE, VolumeHarness
from tests.fs.test_sparse import DATA, harness, open_rw


def _two_versions(tmp_path: Path) -> VolumeHarness:
    """``/f.bin`` changed and closed twice, neither upload started."""
    gw, _ = harness(tmp_path)
    for offset, byte in ((10, b"1"), (20, b"2")):
        handle = open_rw(gw)
        gw.run(handle.write(offset, byte * 10))
        gw.run(handle.close())
    assert len(list(gw.volume.overlay.jobs_at(("f.bin",)))) == 2
    return gw


def _names(gw: VolumeHarness) -> list[str]:
    return sorted(name for name, _ in gw.run(gw.fs.list("/")))


EXPECTED = DATA[:10] + b"1" * 10 + b"2" * 10 + DATA[30:]


@pytest.mark.parametrize("crash", [False, True], ids=["uploaded", "after a crash"])
def test_a_rename_moves_every_version_in_flight(tmp_path: Path, crash: bool) -> None:
    """After the rename, and after a kill -9 and the restart's uploads, only the new name
    exists, with the last version."""
    gw = _two_versions(tmp_path)
    gw.run(gw.fs.rename("/f.bin", "/g.bin", False))
    if crash:
        gw.crash()  # the records name the new place
    gw.upload_everything()
    assert _names(gw) == ["g.bin"]
    assert gw.read("/g.bin") == EXPECTED


def test_a_rename_of_the_directory_moves_every_version_in_flight(tmp_path: Path) -> None:
    """The same for a file inside a renamed directory."""
    gw, _ = harness(tmp_path)
    gw.run(gw.fs.mkdir("/d", SetAttributes()))
    gw.write("/d/f", b"first")
    handle = gw.run(gw.fs.open("/d/f", READ_WRITE, SetAttributes()))
    gw.run(handle.write(5, b"second"))
    gw.run(handle.close())
    gw.run(gw.fs.rename("/d", "/e", False))
    gw.upload_everything()
    assert _names(gw) == ["e", "f.bin"]
    assert sorted(n for n, _ in gw.run(gw.fs.list("/e"))) == ["f"]
    assert gw.read("/e/f") == b"firstsecond"


def test_a_remove_abandons_every_version_in_flight(tmp_path: Path) -> None:
    """After the remove nothing comes back, and nothing is stored."""
    gw = _two_versions(tmp_path)
    gw.run(gw.fs.remove("/f.bin"))
    gw.upload_everything()
    assert _names(gw) == []


def test_a_rename_onto_the_path_abandons_every_version_in_flight(tmp_path: Path) -> None:
    """A file renamed over a path with two versions in flight replaces both."""
    gw = _two_versions(tmp_path)
    gw.write("/other", b"other")
    gw.run(gw.fs.rename("/other", "/f.bin", True))
    gw.upload_everything()
    assert _names(gw) == ["f.bin"]
    assert gw.read("/f.bin") == b"other"


def test_a_version_linked_before_an_older_one_leaves_nothing_behind_a_rename(
    tmp_path: Path,
) -> None:
    """An fsync's version is linked while an older CLOSE's upload is still storing, and
    then the file is renamed: the older upload, never linked now, does not bring the old
    name back when it ends."""
    gw, store = harness(tmp_path)
    held: Deferred[None] = Deferred()
    stored = store.update_file

    async def hold_the_close(base, size, changed, read, *args, **kwargs):  # type: ignore[no-untyped-def]
        if list(changed) == [(10, 20)] and not held.called:
            await held
        return await stored(base, size, changed, read, *args, **kwargs)

    store.update_file = hold_the_close  # type: ignore[method-assign]
    first = open_rw(gw)
    gw.run(first.write(10, b"1" * 10))
    gw.run(first.close())
    gw.advance_until(gw.uploading)  # its upload starts, and waits
    handle = open_rw(gw)
    gw.run(handle.write(20, b"2" * 10))
    gw.run_waiting(handle.fsync())
    gw.run(gw.fs.rename("/f.bin", "/g.bin", False))
    gw.run(handle.close())
    held.callback(None)
    gw.upload_everything()
    assert _names(gw) == ["g.bin"]
    assert gw.read("/g.bin") == EXPECTED


NAMES = ("f.bin", "x", "y")

name_operations = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
        st.tuples(st.just("append"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
        st.tuples(st.just("rename"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
        st.tuples(st.just("remove"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
        st.tuples(st.just("upload"), st.just(""), st.just("")),
    ),
    max_size=14,
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name_operations)
def test_any_sequence_of_writes_renames_and_removes_matches_a_model(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, str, str]]
) -> None:
    """Whole writes, appends (each a CLOSE: versions pile up while uploads wait), renames
    (over existing names too), removes and uploads in any order: the listing and every
    file read as the model says, before and after every upload has landed."""
    gw, _ = harness(tmp_path_factory.mktemp("names"))
    model = {"f.bin": DATA}
    for step, (op, a, b) in enumerate(ops):
        data = bytes([step]) * (step + 1)
        if op == "write":  # (no time passes: no upload starts until "upload")
            handle = gw.run(gw.fs.open(f"/{a}", CREATE, SetAttributes()))
            gw.run(handle.write(0, data))
            gw.run(handle.close())
            model[a] = data
        elif op == "append" and a in model:
            handle = open_rw(gw, f"/{a}")
            gw.run(handle.write(len(model[a]), data))
            gw.run(handle.close())
            model[a] += data
        elif op == "rename" and a in model and a != b:
            gw.run(gw.fs.rename(f"/{a}", f"/{b}", True))
            model[b] = model.pop(a)
        elif op == "remove" and a in model:
            gw.run(gw.fs.remove(f"/{a}"))
            del model[a]
        elif op == "upload":
            gw.upload_everything()
        _check(gw, model)
    gw.upload_everything()
    _check(gw, model)


def _check(gw: VolumeHarness, model: dict[str, bytes]) -> None:
    assert _names(gw) == sorted(model)
    for name, data in model.items():
        assert gw.read(f"/{name}") == data, name
