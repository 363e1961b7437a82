"""Batched, pipelined immutable reads and the file reader's read-ahead."""

from __future__ import annotations

import pytest

from gateway.objects import immutable_format as fmt
from gateway.objects.caps import ImmutableReadCap
from gateway.objects.errors import NotEnoughShares
from gateway.objects.immutable import ImmutableReader
from gateway.objects.store import FileReader
from tests.objects.grid import GridClient, make_grid, run
from tests.objects.test_immutable import pattern
from tests.objects.test_immutable import upload as upload_to

SEG = 256


def upload(grid: list[GridClient], data: bytes, k: int = 1, n: int = 1) -> ImmutableReadCap:
    """Upload with ``SEG``-byte segments and k-of-n encoding."""
    params = fmt.EncodingParams(k=k, happy=n, n=n, segment_size=SEG)
    cap = upload_to(grid, data, params=params)
    assert isinstance(cap, ImmutableReadCap)
    return cap


def block_reads(grid: list[GridClient], cap: ImmutableReadCap) -> list[tuple[int, int]]:
    """(offset, length) of every read of share data (not of the prefix or hash tree)."""
    layout = fmt.ShareLayout(cap.size, SEG, cap.k, cap.n)
    return [
        (r[3], r[4])
        for c in grid
        for r in c.requests
        if r[0] == "read_immutable" and r[3] >= layout.data_offset
    ]


def test_a_run_of_segments_is_one_request_per_share() -> None:
    """Reading 8 segments with batches of 4 reads each share's blocks in two requests."""
    grid = make_grid(3)
    data = pattern(8 * SEG, 3)
    cap = upload(grid, data, k=3, n=3)
    for c in grid:
        c.requests.clear()
    reader = ImmutableReader(cap, grid, batch_segments=4)
    assert run(reader.read(0, len(data))) == data
    reads = block_reads(grid, cap)
    assert len(reads) == 3 * 2
    layout = fmt.ShareLayout(cap.size, SEG, 3, 3)
    assert sorted({length for _, length in reads}) == [4 * layout.block_length(0)]


@pytest.mark.parametrize("batch", [1, 2, 3, 8])
@pytest.mark.parametrize(("offset", "length"), [(0, 9 * SEG + 7), (SEG - 1, 3), (5, 6 * SEG)])
def test_batched_reads_return_the_same_bytes(batch: int, offset: int, length: int) -> None:
    """Any batch size and pipeline depth gives the bytes of the range."""
    grid = make_grid(3)
    data = pattern(9 * SEG + 7, 5)
    cap = upload(grid, data, k=2, n=3)
    reader = ImmutableReader(cap, grid, batch_segments=batch, pipeline_depth=batch % 3)
    assert run(reader.read(offset, length)) == data[offset : offset + length]


def test_a_corrupt_block_in_a_run_falls_back_to_another_share() -> None:
    """A run that does not verify on one share is read segment by segment from others."""
    grid = make_grid(4)
    data = pattern(8 * SEG, 9)
    cap = upload(grid, data, k=2, n=4)
    layout = fmt.ShareLayout(cap.size, SEG, 2, 4)
    corrupted = 0
    for c in grid:
        backend = c.server.backend
        for share in backend.list_shares(cap.storage_index):
            if corrupted == 0:
                offset = layout.block_offset(2)
                old = backend.read_share(cap.storage_index, share, offset, 1)
                backend.write_share(cap.storage_index, share, [(offset, bytes([old[0] ^ 1]))], None)
                corrupted += 1
    assert run(ImmutableReader(cap, grid).read(0, len(data))) == data


def test_sequential_reads_fetch_ahead() -> None:
    """After a sequential read, the next chunks have already been requested."""
    grid = make_grid(1)
    data = pattern(20 * SEG, 1)
    cap = upload(grid, data)
    grid[0].requests.clear()
    reader = FileReader(cap, grid, chunk_size=SEG, readahead=4)
    assert run(reader.read(0, SEG)) == data[:SEG]
    assert run(reader.read(SEG, SEG)) == data[SEG : 2 * SEG]
    layout = fmt.ShareLayout(cap.size, SEG, 1, 1)
    fetched_until = max(o + n for o, n in block_reads(grid, cap)) - layout.data_offset
    assert fetched_until >= 5 * layout.block_length(0)  # chunks 2..5 were read ahead
    before = len(block_reads(grid, cap))
    assert run(reader.read(2 * SEG, 2 * SEG)) == data[2 * SEG : 4 * SEG]
    assert len(block_reads(grid, cap)) <= before + 1  # served from what was read ahead


def test_random_reads_do_not_read_ahead() -> None:
    """A read that does not continue the previous one fetches only what it needs."""
    grid = make_grid(1)
    data = pattern(20 * SEG, 2)
    cap = upload(grid, data)
    grid[0].requests.clear()
    reader = FileReader(cap, grid, chunk_size=SEG, readahead=4)
    assert run(reader.read(10 * SEG + 3, 10)) == data[10 * SEG + 3 : 10 * SEG + 13]
    assert run(reader.read(3 * SEG, 10)) == data[3 * SEG : 3 * SEG + 10]
    assert len(block_reads(grid, cap)) == 2


def test_a_failed_fetch_is_raised_and_not_cached() -> None:
    """A chunk whose fetch failed raises to its reader and is not remembered."""
    grid = make_grid(1)
    data = pattern(12 * SEG, 4)
    cap = upload(grid, data)
    reader = FileReader(cap, grid, chunk_size=SEG, readahead=4)
    grid[0].available = False
    with pytest.raises(NotEnoughShares):
        run(reader.read(0, SEG))
    assert 0 not in reader._chunks


def test_later_random_reads_need_one_request_each() -> None:
    """After the first fetch, a share's hash tree is read whole once; then one read per block."""
    grid = make_grid(1)
    data = pattern(64 * SEG, 6)
    cap = upload(grid, data)
    reader = ImmutableReader(cap, grid)
    for segment in (40, 3, 57):  # the first fetch reads only the siblings it needs
        assert run(reader.read(segment * SEG, 5)) == data[segment * SEG : segment * SEG + 5]
    grid[0].requests.clear()
    for segment in (11, 62, 29, 0):
        assert run(reader.read(segment * SEG + 1, 7)) == data[segment * SEG + 1 : segment * SEG + 8]
    reads = [r for r in grid[0].requests if r[0] == "read_immutable"]
    assert len(reads) == 4
    assert len(block_reads(grid, cap)) == 4


def test_a_corrupt_whole_tree_is_caught() -> None:
    """Nodes taken from the whole-tree read are checked against the root like any others."""
    grid = make_grid(2)
    data = pattern(64 * SEG, 8)
    cap = upload(grid, data, k=1, n=2)
    layout = fmt.ShareLayout(cap.size, SEG, 1, 2)
    for c in grid:
        backend = c.server.backend
        for share in backend.list_shares(cap.storage_index):
            at = layout.tree_offset + 5 * 32
            old = backend.read_share(cap.storage_index, share, at, 32)
            backend.write_share(
                cap.storage_index, share, [(at, bytes(b ^ 0xFF for b in old))], None
            )
            break
        break
    reader = ImmutableReader(cap, grid)
    for segment in range(0, 64, 3):
        assert run(reader.read(segment * SEG, SEG)) == data[segment * SEG : (segment + 1) * SEG]
