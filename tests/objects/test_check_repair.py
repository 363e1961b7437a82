"""Check, verify, repair and deep-check on a grid of real storage cores."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from gateway.objects import immutable_format as fmt
from gateway.objects import mutable
from gateway.objects.caps import (
    Capability,
    DirectoryWriteCap,
    ImmutableReadCap,
    LiteralCap,
    MutableWriteCap,
    b32encode,
)
from gateway.objects.checker import CheckResult, ShareStatus, check
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.deepcheck import deep_check
from gateway.objects.errors import NotEnoughShares, NotWritable
from gateway.objects.immutable import read_immutable
from gateway.objects.mutable import MutableClient
from gateway.objects.repairer import RepairResult, repair
from gateway.objects.upload import ImmutableUploader
from tests.objects.grid import GridClient, make_grid, run

SEG = 256
PARAMS = fmt.EncodingParams(k=3, happy=7, n=10, segment_size=SEG)
SECRETS = GatewaySecrets(convergence=b"c" * 32, lease=b"l" * 32)
LAYOUT = fmt.ShareLayout(5 * SEG + 3, SEG, 3, 10)


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic test content."""
    return bytes((i * 7 + seed) % 251 for i in range(size))


DATA = pattern(LAYOUT.size)


def upload(grid: list[GridClient], data: bytes = DATA) -> ImmutableReadCap:
    """Upload ``data`` (large enough not to be literal) and return its read cap."""
    cap = run(ImmutableUploader(grid, SECRETS, PARAMS).upload_bytes(data))
    assert isinstance(cap, ImmutableReadCap)
    return cap


def holders(grid: list[GridClient], si: bytes) -> list[tuple[GridClient, int]]:
    """Every (server, share) pair stored for ``si``, immutable or mutable."""
    return [
        (c, sh)
        for c in grid
        for sh in sorted(c.backend.list_shares(si))  # the backend lists both kinds
    ]


def do_check(cap: Capability, grid: list[GridClient], verify: bool = False) -> CheckResult:
    """Run a check synchronously."""
    return run(check(cap, grid, verify=verify, happy=PARAMS.happy))


def do_repair(cap: Capability, grid: list[GridClient]) -> RepairResult:
    """Run a verifying repair synchronously."""
    return run(repair(cap, grid, SECRETS, PARAMS))


def assert_no_secrets(result: CheckResult | RepairResult, *caps: Capability) -> None:
    """The JSON and repr of a result name no capability and no key."""
    text = json.dumps(result.to_json()) + repr(result)
    for cap in caps:
        assert cap.to_string() not in text
        for secret in ("key", "signing_seed", "read_key"):
            value = getattr(cap, secret, None)
            if isinstance(value, bytes):
                assert b32encode(value) not in text


def test_healthy_file_is_healthy() -> None:
    """A fresh upload: ten shares on ten servers, healthy, found with one list per server."""
    grid = make_grid(10)
    cap = upload(grid)
    for c in grid:
        c.requests.clear()
    result = do_check(cap, grid)
    assert result.healthy and result.recoverable and not result.verified
    assert (result.shares_found, result.shares_good, result.distinct_servers) == (10, 10, 10)
    assert (result.k, result.n, result.happy, result.happiness) == (3, 10, 7, 10)
    assert all(c.count("list_immutable") == 1 and len(c.requests) == 1 for c in grid)
    doc = result.to_json()
    assert doc["storage_index"] == b32encode(cap.storage_index)
    assert sorted(map(int, doc["sharemap"])) == list(range(10))
    assert_no_secrets(result, cap)
    verified = do_check(cap.get_verify_cap(), grid, verify=True)
    assert verified.healthy and verified.verified
    assert {s.status for s in verified.shares} == {ShareStatus.GOOD}


def test_literal_is_always_healthy() -> None:
    """A literal cap needs no server: healthy, recoverable, nothing to repair."""
    cap = LiteralCap(b"tiny")
    result = do_check(cap, [])
    assert result.healthy and result.recoverable and result.kind == "literal"
    repaired = run(repair(cap, [], SECRETS, PARAMS))
    assert not repaired.attempted and repaired.ok
    assert_no_secrets(repaired, cap)


def test_missing_shares_are_recreated_byte_identical() -> None:
    """Two servers lose their shares: unhealthy but recoverable; repair restores all ten."""
    grid = make_grid(10)
    cap = upload(grid)
    si = cap.storage_index
    lost = holders(grid, si)[:2]
    original = {sh: c.backend.read_share(si, sh, 0, LAYOUT.share_size) for c, sh in lost}
    for c, sh in lost:
        c.backend.delete_share(si, sh)

    before = do_check(cap, grid)
    assert not before.healthy and before.recoverable
    assert before.shares_good == 8 and before.distinct_servers == 8

    result = do_repair(cap, grid)
    assert result.attempted and result.ok and result.method == "re-encoded"
    assert sorted(p.share_number for p in result.placed) == sorted(original)
    assert result.after.shares_good == 10 and result.after.happiness == 10
    for placed in result.placed:
        server = next(c for c in grid if c is placed.server)
        stored = server.backend.read_share(si, placed.share_number, 0, LAYOUT.share_size + 1)
        assert stored == original[placed.share_number]
    assert do_check(cap, grid).healthy
    assert run(read_immutable(cap, grid)) == DATA
    assert_no_secrets(result, cap)
    json.dumps(result.to_json())


def test_flipped_byte_found_by_verify_and_repaired() -> None:
    """A flipped byte escapes check, verify finds exactly that share, repair heals it."""
    grid = make_grid(10)
    cap = upload(grid)
    si = cap.storage_index
    victim, share = holders(grid, si)[4]
    victim.flip_byte(si, share, LAYOUT.block_offset(3) + 7)

    for c in grid:
        c.requests.clear()
    assert do_check(cap, grid).healthy
    assert sum(c.count("read_immutable") for c in grid) == 0  # check reads nothing

    verified = do_check(cap, grid, verify=True)
    assert not verified.healthy and verified.recoverable
    assert [(s.server, s.share_number) for s in verified.corrupt_shares] == [(victim, share)]
    assert "corrupt block 3" in (verified.corrupt_shares[0].reason or "")
    assert [r.share_number for r in victim.server.corruption_reports] == [share]
    assert sum(len(c.server.corruption_reports) for c in grid) == 1

    result = do_repair(cap, grid)
    assert result.ok and [p.share_number for p in result.placed] == [share]
    assert result.placed[0].server is not victim  # immutable shares cannot be overwritten

    after = do_check(cap, grid, verify=True)
    assert after.healthy and after.shares_good == 10
    good = [s for s in after.shares if s.status is ShareStatus.GOOD]
    assert len(good) == 10 and {s.share_number for s in good} == set(range(10))
    # The only complaint left is the unremovable stale copy on the victim.
    assert [(s.server, s.share_number) for s in after.corrupt_shares] == [(victim, share)]
    assert run(read_immutable(cap, grid)) == DATA
    # A second repair has nothing to do.
    assert not do_repair(cap, grid).attempted


@pytest.mark.parametrize(
    "where", ["header", "tree", "last block"], ids=["header", "hash tree", "block"]
)
def test_truncated_share_is_caught_by_verify(where: str) -> None:
    """A share cut short anywhere is reported corrupt (and its server told)."""
    grid = make_grid(10)
    cap = upload(grid)
    si = cap.storage_index
    victim, share = holders(grid, si)[0]
    length = {
        "header": 20,
        "tree": LAYOUT.tree_offset + 40,
        "last block": LAYOUT.share_size - 1,
    }[where]
    victim.backend.write_share(si, share, [], length)
    verified = do_check(cap, grid, verify=True)
    assert [s.share_number for s in verified.corrupt_shares] == [share]
    assert verified.shares_good == 9
    assert "short" in (verified.corrupt_shares[0].reason or "") or "truncated" in (
        verified.corrupt_shares[0].reason or ""
    )
    assert [r.share_number for r in victim.server.corruption_reports] == [share]


def test_too_few_shares_cannot_be_repaired() -> None:
    """With fewer than k shares left the object is unrecoverable and repair says so."""
    grid = make_grid(10)
    cap = upload(grid)
    si = cap.storage_index
    for c, sh in holders(grid, si)[2:]:
        c.backend.delete_share(si, sh)
    result = do_check(cap, grid)
    assert not result.recoverable and not result.healthy and result.shares_good == 2
    with pytest.raises(NotEnoughShares, match="3 intact shares are needed.*only 2") as info:
        do_repair(cap, grid)
    assert cap.to_string() not in str(info.value)
    assert b32encode(cap.storage_index) in str(info.value)


def test_verify_cap_verifies_but_cannot_repair() -> None:
    """A verify cap suffices to verify; re-creating shares needs the read cap."""
    grid = make_grid(10)
    cap = upload(grid)
    si = cap.storage_index
    c, sh = holders(grid, si)[0]
    c.backend.delete_share(si, sh)
    verifier = cap.get_verify_cap()
    assert do_check(verifier, grid, verify=True).shares_good == 9
    with pytest.raises(NotWritable, match="needs its read cap"):
        do_repair(verifier, grid)


def test_unreachable_servers_are_reported_not_raised() -> None:
    """A down server is listed as unreachable; its shares count as missing."""
    grid = make_grid(10)
    cap = upload(grid)
    grid[3].available = False
    result = do_check(cap, grid, verify=True)
    assert [s.nickname for s in result.unreachable] == [grid[3].nickname]
    assert result.shares_good == 9 and not result.healthy
    assert result.to_json()["servers_unreachable"][0]["nickname"] == grid[3].nickname


def test_doubled_up_shares_are_spread_for_happiness() -> None:
    """All ten shares on five servers is unhealthy; repair copies shares onto new servers."""
    grid = make_grid(5)
    cap = run(
        ImmutableUploader(grid, SECRETS, fmt.EncodingParams(3, 5, 10, SEG)).upload_bytes(DATA)
    )
    assert isinstance(cap, ImmutableReadCap)
    grid += make_grid(10)[5:]
    before = do_check(cap, grid)
    assert before.shares_good == 10 and before.happiness == 5 and not before.healthy
    result = do_repair(cap, grid)
    assert result.ok and result.after.happiness >= 7
    assert all(p.server in grid[5:] for p in result.placed)
    assert run(read_immutable(cap, grid)) == DATA


# --- mutable --------------------------------------------------------------------------


def make_mutable(grid: list[GridClient], contents: bytes) -> MutableWriteCap:
    """Create a mutable object on ``grid``."""
    return run(MutableClient(grid, SECRETS, PARAMS).create(contents))


def test_mutable_missing_shares_are_republished() -> None:
    """Shares lost on three servers: repair republishes the same contents as seqnum 2."""
    grid = make_grid(10)
    contents = pattern(700, seed=5)
    cap = make_mutable(grid, contents)
    si = cap.storage_index
    healthy = do_check(cap.get_verify_cap(), grid)
    assert healthy.healthy and healthy.kind == "mutable" and healthy.newest is not None
    assert healthy.newest.seqnum == 1
    for c, sh in holders(grid, si)[:3]:
        c.backend.delete_share(si, sh)

    before = do_check(cap, grid)
    assert not before.healthy and before.recoverable and before.shares_good == 7
    with pytest.raises(NotWritable, match="needs its write cap"):
        do_repair(cap.get_read_cap(), grid)

    result = do_repair(cap, grid)
    assert result.attempted and result.ok and result.method == "republished"
    assert result.new_seqnum == 2 and len(result.placed) == 10
    assert result.after.shares_good == 10 and [v.seqnum for v in result.after.versions] == [2]
    assert run(MutableClient(grid, SECRETS, PARAMS).read(cap.get_read_cap()))[0] == contents
    assert_no_secrets(result, cap, cap.get_read_cap())


def test_mutable_corrupt_block_found_by_verify() -> None:
    """A flipped byte in a mutable share's body: check passes, verify flags it and advises."""
    grid = make_grid(10)
    cap = make_mutable(grid, pattern(900, seed=1))
    si = cap.storage_index
    victim, share = holders(grid, si)[2]
    body = fmt.ShareLayout(900, SEG, 3, 10)
    victim.flip_byte(si, share, mutable.HEADER_SIZE + body.block_offset(1) + 2)
    assert do_check(cap, grid).healthy
    verified = do_check(cap, grid, verify=True)
    assert [(s.server, s.share_number) for s in verified.corrupt_shares] == [(victim, share)]
    assert [r.share_number for r in victim.server.corruption_reports] == [share]
    result = do_repair(cap, grid)
    assert result.ok
    assert not do_check(cap, grid, verify=True).corrupt_shares  # the bad share was rewritten


def test_mutable_stale_version_is_unhealthy() -> None:
    """A server left holding an old version makes the object unhealthy until repaired."""
    grid = make_grid(10)
    client = MutableClient(grid, SECRETS, PARAMS)
    cap = run(client.create(b"one" * 30))
    _, v1 = run(client.read(cap))
    grid[0].available = False
    run(client.write(cap, b"two" * 30, v1))
    grid[0].available = True
    before = do_check(cap, grid)
    assert [v.seqnum for v in before.versions] == [2, 1]
    assert not before.healthy and before.recoverable
    result = do_repair(cap, grid)
    assert result.ok and [v.seqnum for v in result.after.versions] == [3]
    assert run(client.read(cap))[0] == b"two" * 30


# --- deep check -----------------------------------------------------------------------


def test_deep_check_visits_each_object_once() -> None:
    """A tree with a shared child and a cycle: each object once, progress reported, repairs."""
    grid = make_grid(10)
    root = DirectoryWriteCap(make_mutable(grid, b"root"))
    sub = DirectoryWriteCap(make_mutable(grid, b"sub"))
    damaged = upload(grid, pattern(3 * SEG, seed=9))
    intact = upload(grid)
    tiny = LiteralCap(b"tiny")
    tree: dict[Capability, list[Capability]] = {
        root: [damaged, sub, tiny],
        sub: [intact, damaged, root.get_read_cap(), tiny],  # a shared file and a cycle
    }

    async def children(cap: Capability) -> AsyncIterator[Capability]:
        for child in tree.get(cap, []):
            yield child

    si = damaged.storage_index
    for c, sh in holders(grid, si)[:3]:
        c.backend.delete_share(si, sh)

    progress: list[tuple[int, int]] = []
    result = run(
        deep_check(root, children, grid, happy=7, on_progress=lambda *p: progress.append(p))
    )
    assert result.objects_checked == 5
    assert (result.healthy, result.unhealthy, result.unrecoverable) == (4, 1, 0)
    assert progress[-1] == (5, 5) and [d for d, _ in progress] == [1, 2, 3, 4, 5]
    assert all(d <= t for d, t in progress)
    kinds = sorted(e.check.kind for e in result.entries)
    assert kinds == ["directory", "directory", "immutable", "immutable", "literal"]
    doc = json.dumps(result.to_json())
    assert root.to_string() not in doc and damaged.to_string() not in doc

    repaired = run(
        deep_check(
            root,
            children,
            grid,
            verify=True,
            repair=lambda cap, before: repair(cap, grid, SECRETS, PARAMS, before=before),
        )
    )
    assert (repaired.repairs_attempted, repaired.repairs_succeeded) == (1, 1)
    assert repaired.healthy == 5 and not repaired.errors
    assert run(read_immutable(damaged, grid)) == pattern(3 * SEG, seed=9)


def test_deep_check_records_unlistable_directories() -> None:
    """A directory whose listing fails is an entry error; the walk continues."""
    grid = make_grid(10)
    root = DirectoryWriteCap(make_mutable(grid, b"root"))

    async def children(cap: Capability) -> AsyncIterator[Capability]:
        raise NotEnoughShares("cannot read the directory")
        yield cap  # pragma: no cover

    result = run(deep_check(root, children, grid))
    assert result.objects_checked == 1
    assert result.errors and "could not list directory" in result.errors[0]
