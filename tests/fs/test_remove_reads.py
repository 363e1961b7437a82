"""REMOVE and RMDIR decide on a directory's contents as fresh as any lookup's.

They used to read the directory from the grid again whenever it had no change
waiting to be published: every remove of a file still waiting for its upload (an
editor's swap file, a build's temporary file), and every rmdir's check that the
directory is empty, cost a read of the whole directory from the servers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.fs.errors import NoSuchFile
from gateway.fs.interfaces import SetAttributes
from gateway.objects.writeback import DirectoryWriteBack
from tests.fs.support import CREATE, VolumeHarness
from tests.objects.grid import GridClient


def _harness(tmp_path: Path) -> tuple[VolumeHarness, list[GridClient]]:
    """A volume whose directories are written back (as a running gateway's are), and its
    one storage server."""
    gw = VolumeHarness(tmp_path)
    store = gw.store
    store.write_back = DirectoryWriteBack(
        tmp_path / "dirs", store.mutable_client, gw.clock, threads=gw.threads
    )
    gw._start()  # the volume again, its directories written back
    grid = list(store._servers())
    assert all(isinstance(server, GridClient) for server in grid)
    return gw, grid  # type: ignore[return-value]


def _write_now(gw: VolumeHarness, path: str, data: bytes) -> None:
    """OPEN, WRITE, CLOSE without letting time pass."""
    handle = gw.run(gw.fs.open(path, CREATE, SetAttributes()))
    gw.run(handle.write(0, data))
    gw.run(handle.close())


def _reads(grid: list[GridClient]) -> int:
    return sum(server.count("read_mutable") for server in grid)


def test_removing_files_still_uploading_reads_no_directory(tmp_path: Path) -> None:
    """Five temporary files written and removed before their uploads, within a second of
    the last listing: no read of the directory reaches the servers, each file is gone
    (its upload dropped), and the file kept meanwhile is there."""
    gw, grid = _harness(tmp_path)
    gw.write("/kept", b"kept")
    gw.upload_everything()
    assert [name for name, _ in gw.run(gw.fs.list("/"))] == ["kept"]
    before = _reads(grid)
    for i in range(5):
        _write_now(gw, f"/.swap{i}", b"draft")
        gw.run(gw.fs.remove(f"/.swap{i}"))
        with pytest.raises(NoSuchFile):
            gw.stat(f"/.swap{i}")
    assert _reads(grid) == before
    gw.upload_everything()
    assert [name for name, _ in gw.run(gw.fs.list("/"))] == ["kept"]
    assert gw.read("/kept") == b"kept"


def test_rmdir_checks_emptiness_on_a_fresh_view(tmp_path: Path) -> None:
    """An rmdir right after listing the directory reads nothing from the servers, and
    refuses a directory that is not empty as before."""
    gw, grid = _harness(tmp_path)
    gw.run(gw.fs.mkdir("/d", SetAttributes()))
    gw.run(gw.fs.mkdir("/full", SetAttributes()))
    _write_now(gw, "/full/f", b"f")
    gw.upload_everything()
    assert gw.run(gw.fs.list("/d")) == []
    assert [name for name, _ in gw.run(gw.fs.list("/full"))] == ["f"]
    before = _reads(grid)
    gw.run(gw.fs.rmdir("/d"))
    with pytest.raises(Exception, match="not empty"):
        gw.run(gw.fs.rmdir("/full"))
    assert _reads(grid) == before
    gw.upload_everything()
    assert [name for name, _ in gw.run(gw.fs.list("/"))] == ["full"]
