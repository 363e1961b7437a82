"""New directories' write caps are made ahead, on the reactor's next turn after one is
taken (gateway.objects.newkeys), and are never handed out twice."""

from __future__ import annotations

from twisted.internet.task import Clock

from gateway.objects.caps import DirectoryWriteCap
from gateway.objects.newkeys import AHEAD, NewDirectoryCaps
from tests.objects.grid import make_grid, run
from tests.objects.test_dirnode import PARAMS, SECRETS, meta


def test_caps_are_fresh_and_made_after_the_one_taken() -> None:
    """The first cap is made on demand; the next ones come ready from the turn after;
    none repeats, and each is a working write cap with its read cap."""
    clock = Clock()
    caps = NewDirectoryCaps(clock)
    first = caps.take()
    assert len(clock.getDelayedCalls()) == 1  # the refill, on the next turn
    clock.advance(0)
    taken = [first] + [caps.take() for _ in range(3 * AHEAD)]
    seeds = {cap.node.signing_seed for cap in taken}
    assert len(seeds) == len(taken)
    for cap in taken:
        assert isinstance(cap, DirectoryWriteCap)
        assert cap.get_read_cap().storage_index == cap.storage_index
    clock.advance(0)
    assert not clock.getDelayedCalls()  # refilled, and nothing more is scheduled


def test_a_mkdir_takes_its_cap_from_the_store() -> None:
    """Directories a gateway's store opens make their subdirectories with its caps."""
    from gateway.objects.store import ObjectStore

    clock = Clock()
    grid = make_grid(4)
    store = ObjectStore(lambda: grid, SECRETS, PARAMS, clock)
    root = store.directory(run(store.create_directory()).cap)
    run(root.mkdir("first", meta("dir")))  # made on demand; the next ones on the next turn
    clock.advance(0)
    ready = list(store.new_directory_caps._ready)
    assert len(ready) == AHEAD
    child = run(root.mkdir("made", meta("dir")))
    assert child.cap == ready[0]
    assert run(store.directory(root.cap).get("made")).cap == ready[0]
