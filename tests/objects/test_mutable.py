"""Mutable objects on a grid of real storage cores: versions, races, failures, corruption."""

from __future__ import annotations

import pytest

from gateway.objects import immutable_format as fmt
from gateway.objects import mutable
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.errors import CorruptShare, NotEnoughShares, UncoordinatedWriteError
from gateway.objects.mutable import MutableClient
from tests.objects.grid import GridClient, make_grid, run

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
