"""The entries directory nodes keep made between listings are bounded together.

A node keeps the entries its last listing made, so that listing a large directory again
makes only those that changed; a gateway keeps thousands of nodes. Past ``most`` entries
kept by the nodes of one store, those that listed longest ago forget theirs (and make
them again at their next listing, with the same contents).
"""

from __future__ import annotations

import gc

from gateway.objects.caps import DirectoryWriteCap, LiteralCap
from gateway.objects.dirnode import DirectoryNode
from gateway.objects.listings import KeptListings
from tests.objects.test_dirnode import World, meta


class FakeNode:
    """A node as :class:`KeptListings` sees it: it notes when it forgets."""

    def __init__(self, name: str, forgot: list[str]) -> None:
        self.name, self.forgot = name, forgot

    def forget_listing(self) -> None:
        self.forgot.append(self.name)


def test_past_the_most_the_oldest_listings_are_forgotten_down_to_half() -> None:
    """Four nodes of 3 entries with room for 10: past it, the nodes that listed longest
    ago forget theirs until at most 5 are kept; the one listing now never does, and a
    node listing again counts as the newest."""
    forgot: list[str] = []
    kept = KeptListings(most=10)
    a, b, c, d = (FakeNode(name, forgot) for name in "abcd")
    for node in (a, b, c):
        kept.kept(node, 3)
    kept.kept(a, 3)  # a listed again: now the newest
    assert kept.total == 9 and forgot == []
    kept.kept(d, 3)
    assert forgot == ["b", "c", "a"]
    assert kept.total == 3


def test_a_node_gone_no_longer_counts() -> None:
    """A node collected gives its count back."""
    kept = KeptListings(most=10)
    node = FakeNode("a", [])
    kept.kept(node, 8)
    assert kept.total == 8
    del node
    gc.collect()
    assert kept.total == 0


def test_directory_nodes_of_one_store_share_the_bound() -> None:
    """Three directories of four entries listed with room for six: the first node forgets
    what it made, and listing it again gives the same entries."""
    world = World()
    kept = KeptListings(most=6)
    nodes = []
    for i in range(3):
        made = world.run(DirectoryNode.create(world.client, clock=world.clock, listings=kept))
        assert isinstance(made.cap, DirectoryWriteCap)
        for n in range(4):
            world.run(made.add(f"d{i}-{n}", LiteralCap(b"x%d-%d" % (i, n)), meta()))
        nodes.append(made)
    listed = [world.run(node.list()) for node in nodes]
    assert [len(entries) for entries in listed] == [4, 4, 4]
    assert nodes[0]._listed == {} and nodes[0]._caps == {}
    assert len(nodes[2]._listed) == 4 and len(nodes[2]._caps) == 4
    assert kept.total <= 6 + 4
    assert world.run(nodes[0].list()) == listed[0]
