"""Group commit of directory links: concurrent links share publishes and none is lost."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock

from gateway.fs.linker import DirectoryLinker
from gateway.objects.caps import LiteralCap
from gateway.objects.dirnode import EntryMetadata
from tests.objects.grid import make_grid
from tests.objects.test_dirnode import World


def _meta(size: int) -> EntryMetadata:
    return EntryMetadata(kind="file", mtime=1.0, ctime=1.0, size=size)


def test_concurrent_links_share_publishes() -> None:
    """Sixty links started together end as sixty entries in far fewer publishes.

    Requests take simulated time, as on a network, so links arrive while a publish is under way.
    """
    clock = Clock()
    world = World(make_grid(3, clock=clock, latency=0.01), clock)
    root = world.mkroot()
    linker = DirectoryLinker(world.clock)
    before = world.grid[0].count("read_test_write")

    async def link_all() -> Any:
        links = [
            Deferred.fromCoroutine(linker.link(root, f"f{i}", LiteralCap(b"%d" % i), _meta(i)))
            for i in range(60)
        ]
        return await gatherResults(links)

    world.run(link_all())
    listed = world.run(world.open(root.cap).list())
    assert sorted(listed) == sorted(f"f{i}" for i in range(60))
    assert listed["f42"].cap == LiteralCap(b"42")
    assert linker.links == 60
    assert linker.publishes <= 2
    assert world.grid[0].count("read_test_write") - before <= 2


def test_a_failed_publish_reaches_every_waiter() -> None:
    """When a batch cannot be published, each of its links fails (to be retried by its job)."""
    clock = Clock()
    world = World(make_grid(3, clock=clock, latency=0.01), clock)
    root = world.mkroot()
    read_only = world.open(root.cap.get_read_cap())
    linker = DirectoryLinker(world.clock)
    failures: list[str] = []

    async def link_all() -> None:
        async def one(i: int) -> None:
            try:
                await linker.link(read_only, f"f{i}", LiteralCap(b"x"), _meta(1))
            except Exception as e:
                failures.append(type(e).__name__)

        await gatherResults([Deferred.fromCoroutine(one(i)) for i in range(5)])

    world.run(link_all())
    assert failures == ["NotWritable"] * 5
    assert world.run(world.open(root.cap).list()) == {}


def test_links_within_the_window_share_one_publish() -> None:
    """Links made one after another within the window (a sequential client) share a publish."""
    clock = Clock()
    world = World(make_grid(3), clock)
    root = world.mkroot()
    linker = DirectoryLinker(clock, window=0.05)
    done = [
        Deferred.fromCoroutine(linker.link(root, f"f{i}", LiteralCap(b"%d" % i), _meta(i)))
        for i in range(3)
    ]
    clock.advance(0.01)
    done.append(Deferred.fromCoroutine(linker.link(root, "late", LiteralCap(b"l"), _meta(1))))
    assert not any(d.called for d in done)
    clock.advance(0.05)
    assert all(d.called for d in done)
    assert linker.publishes == 1
    assert sorted(world.run(world.open(root.cap).list())) == ["f0", "f1", "f2", "late"]
