"""The object store's file reader: segment-aligned chunk cache, shared fetches, exact bytes."""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.objects import immutable_format as fmt
from gateway.objects.caps import ImmutableReadCap
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.immutable import ImmutableUploader
from gateway.objects.store import FileReader
from tests.objects.grid import make_grid, run

SEG = 256
PARAMS = fmt.EncodingParams(k=2, happy=3, n=3, segment_size=SEG)
SECRETS = GatewaySecrets(convergence=b"c" * 32, lease=b"l" * 32)
DATA = bytes((i * 13) % 251 for i in range(10 * SEG + 17))


def _uploaded() -> tuple[list, ImmutableReadCap]:  # type: ignore[type-arg]
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
