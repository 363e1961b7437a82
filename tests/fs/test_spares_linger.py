"""Spare staged files outlive a CLOSE by a few seconds: a client opening and closing files
without changing them reuses them instead of removing and making them again each time."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

from gateway.fs.interfaces import SetAttributes
from gateway.fs.spares import SPARES_LINGER
from gateway.fs.writing import WriteHandle
from tests.fs.support import READ_WRITE, VolumeHarness


def _staged(gw: VolumeHarness) -> set[str]:
    return {p.name for p in gw.volume.staging.directory.iterdir() if p.suffix == ".staged"}


def _ready(tmp_path: Path) -> VolumeHarness:
    """A volume whose staging makes 4 spares in threads, with /f.bin in the grid; staged
    files start on disk (not in memory, as a small file's do: test_memory_staging)."""
    gw = VolumeHarness(tmp_path)
    gw.volume.staging.files.spare_files = 4
    gw.volume.staging.memory_bytes = 0
    gw.write("/f.bin", b"x" * 10_000)
    gw.upload_everything()
    gw.fs._writers._threads = gw.threads  # a thread runner, as a running gateway has
    return gw


def test_open_and_close_unchanged_in_a_loop_reuses_the_spares(tmp_path: Path) -> None:
    """OPEN r+ then CLOSE without a change, ten times: no staged file is removed but the one
    each OPEN took (the spares are made again only as they run low, about one file per
    OPEN in all); the spares go SPARES_LINGER seconds after the last CLOSE, leaving the
    staging directory empty."""
    gw = _ready(tmp_path)
    seen: list[set[str]] = []
    for _ in range(10):
        handle = gw.run(gw.fs.open("/f.bin", READ_WRITE, SetAttributes()))
        assert isinstance(handle, WriteHandle)
        gw.threads.run_all()
        gw.run(handle.close())
        gw.threads.run_all()
        gw.clock.advance(0.1)
        seen.append(_staged(gw))
    assert gw.volume.queue.idle
    assert gw.volume.staging.spares > 0, "the spares stayed after the CLOSEs"
    for before, after in pairwise(seen):
        assert len(before - after) <= 1, "only the file the OPEN took is removed"
    assert len(set().union(*seen)) <= 10 + 2 * gw.volume.staging.files.spare_files
    gw.clock.advance(SPARES_LINGER - 1)
    assert gw.volume.staging.spares > 0
    gw.clock.advance(1.5)
    assert gw.volume.staging.spares == 0
    assert _staged(gw) == set()


def test_the_spares_stay_while_a_file_is_open_for_writing(tmp_path: Path) -> None:
    """Idle a long while with a file open for writing (and changed): the spares stay; its
    CLOSE and upload, then SPARES_LINGER seconds, and they are gone."""
    gw = _ready(tmp_path)
    handle = gw.run(gw.fs.open("/f.bin", READ_WRITE, SetAttributes()))
    assert isinstance(handle, WriteHandle)
    gw.run(handle.write(0, b"changed"))
    gw.threads.run_all()
    gw.clock.advance(10 * SPARES_LINGER)
    assert gw.volume.staging.spares > 0
    gw.run(handle.close())
    gw.upload_everything()
    assert gw.volume.staging.spares == 0
    assert gw.read("/f.bin").startswith(b"changed")


def test_stopping_drops_the_spares_and_leaves_no_timer(tmp_path: Path) -> None:
    """A stop drops the spares of an idle volume at once, and no timer is left pending."""
    gw = _ready(tmp_path)
    handle = gw.run(gw.fs.open("/f.bin", READ_WRITE, SetAttributes()))
    gw.threads.run_all()
    gw.run(handle.close())
    assert gw.volume.staging.spares > 0
    gw.volume.spares.stop()
    assert gw.volume.staging.spares == 0
    assert gw.clock.getDelayedCalls() == []
