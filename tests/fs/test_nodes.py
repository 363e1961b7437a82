"""A volume keeps a bounded number of directory nodes: a mkdir/rmdir loop, a build's
temporary trees or an ``rm -r`` of a big tree do not grow the gateway's memory for ever,
and the directories in use keep their nodes."""

from __future__ import annotations

from pathlib import Path

from gateway.fs.interfaces import SetAttributes
from gateway.fs.nodes import DirectoryNodes
from tests.fs.support import VolumeHarness

KEPT = 8


def test_a_mkdir_rmdir_loop_keeps_at_most_the_bound(tmp_path: Path) -> None:
    """Fifty directories made, walked into and removed under /work: the volume holds at most
    KEPT nodes, /work's node is the one every lookup finds, and what a client sees is right
    throughout."""
    gw = VolumeHarness(tmp_path)
    gw.volume.nodes = DirectoryNodes(kept=KEPT)
    fs = gw.fs
    gw.run(fs.mkdir("/work", SetAttributes()))
    work = gw.run(gw.volume.directory(("work",)))
    for i in range(50):
        gw.run(fs.mkdir(f"/work/tmp{i}", SetAttributes()))
        gw.write(f"/work/tmp{i}/obj", b"o" * i)
        assert gw.run(fs.stat(f"/work/tmp{i}/obj")).size == i
        gw.run(fs.remove(f"/work/tmp{i}/obj"))
        gw.run(fs.rmdir(f"/work/tmp{i}"))
        assert len(gw.volume.nodes) <= KEPT
        assert gw.run(gw.volume.directory(("work",))) is work
    assert len(gw.volume.nodes) == KEPT  # (the removed directories' nodes filled it)
    assert [name for name, _ in gw.run(fs.list("/work"))] == []
    gw.upload_everything()
    assert [name for name, _ in gw.run(fs.list("/"))] == ["work"]


def test_the_least_recently_used_node_goes_first(tmp_path: Path) -> None:
    """Past the bound the node used longest ago is dropped and made again when needed (a
    new node of the same directory, which reads the same entries)."""
    gw = VolumeHarness(tmp_path)
    gw.volume.nodes = DirectoryNodes(kept=3)
    fs = gw.fs
    for name in ("a", "b", "c", "d"):
        gw.run(fs.mkdir(f"/{name}", SetAttributes()))
    gw.write("/a/file", b"kept")
    a, b, c = (gw.run(gw.volume.directory((n,))) for n in "abc")
    assert gw.run(gw.volume.directory(("a",))) is a  # a is now the most recently used
    gw.run(gw.volume.directory(("d",)))  # b, used longest ago, goes
    assert gw.run(gw.volume.directory(("a",))) is a
    assert gw.run(gw.volume.directory(("c",))) is c
    again = gw.run(gw.volume.directory(("b",)))
    assert again is not b and again.cap == b.cap
    assert len(gw.volume.nodes) == 3
    assert gw.read("/a/file") == b"kept"
