"""Mutable objects on a grid of real storage cores: versions, races, failures, corruption."""

from __future__ import annotations

import errno
import os
import random
import struct

import pytest
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import Clock

from gateway.objects import immutable_format as fmt
from gateway.objects import mutable, mutable_read
from gateway.objects.caps import LiteralCap, MutableWriteCap
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.dirnode import DirectoryNode
from gateway.objects.errors import (
    CorruptShare,
    NotEnoughShares,
    UncoordinatedWriteError,
    UploadUnhappy,
)
from gateway.objects.mutable import MutableClient, MutableVersion
from tests.objects.grid import GridClient, intercept, make_grid, run

PARAMS = fmt.EncodingParams(k=3, happy=7, n=10, segment_size=256)
SECRETS = GatewaySecrets(convergence=b"c" * 32, lease=b"l" * 32)


def client(grid: list[GridClient]) -> MutableClient:
    """A mutable-object client over ``grid`` with the small test parameters."""
    return MutableClient(grid, SECRETS, PARAMS)


@pytest.mark.parametrize("size", [0, 1, 255, 256, 1000])
def test_create_and_read(size: int) -> None:
    """Contents come back through the write cap and the read cap."""
    grid = make_grid(10)
    data = bytes(range(256)) * 4
    cap = run(client(grid).create(data[:size]))
    contents, version = run(client(grid).read(cap.get_read_cap()))
    assert contents == data[:size] and version.seqnum == 1
    assert run(client(grid).read(cap))[0] == data[:size]


def test_write_advances_version() -> None:
    """Each write raises the sequence number and readers see the newest contents."""
    grid = make_grid(10)
    c = client(grid)
    cap = run(c.create(b"one"))
    _, v1 = run(c.read(cap))
    v2 = run(c.write(cap, b"two" * 200, v1))
    assert v2.seqnum == 2
    assert run(c.read(cap.get_read_cap())) == (b"two" * 200, v2)


def test_lost_race_is_reported() -> None:
    """Writing against a stale version fails with UncoordinatedWriteError and changes nothing."""
    grid = make_grid(10)
    c = client(grid)
    cap = run(c.create(b"base"))
    _, v1 = run(c.read(cap))
    run(c.write(cap, b"theirs", v1))
    with pytest.raises(UncoordinatedWriteError, match="another writer changed"):
        run(c.write(cap, b"mine", v1))
    assert run(c.read(cap))[0] == b"theirs"


def test_modify_reapplies_after_a_lost_race() -> None:
    """A modification interrupted by another writer is re-read and re-applied, losing nothing."""
    grid = make_grid(10)
    c = client(grid)
    cap = run(c.create(b"a"))
    calls = []

    async def append_b(old: bytes) -> bytes:
        calls.append(old)
        if len(calls) == 1:  # another writer sneaks in between our read and our write
            await c.modify(cap, lambda data: data + b"c")
        return old + b"b"

    run(c.modify(cap, append_b))
    assert calls == [b"a", b"ac"]
    assert run(c.read(cap))[0] == b"acb"


def test_survives_n_minus_k_failures() -> None:
    """Reads work with any k servers up; with fewer the error is clear."""
    grid = make_grid(10)
    cap = run(client(grid).create(b"x" * 700))
    for g in grid[:7]:
        g.available = False
    assert run(client(grid).read(cap))[0] == b"x" * 700
    grid[7].available = False
    with pytest.raises(NotEnoughShares, match="cannot read the mutable object"):
        run(client(grid).read(cap))


def test_servers_failing_the_scan_are_named_not_taken_for_missing_shares() -> None:
    """A read whose every server fails (out of descriptors, say) says the requests failed
    and why, rather than that no share has a valid signature, and names no file."""
    grid = make_grid(10)
    cap = run(client(grid).create(b"x" * 700))

    def out_of_descriptors(method: str, args: tuple[object, ...]) -> None:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), "/srv/storage/shares/ab/secret")

    for g in grid:
        intercept(g, out_of_descriptors)
    with pytest.raises(NotEnoughShares) as raised:
        run(client(grid).read(cap))
    message = str(raised.value)
    assert "10 storage request(s) failed (Too many open files)" in message
    assert "valid signature" not in message and "/srv" not in message


def test_reader_takes_the_newest_version() -> None:
    """Servers that missed a write keep a stale version; readers still get the newest."""
    grid = make_grid(12)
    params = fmt.EncodingParams(k=3, happy=5, n=10, segment_size=256)
    c = MutableClient(grid, SECRETS, params)
    cap = run(c.create(b"old"))
    _, v1 = run(c.read(cap))
    holders = [g for g in grid if g.server.list_mutable(cap.storage_index)]
    down = holders[:3]
    for g in down:
        g.available = False
    run(c.write(cap, b"new", v1))
    for g in down:
        g.available = True
    assert run(c.read(cap))[0] == b"new"


def test_bad_signature_is_rejected_and_reported() -> None:
    """A share whose signed header was tampered with is ignored and reported to its server."""
    grid = make_grid(10)
    c = client(grid)
    cap = run(c.create(b"signed" * 50))
    si = cap.storage_index
    victim = next(g for g in grid if g.server.list_mutable(si))
    share = min(victim.server.list_mutable(si))
    victim.flip_byte(si, share, mutable.HEADER_SIZE - 1)
    assert run(c.read(cap))[0] == b"signed" * 50
    assert [r.share_number for r in victim.server.corruption_reports] == [share]


def test_other_object_cannot_vouch() -> None:
    """A header signed for one object does not verify for another."""
    grid = make_grid(10)
    c = client(grid)
    cap1 = run(c.create(b"one"))
    cap2 = run(c.create(b"two"))
    holder = next(g for g in grid if g.server.list_mutable(cap1.storage_index))
    share = min(holder.server.list_mutable(cap1.storage_index))
    header = holder.server.read_mutable(cap1.storage_index, share, 0, mutable.HEADER_SIZE)
    assert mutable.parse_header(cap1.get_read_cap(), header).seqnum == 1
    with pytest.raises(CorruptShare, match="signature is invalid"):
        mutable.parse_header(cap2.get_read_cap(), header)


# --- split versions (two writers reached disjoint servers with the same seqnum) -------

SPLIT_PARAMS = fmt.EncodingParams(k=2, happy=2, n=4, segment_size=256)


def split_object(
    grid: list[GridClient],
) -> tuple[MutableWriteCap, MutableVersion, MutableVersion, bytes]:
    """An object whose servers 0-1 hold writer A's version 2 and servers 2-3 writer B's.

    Both writers wrote against version 1 while the grid was partitioned. Returns
    the cap, the version readers prefer (higher root hash), the other one, and
    the preferred version's contents.
    """
    c = MutableClient(grid, SECRETS, SPLIT_PARAMS)
    cap = run(c.create(b"base"))
    _, v1 = run(c.read(cap))
    for contents, down in ((b"from A", grid[2:]), (b"from B", grid[:2])):
        for g in down:
            g.available = False
        run(c.write(cap, contents, v1))
        for g in grid:
            g.available = True
    held = [{header_of(g, cap.storage_index, sh) for sh in shares_on(g, cap)} for g in grid]
    assert held[0] == held[1] and held[2] == held[3] and len(held[0] | held[2]) == 2
    (a,), (b,) = held[0], held[2]
    assert a.seqnum == b.seqnum == 2
    winner, loser = (a, b) if a.ueb_hash > b.ueb_hash else (b, a)
    return cap, winner, loser, b"from A" if winner == a else b"from B"


def shares_on(g: GridClient, cap: MutableWriteCap) -> frozenset[int]:
    """The share numbers ``g`` holds for ``cap``'s slot (read straight from its core)."""
    return frozenset(g.server.list_mutable(cap.storage_index))


def header_of(g: GridClient, si: bytes, share: int) -> MutableVersion:
    """The version in the header of one stored share (signature not checked)."""
    header = g.server.read_mutable(si, share, 0, mutable.HEADER_SIZE)
    _, seqnum, salt, ueb_hash, k, n, segsize, size, _ = struct.unpack(">8sQ32s32sHHIQ64s", header)
    return MutableVersion(seqnum, salt, ueb_hash, k, n, segsize, size)


def stored_versions(grid: list[GridClient], cap: MutableWriteCap) -> dict[bytes, set[int]]:
    """Server id → the sequence numbers of every share it holds for ``cap``."""
    si = cap.storage_index
    return {g.server_id: {header_of(g, si, sh).seqnum for sh in shares_on(g, cap)} for g in grid}


def test_split_versions_read_deterministically() -> None:
    """Every reader of a split object gets the version with the higher root hash."""
    grid = make_grid(4)
    cap, winner, _, contents = split_object(grid)
    for secrets in (SECRETS, GatewaySecrets(b"C" * 32, b"L" * 32)):
        assert run(MutableClient(grid, secrets, SPLIT_PARAMS).read(cap)) == (contents, winner)


def test_split_versions_are_healed_by_the_next_modify() -> None:
    """A modify of a split object publishes above both versions, onto every server."""
    grid = make_grid(4)
    cap, _, _, before = split_object(grid)
    c = MutableClient(grid, SECRETS, SPLIT_PARAMS)
    version = run(c.modify(cap, lambda data: data + b"!"))
    assert version.seqnum == 3
    assert run(c.read(cap)) == (before + b"!", version)
    assert stored_versions(grid, cap) == {g.server_id: {3} for g in grid}
    assert run(c.modify(cap, lambda data: data + b"?")).seqnum == 4


def test_split_versions_still_detect_races() -> None:
    """Healing a split tests each share against what it held: a racing writer is not overwritten."""
    grid = make_grid(4)
    cap, _, _, start = split_object(grid)
    c = MutableClient(grid, SECRETS, SPLIT_PARAMS)
    calls = []

    async def append_b(old: bytes) -> bytes:
        calls.append(old)
        if len(calls) == 1:  # another writer heals the split between our read and our write
            await c.modify(cap, lambda data: data + b"c")
        return old + b"b"

    assert run(c.modify(cap, append_b)).seqnum == 4
    assert calls == [start, start + b"c"]
    assert run(c.read(cap))[0] == start + b"cb"
    assert stored_versions(grid, cap) == {g.server_id: {4} for g in grid}


def test_write_against_the_losing_split_version_is_a_lost_race() -> None:
    """A writer holding the version readers do not prefer has lost; one holding the winner wins."""
    grid = make_grid(4)
    cap, winner, loser, _ = split_object(grid)
    c = MutableClient(grid, SECRETS, SPLIT_PARAMS)
    with pytest.raises(UncoordinatedWriteError):
        run(c.write(cap, b"stale", loser))
    assert run(c.write(cap, b"fresh", winner)).seqnum == 3
    assert run(c.read(cap))[0] == b"fresh"


def test_failed_publish_does_not_block_later_writes() -> None:
    """A publish that left fewer than k shares of a newer version is written over, not obeyed."""
    grid = make_grid(10)
    c = client(grid)
    cap = run(c.create(b"one"))
    _, v1 = run(c.read(cap))
    for g in grid[1:]:
        g.available = False
    with pytest.raises(UploadUnhappy):
        run(c.write(cap, b"lost", v1))
    for g in grid:
        g.available = True
    assert run(c.read(cap)) == (b"one", v1)
    version = run(c.modify(cap, lambda data: data + b"+two"))
    assert version.seqnum == 3 and run(c.read(cap)) == (b"one+two", version)
    assert set().union(*stored_versions(grid, cap).values()) == {3}


def test_unrecoverable_newer_version_is_written_over() -> None:
    """A newer version too corrupt to rebuild is reported, the older one read, and written over."""
    grid = make_grid(12)
    params = fmt.EncodingParams(k=3, happy=5, n=10, segment_size=256)
    c = MutableClient(grid, SECRETS, params)
    cap = run(c.create(b"old" * 100))
    si = cap.storage_index
    _, v1 = run(c.read(cap))
    keep = [g for g in grid if shares_on(g, cap)][:3]  # three v1 shares survive: k
    for g in keep:
        g.available = False
    v2 = run(c.write(cap, b"new" * 100, v1))
    for g in keep:
        g.available = True
    body = fmt.ShareLayout(300, 256, 3, 10)
    rotted = [(g, sh) for g in grid for sh in shares_on(g, cap) if header_of(g, si, sh) == v2][:8]
    for g, sh in rotted:
        g.flip_byte(si, sh, mutable.HEADER_SIZE + body.block_offset(0) + 1)
    assert run(c.read(cap)) == (b"old" * 100, v1)
    reports = sorted(
        (g.server_id, r.share_number) for g in grid for r in g.server.corruption_reports
    )
    assert reports == sorted((g.server_id, sh) for g, sh in rotted)
    assert run(c.modify(cap, lambda data: data + b"!")).seqnum == 3
    assert run(c.read(cap))[0] == b"old" * 100 + b"!"


# --- reads overlapping another writer's publish -------------------------------------


def advisories(grid: list[GridClient]) -> int:
    """How many corruption advisories the grid's servers were sent."""
    return sum(g.count("advise_corrupt_mutable") for g in grid)


@pytest.fixture
def header_only_scans(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scans read only headers, as for objects larger than :data:`mutable_read.SCAN_READ`.

    A small object is read whole by its scan, so a publish can only overlap the
    block reads of a large one; these tests make every object behave like one.
    """
    monkeypatch.setattr(mutable_read, "SCAN_READ", mutable.HEADER_SIZE)


def publish_during_reads(
    grid: list[GridClient], cap: MutableWriteCap, times: int
) -> list[MutableVersion]:
    """Make another gateway publish a new version right after each of a reader's scans.

    The publish lands between the reader's header scan and its first block read,
    so every share the reader chose has been replaced when it reads its blocks.
    Returns the versions published (filled in as they happen).
    """
    other = MutableClient(grid, GatewaySecrets(b"C" * 32, b"L" * 32), PARAMS)
    published: list[MutableVersion] = []
    state = {"scanned": False, "busy": False}

    def hook(method: str, args: tuple[object, ...]) -> None:
        if state["busy"] or len(published) >= times:
            return
        if method == "list_mutable":
            state["scanned"] = True
        elif method == "read_mutable" and state["scanned"] and args[2] >= mutable.HEADER_SIZE:
            state["busy"], state["scanned"] = True, False
            try:
                n = len(published) + 1
                published.append(run(other.modify(cap, lambda d: b"version %d" % n)))
            finally:
                state["busy"] = False

    for g in grid:
        intercept(g, hook)
    return published


def test_read_overlapping_a_publish_rereads_without_advising(header_only_scans: None) -> None:
    """Shares replaced between the scan and the block reads mean a new version, not corruption."""
    grid = make_grid(10)
    c = client(grid)
    cap = run(c.create(b"x" * 700))
    published = publish_during_reads(grid, cap, times=1)
    contents, version = run(c.read(cap))
    assert len(published) == 1
    assert (contents, version) == (b"version 1", published[0])
    assert advisories(grid) == 0


def test_modify_overlapping_a_publish_applies_to_the_new_version(header_only_scans: None) -> None:
    """A modify whose read overlapped a publish builds on the new version."""
    grid = make_grid(10)
    c = client(grid)
    cap = run(c.create(b"x" * 700))
    published = publish_during_reads(grid, cap, times=2)
    version = run(c.modify(cap, lambda d: d + b"+mine"))
    assert len(published) == 2 and version.seqnum == 4
    assert run(c.read(cap))[0] == b"version 2+mine"
    assert advisories(grid) == 0


def test_read_overlapping_publishes_is_bounded(header_only_scans: None) -> None:
    """A read whose shares keep being replaced gives up (NotEnoughShares), still not advising."""
    grid = make_grid(10)
    c = client(grid)
    cap = run(c.create(b"x" * 700))
    published = publish_during_reads(grid, cap, times=1000)
    with pytest.raises(NotEnoughShares, match="replaced"):
        run(c.read(cap))
    assert len(published) == mutable_read.READ_ATTEMPTS
    assert advisories(grid) == 0


def test_small_object_read_is_one_request_per_share_after_listing() -> None:
    """A scan reads small shares whole: a read costs a listing and one read per share, no more."""
    grid = make_grid(10)
    c = client(grid)
    cap = run(c.create(b"small" * 100))
    before = sum(g.count("read_mutable") for g in grid)
    assert run(c.read(cap))[0] == b"small" * 100
    shares = sum(len(shares_on(g, cap)) for g in grid)
    assert sum(g.count("read_mutable") for g in grid) - before == shares


def test_update_against_a_known_state_skips_the_read() -> None:
    """Writing against the state of one's own last publish reads nothing first."""
    grid = make_grid(10)
    c = client(grid)
    writer, state = run(c.create_known(b"one"))
    before = sum(g.count("read_mutable") + g.count("list_mutable") for g in grid)
    state = run(c.update(writer, lambda d: d + b" two", state))
    state = run(c.update(writer, lambda d: d + b" three", state))
    assert sum(g.count("read_mutable") + g.count("list_mutable") for g in grid) == before
    assert run(c.read(writer)) == (b"one two three", state.version)


def test_update_against_a_stale_state_loses_and_changes_nothing() -> None:
    """Someone else published since the known state: the update loses the race, writes nothing."""
    grid = make_grid(10)
    c = client(grid)
    writer, stale = run(c.create_known(b"one"))
    other = MutableClient(grid, GatewaySecrets(b"C" * 32, b"L" * 32), PARAMS)
    theirs = run(other.modify(writer, lambda d: d + b" theirs"))
    with pytest.raises(UncoordinatedWriteError):
        run(c.update(writer, lambda d: d + b" mine", stale))
    assert run(c.read(writer)) == (b"one theirs", theirs)
    fresh = run(c.update(writer, lambda d: d + b" mine"))
    assert run(c.read(writer)) == (b"one theirs mine", fresh.version)


def test_corrupt_block_is_still_reported() -> None:
    """A block that fails verification while its header is unchanged is real corruption."""
    grid = make_grid(10)
    c = client(grid)
    cap = run(c.create(b"rot" * 300))
    si = cap.storage_index
    victim = next(g for g in grid if shares_on(g, cap))
    share = min(shares_on(victim, cap))
    body = fmt.ShareLayout(900, 256, 3, 10)
    victim.flip_byte(si, share, mutable.HEADER_SIZE + body.block_offset(0) + 3)
    others = [g for g in grid if shares_on(g, cap) and g is not victim]
    for g in others[2:]:  # only k shares reachable: the reader must use the victim's
        g.available = False
    with pytest.raises(NotEnoughShares, match="1 corrupt"):
        run(c.read(cap))
    assert [r.share_number for r in victim.server.corruption_reports] == [share]
    for g in grid:
        g.available = True
    assert run(c.read(cap))[0] == b"rot" * 300
    assert [r.share_number for r in victim.server.corruption_reports] in ([share], [share] * 2)


def test_concurrent_directory_writers_send_no_false_advisories() -> None:
    """Two directory writers and a reader on one directory: nothing lost, no corruption reported.

    The dirnode concurrency scenario (two writers, every request taking simulated
    time, so reads overlap the other writer's publishes constantly) plus a reader
    listing throughout; directories no longer retry failed reads themselves.
    """
    clock = Clock()
    grid = make_grid(4, clock=clock, latency=0.01)
    dir_params = fmt.EncodingParams(k=2, happy=3, n=4, segment_size=64 * 1024)
    first = MutableClient(grid, SECRETS, dir_params)
    second = MutableClient(grid, GatewaySecrets(b"C" * 32, b"L" * 32), dir_params)
    root = run(DirectoryNode.create(first, clock=clock), clock)
    writers = [
        DirectoryNode.open(first, root.cap, clock=clock, rng=random.Random(1)),
        DirectoryNode.open(second, root.cap, clock=clock, rng=random.Random(2)),
    ]
    reader = DirectoryNode.open(first, root.cap.get_read_cap(), clock=clock)
    done: list[str] = []
    listings: list[int] = []

    async def add_all(node: DirectoryNode, prefix: str) -> None:
        for i in range(100):
            await node.add(f"{prefix}-{i}", LiteralCap(b"%s%d" % (prefix.encode(), i)))
        done.append(prefix)

    async def keep_listing() -> None:
        while len(done) < 2:
            listings.append(len(await reader.list()))

    async def everything() -> None:
        await DeferredList(
            [
                Deferred.fromCoroutine(c)
                for c in (add_all(writers[0], "one"), add_all(writers[1], "two"), keep_listing())
            ],
            fireOnOneErrback=True,
            consumeErrors=True,
        )

    run(everything(), clock)
    listed = run(reader.list(), clock)
    assert len(listed) == 200 and listed["two-99"].cap == LiteralCap(b"two99")
    assert grid[0].count("read_test_write") > 201, "the writers never collided"
    assert len(listings) > 50 and listings == sorted(listings)
    assert advisories(grid) == 0
    assert not any(g.server.corruption_reports for g in grid)


def test_a_version_published_during_an_outage_spreads_out_again() -> None:
    """Published twice while a server is down (the second time its share doubles up on a
    server that answered), the next publish once the server is back puts a share on every
    server again, so happiness 5 of 5 is met instead of failing forever."""
    grid = make_grid(5)
    c = MutableClient(grid, SECRETS, fmt.EncodingParams(k=3, happy=5, n=5))
    cap = MutableWriteCap.generate()
    grid[4].available = False
    with pytest.raises(UploadUnhappy):
        run(c.create(b"v1", cap))
    with pytest.raises(UploadUnhappy):
        run(c.update(cap, lambda _: b"v2"))
    assert sum(1 for g in grid[:4] if len(shares_on(g, cap)) == 2) == 1
    grid[4].available = True
    state = run(c.update(cap, lambda _: b"v3"))
    assert run(c.read(cap))[0] == b"v3"
    newest = state.version
    assert all(
        any(header_of(g, cap.storage_index, share) == newest for share in shares_on(g, cap))
        for g in grid
    )


def test_revalidating_a_known_version_reads_only_the_headers() -> None:
    """Reading again with a known version that is still the newest keeps its contents: only
    the scan's first read of each share is made, nothing is read beyond it."""
    grid = make_grid(10)
    c = client(grid)
    data = bytes(range(256)) * 1200  # shares longer than a scan's first read
    cap = run(c.create(data))
    known = run(c.read_known(cap))
    for g in grid:
        g.requests.clear()
    again = run(c.read_known(cap, known))
    assert again.data == data and again.version == known.version
    reads = [r for g in grid for r in g.requests if r[0] == "read_mutable"]
    assert reads and all(r[3] == 0 and r[4] == mutable_read.SCAN_READ for r in reads)
    for g in grid:
        g.requests.clear()
    fresh = run(c.read_known(cap))  # without it, the contents are read past the headers
    assert fresh.data == data
    assert any(r[3] > 0 for g in grid for r in g.requests if r[0] == "read_mutable")


def test_revalidation_sees_another_writers_version() -> None:
    """A version published by another writer since is read, not the known one kept."""
    grid = make_grid(10)
    ours, theirs = client(grid), client(grid)
    cap = run(ours.create(b"one"))
    known = run(ours.read_known(cap))
    _, version = run(theirs.read(cap))
    run(theirs.write(cap, b"two", version))
    again = run(ours.read_known(cap, known))
    assert again.data == b"two" and again.version.seqnum == known.version.seqnum + 1


def test_revalidation_of_a_version_with_too_few_shares_left_reads_afresh() -> None:
    """When fewer than k shares of the known version remain (the rest unreachable), its
    contents are not vouched for by the scan: the read falls back to what can be rebuilt."""
    grid = make_grid(10)
    c = client(grid)
    cap = run(c.create(b"payload" * 10))
    known = run(c.read_known(cap))
    holders = [g for g in grid if shares_on(g, cap)]
    for g in holders[2:]:
        g.available = False  # 2 servers answer: fewer than k=3 shares
    with pytest.raises(NotEnoughShares):
        run(c.read_known(cap, known))
