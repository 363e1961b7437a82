"""Directory write-through with shared publishes (what a gateway without write-back does):
concurrent changes to one directory share publishes, each is decided alone, none is lost."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock

from gateway.objects.caps import LiteralCap
from gateway.objects.dirnode import DirectoryNode, EntryMetadata
from gateway.objects.writethrough import WriteThrough
from tests.objects.grid import make_grid
from tests.objects.test_dirnode import World


def _meta(size: int) -> EntryMetadata:
    return EntryMetadata(kind="file", mtime=1.0, ctime=1.0, size=size)


def _shared(world: World) -> tuple[DirectoryNode, WriteThrough]:
    """A new directory whose nodes share publishes, as an object store's do."""
    write_through = WriteThrough(share_publishes=True)
    root = world.run(
        DirectoryNode.create(world.client, clock=world.clock, write_through=write_through)
    )
    return root, write_through


def _outcomes(world: World, changes: list[Any]) -> list[str]:
    """Run coroutines together; each one's outcome: "ok" or its error's name."""

    async def one(change: Any) -> str:
        try:
            await change
        except Exception as e:
            return type(e).__name__
        return "ok"

    async def together() -> list[str]:
        return await gatherResults([Deferred.fromCoroutine(one(c)) for c in changes])

    return world.run(together())


def test_concurrent_links_share_publishes() -> None:
    """Sixty links started together end as sixty entries in far fewer publishes.

    Requests take simulated time, as on a network, so links arrive while a publish is under way.
    """
    clock = Clock()
    world = World(make_grid(3, clock=clock, latency=0.01), clock)
    root, write_through = _shared(world)
    before = world.grid[0].count("read_test_write")
    links = [root.add(f"f{i}", LiteralCap(b"%d" % i), _meta(i)) for i in range(60)]
    assert _outcomes(world, links) == ["ok"] * 60
    listed = world.run(world.open(root.cap).list())
    assert sorted(listed) == sorted(f"f{i}" for i in range(60))
    assert listed["f42"].cap == LiteralCap(b"42")
    assert write_through.publishes <= 2
    assert world.grid[0].count("read_test_write") - before <= 2


def test_changes_through_other_nodes_of_the_directory_share_them_too() -> None:
    """Nodes opened from one another share publishes (a path walked twice gives two nodes),
    and each node's cached contents then show its own change."""
    clock = Clock()
    world = World(make_grid(3, clock=clock, latency=0.01), clock)
    root, write_through = _shared(world)
    sub = world.run(root.mkdir("sub"))
    nodes = [world.run(root.child("sub")) for _ in range(5)] + [sub]
    before = write_through.publishes
    links = [node.add(f"f{i}", LiteralCap(b"x")) for i, node in enumerate(nodes)]
    assert _outcomes(world, links) == ["ok"] * 6
    assert write_through.publishes - before <= 2
    assert len(world.run(world.open(sub.cap).list())) == 6
    reads = world.grid[0].count("read_mutable")
    for i, node in enumerate(nodes):
        assert f"f{i}" in world.run(node.list(max_age=60))
    assert world.grid[0].count("read_mutable") == reads


def test_a_refused_change_fails_alone() -> None:
    """A change refused within a shared publish (a taken name) fails; the others land."""
    clock = Clock()
    world = World(make_grid(3, clock=clock, latency=0.01), clock)
    root, _ = _shared(world)
    world.run(root.add("taken", LiteralCap(b"t")))
    changes = [
        root.add("a", LiteralCap(b"a")),
        root.add("b", LiteralCap(b"b")),
        root.add("taken", LiteralCap(b"again"), overwrite=False),
        root.remove("missing"),
        root.add("c", LiteralCap(b"c")),
    ]
    outcomes = _outcomes(world, changes)
    assert outcomes == ["ok", "ok", "ChildExists", "NoSuchChild", "ok"]
    listed = world.run(world.open(root.cap).list())
    assert sorted(listed) == ["a", "b", "c", "taken"]
    assert listed["taken"].cap == LiteralCap(b"t")


def test_a_failed_publish_reaches_every_change_it_carried() -> None:
    """When the grid refuses a shared publish, each of its changes fails (to be retried by
    its caller) and the directory is as it was."""
    clock = Clock()
    world = World(make_grid(3, clock=clock, latency=0.01), clock)
    root, _ = _shared(world)
    for server in world.grid:
        server.available = False
    links = [root.add(f"f{i}", LiteralCap(b"x"), _meta(1)) for i in range(5)]
    outcomes = _outcomes(world, links)
    assert len(outcomes) == 5 and "ok" not in outcomes
    for server in world.grid:
        server.available = True
    assert world.run(world.open(root.cap).list()) == {}


def test_read_only_nodes_refuse_before_any_publish() -> None:
    """Links through a read-only node each fail with NotWritable, and nothing is published."""
    clock = Clock()
    world = World(make_grid(3, clock=clock, latency=0.01), clock)
    root, write_through = _shared(world)
    read_only = world.open(root.cap.get_read_cap())
    before = write_through.publishes
    links = [read_only.add(f"f{i}", LiteralCap(b"x"), _meta(1)) for i in range(5)]
    assert _outcomes(world, links) == ["NotWritable"] * 5
    assert write_through.publishes == before
