"""The object store's file reader: segment-aligned chunk cache, shared fetches, exact bytes."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from gateway.objects import immutable_format as fmt
from gateway.objects.caps import ImmutableReadCap
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.errors import NotEnoughShares
from gateway.objects.store import FileReader
from gateway.objects.upload import ImmutableUploader
from tests.objects.grid import GridClient, make_grid, run

SEG = 256
PARAMS = fmt.EncodingParams(k=2, happy=3, n=3, segment_size=SEG)
SECRETS = GatewaySecrets(convergence=b"c" * 32, lease=b"l" * 32)
DATA = bytes((i * 13) % 251 for i in range(10 * SEG + 17))


def _uploaded() -> tuple[list[GridClient], ImmutableReadCap]:
    grid = make_grid(3)
    cap = run(ImmutableUploader(grid, SECRETS, PARAMS).upload(io.BytesIO(DATA)))
    assert isinstance(cap, ImmutableReadCap)
    return grid, cap


GRID, CAP = _uploaded()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, len(DATA) + 10), st.integers(0, 3 * SEG))
def test_any_range_is_exact(offset: int, length: int) -> None:
    """Reads across chunk boundaries, past the end and of nothing give exactly the file's bytes."""
    reader = FileReader(CAP, GRID, chunk_size=SEG, cached_chunks=2)
    assert run(reader.read(offset, length)) == DATA[offset : offset + length]


def test_small_sequential_reads_fetch_each_chunk_once() -> None:
    """Eight 32-byte reads inside one segment cost one segment fetch, not eight."""
    reader = FileReader(CAP, GRID, chunk_size=SEG)
    before = sum(c.count("read_immutable") for c in GRID)
    for i in range(8):
        assert run(reader.read(i * 32, 32)) == DATA[i * 32 : i * 32 + 32]
    first_chunk = sum(c.count("read_immutable") for c in GRID) - before
    for i in range(8):
        run(reader.read(i * 32, 32))
    assert sum(c.count("read_immutable") for c in GRID) - before == first_chunk


def _latency_grid(
    segment_size: int, data: bytes
) -> tuple[list[GridClient], ImmutableReadCap, Clock]:
    """``data`` on five servers whose every request takes 10 ms of a test clock (3/5/5)."""
    clock = Clock()
    grid = make_grid(5, clock=clock, latency=0.01)
    params = fmt.EncodingParams(k=3, happy=5, n=5, segment_size=segment_size)
    cap = run(ImmutableUploader(grid, SECRETS, params).upload(io.BytesIO(data)), clock)
    assert isinstance(cap, ImmutableReadCap)
    for c in grid:
        c.requests.clear()
    return grid, cap, clock


def _pipelined_download(
    reader: FileReader, clock: Clock, size: int, length: int, outstanding: int
) -> bytes:
    """Read a whole file as an SFTP client does: ``outstanding`` reads of ``length`` bytes
    in flight, a new one sent as each answer arrives."""
    got: dict[int, bytes] = {}
    state = {"next": 0, "flying": 0}

    def issue() -> None:
        while state["flying"] < outstanding and state["next"] < size:
            offset = state["next"]
            state["next"] += length
            state["flying"] += 1
            Deferred.fromCoroutine(reader.read(offset, length)).addCallback(done, offset)

    def done(data: bytes, offset: int) -> None:
        got[offset] = data
        state["flying"] -= 1
        issue()

    issue()
    for _ in range(100_000):
        if not state["flying"]:
            break
        clock.advance(0.001)
    assert not state["flying"], "the download stalled"
    return b"".join(got[offset] for offset in sorted(got))


def _block_reads(grid: list[GridClient], layout: fmt.ShareLayout) -> list[tuple[int, int, int]]:
    """(share, first segment, segments) of every read of blocks."""
    size = layout.block_length(0)
    return [
        (r[2], (r[3] - layout.data_offset) // size, -(-r[4] // size))
        for c in grid
        for r in c.requests
        if r[0] == "read_immutable" and r[3] >= layout.data_offset
    ]


@pytest.mark.parametrize(
    ("length", "outstanding"), [(3 * SEG // 2, 64), (8 * SEG, 1), (SEG // 8, 2), (SEG, 4)]
)
def test_pipelined_sequential_reads_fetch_each_segment_once_in_runs(
    length: int, outstanding: int
) -> None:
    """However the client pipelines its sequential reads, every segment's blocks are fetched
    once, from k shares, almost all in whole runs of ``batch`` segments cut at multiples of
    ``batch`` (one request per share per run)."""
    data = bytes((i * 13) % 251 for i in range(100 * SEG + 17))
    grid, cap, clock = _latency_grid(SEG, data)
    reader = FileReader(cap, grid, chunk_size=SEG, batch=8)
    assert _pipelined_download(reader, clock, len(data), length, outstanding) == data
    layout = fmt.ShareLayout(len(data), SEG, 3, 5)
    reads = _block_reads(grid, layout)
    for share in {share for share, _, _ in reads}:
        covered = sorted(
            (first, first + count) for s, first, count in reads if s == share and count
        )
        segments = [i for a, b in covered for i in range(a, b)]
        assert segments == list(range(layout.num_segments))  # each once
        assert all(a // 8 == (b - 1) // 8 for a, b in covered)  # no run crosses a multiple
    whole_runs = sum(1 for _, _, count in reads if count == 8)
    assert whole_runs >= 3 * (layout.num_segments // 8 - 2)


def test_chunks_waited_for_are_never_evicted() -> None:
    """Many reads of distinct chunks waiting at once, with a cache of one chunk: each chunk
    is fetched once (an evicted pending chunk used to be fetched again)."""
    data = bytes((i * 13) % 251 for i in range(40 * SEG))
    grid, cap, clock = _latency_grid(SEG, data)
    reader = FileReader(cap, grid, chunk_size=SEG, cached_chunks=1, readahead=0, batch=1)
    reads = [Deferred.fromCoroutine(reader.read(i * SEG, SEG)) for i in range(0, 40, 3)]
    results = gatherResults(reads)
    got: list[object] = []
    results.addBoth(got.append)
    for _ in range(10_000):
        if got:
            break
        clock.advance(0.001)
    assert got == [[data[i * SEG : (i + 1) * SEG] for i in range(0, 40, 3)]]
    layout = fmt.ShareLayout(len(data), SEG, 3, 5)
    assert sorted(first for _, first, _ in _block_reads(grid, layout)) == sorted(
        3 * list(range(0, 40, 3))
    )


class _FlakyPieces:
    """Stands in for a FileReader's ImmutableReader: its first fetch fails, later ones work."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size, self.calls = data, size, 0
        self.gate: Deferred[None] = Deferred()

    async def read_pieces(self, offset: int, length: int) -> list[bytes]:
        """The range's bytes in chunk-sized pieces, except on the first call (which fails)."""
        self.calls += 1
        if self.calls == 1:
            await self.gate
            raise NotEnoughShares("the grid is away")
        end = min(offset + length, len(self.data))
        return [self.data[at : min(at + self.size, end)] for at in range(offset, end, self.size)]


def test_a_failed_fetch_fails_its_reads_and_is_forgotten() -> None:
    """Every read waiting for a fetch that failed raises its error; the chunks are not
    remembered, so the next read of them fetches again and gets the bytes."""
    reader = FileReader(CAP, GRID, chunk_size=SEG, readahead=0)
    flaky = _FlakyPieces(DATA, SEG)
    reader._reader = flaky  # type: ignore[assignment]
    first = Deferred.fromCoroutine(reader.read(0, 10))
    second = Deferred.fromCoroutine(reader.read(5, 10))
    failures: list[Failure] = []
    first.addErrback(failures.append)
    second.addErrback(failures.append)
    flaky.gate.callback(None)
    assert [f.check(NotEnoughShares) for f in failures] == [NotEnoughShares, NotEnoughShares]
    assert run(reader.read(0, 10)) == DATA[:10]
    assert flaky.calls == 2


def test_read_ahead_starts_again_after_a_seek() -> None:
    """Sequential reads from the start, a jump back, sequential reads again: the second pass
    is read ahead in runs too (it used to fetch chunk by chunk)."""
    data = bytes((i * 13) % 251 for i in range(64 * SEG))
    grid, cap, clock = _latency_grid(SEG, data)
    reader = FileReader(cap, grid, chunk_size=SEG, cached_chunks=1, readahead=16, batch=8)
    layout = fmt.ShareLayout(len(data), SEG, 3, 5)
    for _ in range(2):
        for c in grid:
            c.requests.clear()
        assert _pipelined_download(reader, clock, 32 * SEG, SEG // 2, 1) == data[: 32 * SEG]
        assert max(count for _, _, count in _block_reads(grid, layout)) == 8


@settings(max_examples=30, deadline=None)
@given(st.integers(0, len(DATA) + 10), st.integers(0, 3 * SEG), st.sampled_from([100, 384, 1000]))
def test_chunks_of_another_size_than_segments_are_exact(
    offset: int, length: int, chunk_size: int
) -> None:
    """A chunk size that is not the file's segment size (a file written with another one)
    still gives exactly the file's bytes."""
    reader = FileReader(CAP, GRID, chunk_size=chunk_size, cached_chunks=2)
    assert run(reader.read(offset, length)) == DATA[offset : offset + length]


def test_synchronous_grid_reads_of_many_runs_do_not_recurse() -> None:
    """On a grid that answers at once (the embedded one) each fetch completes inside the
    loop that started it: one read of hundreds of runs, and sequential reads after it,
    go run after run without nesting (they used to exhaust the recursion limit)."""
    seg = 64
    grid = make_grid(5)
    data = bytes((i * 7) % 251 for i in range(3000 * seg))
    params = fmt.EncodingParams(k=3, happy=5, n=5, segment_size=seg)
    cap = run(ImmutableUploader(grid, SECRETS, params).upload(io.BytesIO(data)))
    assert isinstance(cap, ImmutableReadCap)
    assert run(FileReader(cap, grid, chunk_size=seg).read(0, len(data))) == data
    reader = FileReader(cap, grid, chunk_size=seg, readahead=64)
    step = 7 * seg + 3
    for offset in range(0, len(data), step):
        assert run(reader.read(offset, step)) == data[offset : offset + step]
