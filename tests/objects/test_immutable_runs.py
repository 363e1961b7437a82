"""Reading runs of segments: one request per share per run, hash-tree nodes read once, every
block still checked against the cap, primary shares preferred."""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.objects import immutable_format as fmt
from gateway.objects import merkle
from gateway.objects.caps import ImmutableReadCap
from gateway.objects.crypto import HASH_SIZE, GatewaySecrets
from gateway.objects.errors import CorruptShare
from gateway.objects.immutable import ImmutableReader
from gateway.objects.share_source import WHOLE_TREE_LIMIT, run_siblings, verify_run
from gateway.objects.upload import ImmutableUploader
from tests.objects.grid import GridClient, make_grid, run

SECRETS = GatewaySecrets(convergence=b"c" * 32, lease=b"l" * 32)
KEY = b"k" * 32


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic test content."""
    return bytes((i * 7 + seed) % 251 for i in range(size))


def uploaded(
    data: bytes, segment_size: int, k: int = 3, n: int = 5, servers: int = 5
) -> tuple[list[GridClient], ImmutableReadCap]:
    """``data`` uploaded to a fresh grid; request logs cleared."""
    grid = make_grid(servers)
    params = fmt.EncodingParams(k=k, happy=min(n, servers), n=n, segment_size=segment_size)
    cap = run(ImmutableUploader(grid, SECRETS, params).upload(io.BytesIO(data)))
    assert isinstance(cap, ImmutableReadCap)
    for c in grid:
        c.requests.clear()
    return grid, cap


def share_reads(grid: list[GridClient]) -> list[tuple[int, int, int]]:
    """(share, offset, length) of every read_immutable request."""
    return [(r[2], r[3], r[4]) for c in grid for r in c.requests if r[0] == "read_immutable"]


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 40), st.data())
def test_run_siblings_are_the_blocks_siblings_outside_their_paths(
    segments: int, data: st.DataObject
) -> None:
    """The nodes a run needs are exactly its blocks' siblings that no block of it lies under."""
    first = data.draw(st.integers(0, segments - 1))
    run_ = range(first, data.draw(st.integers(first + 1, segments)))
    on_paths = {i for s in run_ for i in merkle.path(segments, s)}
    siblings = {i for s in run_ for i in merkle.siblings(segments, s)}
    assert sorted(run_siblings(segments, run_)) == sorted(siblings - on_paths)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 24), st.data())
def test_run_verification_agrees_with_block_verification(
    segments: int, data: st.DataObject
) -> None:
    """A run verifies exactly when each of its blocks does; a flipped byte in any block or a
    wrong sibling node is caught; the nodes it vouches for are the stored ones."""
    seg = 64
    content = pattern(segments * seg - data.draw(st.integers(0, seg - 1)), seed=segments)
    cap, shares = fmt.encode_bytes(content, KEY, fmt.EncodingParams(3, 5, 5, seg))
    share = shares[1]
    verified = fmt.verify_prefix(cap, 1, share[: fmt.prefix_length(5)])
    layout = verified.layout
    first = data.draw(st.integers(0, layout.num_segments - 1))
    run_ = range(first, data.draw(st.integers(first + 1, layout.num_segments)))
    stored = {
        i: share[layout.tree_offset + i * HASH_SIZE : layout.tree_offset + (i + 1) * HASH_SIZE]
        for i in range(merkle.tree_size(layout.num_segments))
    }
    blocks = [
        share[layout.block_offset(s) : layout.block_offset(s) + layout.block_length(s)]
        for s in run_
    ]
    siblings = {i: stored[i] for i in run_siblings(layout.num_segments, run_)}
    good = verify_run(verified, run_, blocks, siblings)
    assert all(stored[i] == node for i, node in good.items())
    assert 0 in good and all(merkle.leaf_node(layout.num_segments, s) in good for s in run_)
    for segment, block in zip(run_, blocks, strict=True):
        fmt.verify_block(
            verified,
            segment,
            block,
            {i: stored[i] for i in fmt.block_tree_nodes_needed(layout, segment)},
        )
    bad = data.draw(st.integers(0, len(blocks) - 1))
    flipped = list(blocks)
    flipped[bad] = bytes([flipped[bad][0] ^ 1]) + flipped[bad][1:]
    try:
        verify_run(verified, run_, flipped, siblings)
        raise AssertionError("a flipped byte was not caught")
    except CorruptShare:
        pass
    if siblings:
        wrong = dict(siblings)
        node = data.draw(st.sampled_from(sorted(wrong)))
        wrong[node] = bytes(HASH_SIZE)
        try:
            verify_run(verified, run_, blocks, wrong)
            raise AssertionError("a wrong sibling was not caught")
        except CorruptShare:
            pass


def test_sequential_read_of_a_large_file_reads_each_tree_once() -> None:
    """A whole read of a file whose tree is over WHOLE_TREE_LIMIT: per share, one read of the
    tree's top and one read per run of 8 segments (aligned), nothing else."""
    seg = 48
    segments = 1100  # tree of 4095 nodes: 128 KiB, over the limit
    assert merkle.tree_size(segments) * HASH_SIZE > WHOLE_TREE_LIMIT
    data = pattern(segments * seg - 5)
    grid, cap = uploaded(data, seg)
    reader = ImmutableReader(cap, grid)
    assert run(reader.read(0, cap.size)) == data
    layout = fmt.ShareLayout(cap.size, seg, 3, 5)
    reads = share_reads(grid)
    shares = {share for share, _, _ in reads}
    assert shares == {0, 1, 2}  # primary shares: decoding them is a join
    for share in shares:
        mine = [(offset, length) for s, offset, length in reads if s == share]
        tree = [r for r in mine if layout.tree_offset <= r[0] < layout.data_offset]
        blocks = [r for r in mine if r[0] >= layout.data_offset]
        assert len(tree) == 1, tree
        assert len(blocks) == -(-segments // 8)
        assert all(
            (offset - layout.data_offset) // layout.block_length(0) % 8 == 0 for offset, _ in blocks
        )


def test_small_tree_is_read_whole_once_by_concurrent_runs() -> None:
    """Runs started together on fresh shares share one read of the (small) whole tree."""
    seg = 64
    data = pattern(100 * seg)
    grid, cap = uploaded(data, seg)
    reader = ImmutableReader(cap, grid)
    pieces = run(reader.read_pieces(0, cap.size))  # 13 runs at once
    assert b"".join(pieces) == data
    layout = fmt.ShareLayout(cap.size, seg, 3, 5)
    tree_reads = [r for r in share_reads(grid) if layout.tree_offset <= r[1] < layout.data_offset]
    assert sorted(share for share, _, _ in tree_reads) == [0, 1, 2]
    assert all(
        length == merkle.tree_size(layout.num_segments) * HASH_SIZE for _, _, length in tree_reads
    )


def test_read_pieces_hands_out_whole_segments() -> None:
    """Aligned ranges come back one piece per segment, each exactly that segment; a range's
    ends are clipped; nothing is joined."""
    seg = 64
    data = pattern(10 * seg + 7)
    grid, cap = uploaded(data, seg)
    reader = ImmutableReader(cap, grid)
    pieces = run(reader.read_pieces(2 * seg, 5 * seg))
    assert pieces == [data[i * seg : (i + 1) * seg] for i in range(2, 7)]
    pieces = run(reader.read_pieces(9 * seg + 3, 100))
    assert pieces == [data[9 * seg + 3 : 10 * seg], data[10 * seg :]]
    assert run(reader.read_pieces(len(data), 10)) == []


def test_corrupt_block_in_a_run_drops_and_reports_its_share() -> None:
    """A flipped byte inside a run's blocks: the read is still exact, the share's server is
    told once, and the run is read from another share (no segment-by-segment retries)."""
    seg = 64
    data = pattern(40 * seg)
    grid, cap = uploaded(data, seg)
    layout = fmt.ShareLayout(cap.size, seg, 3, 5)
    holder = next(c for c in grid if 1 in c.server.list_immutable(cap.storage_index))
    holder.flip_byte(cap.storage_index, 1, layout.block_offset(11) + 7)
    assert run(ImmutableReader(cap, grid).read(0, cap.size)) == data
    assert [r.share_number for r in holder.server.corruption_reports] == [1]
    assert sum(len(c.server.corruption_reports) for c in grid) == 1
    block_reads = [r for r in share_reads(grid) if r[1] >= layout.data_offset]
    assert all(length > layout.block_length(0) for _, _, length in block_reads)


def test_corrupt_tree_node_the_run_computes_is_reported() -> None:
    """A bad stored copy of a node the run computes from its blocks (never needed to verify
    them) still marks the share corrupt: a single-block read would trip over it later."""
    seg = 64
    data = pattern(16 * seg)
    grid, cap = uploaded(data, seg)
    layout = fmt.ShareLayout(cap.size, seg, 3, 5)
    holder = next(c for c in grid if 0 in c.server.list_immutable(cap.storage_index))
    leaf = merkle.leaf_node(layout.num_segments, 3)
    holder.flip_byte(cap.storage_index, 0, layout.tree_offset + leaf * HASH_SIZE + 4)
    assert run(ImmutableReader(cap, grid).read(0, cap.size)) == data
    assert [r.share_number for r in holder.server.corruption_reports] == [0]


def test_single_segment_reads_read_only_the_nodes_they_need() -> None:
    """A random read of one segment reads its block and its siblings (coalesced into a few
    requests), not the tree."""
    seg = 64
    data = pattern(300 * seg)
    grid, cap = uploaded(data, seg)
    reader = ImmutableReader(cap, grid)
    assert run(reader.read(123 * seg + 5, 10)) == data[123 * seg + 5 : 123 * seg + 15]
    layout = fmt.ShareLayout(cap.size, seg, 3, 5)
    tree_bytes = sum(
        length
        for _, offset, length in share_reads(grid)
        if layout.tree_offset <= offset < layout.data_offset
    )
    assert 0 < tree_bytes < 3 * merkle.tree_size(layout.num_segments) * HASH_SIZE // 4
