"""Concurrent reads on a fresh immutable reader (SFTP clients pipeline them) all succeed."""

from __future__ import annotations

import io

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock

from gateway.objects import immutable_format as fmt
from gateway.objects.caps import ImmutableReadCap
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.immutable import ImmutableReader
from gateway.objects.upload import ImmutableUploader
from tests.objects.grid import make_grid, run

SEG = 256
DATA = bytes((i * 31) % 251 for i in range(8 * SEG))


def test_concurrent_first_reads_share_the_only_share() -> None:
    """With one share on one server and requests taking time, reads started together on a
    new reader each get their bytes (none gives up while another is opening the share)."""
    clock = Clock()
    grid = make_grid(1, clock=clock, latency=0.01)
    params = fmt.EncodingParams(k=1, happy=1, n=1, segment_size=SEG)
    cap = run(
        ImmutableUploader(grid, GatewaySecrets(b"c" * 32, b"l" * 32), params).upload(
            io.BytesIO(DATA)
        ),
        clock,
    )
    assert isinstance(cap, ImmutableReadCap)
    reader = ImmutableReader(cap, grid)
    reads = []
    for i in range(4):
        # Each read starts while the ones before it are between locating and opening.
        reads.append(Deferred.fromCoroutine(reader.read(i * SEG, SEG)))
        clock.advance(0.011)
    everything = gatherResults(reads)
    for _ in range(1000):
        if everything.called:
            break
        clock.advance(0.01)
    results: list[object] = []
    everything.addBoth(results.append)
    assert results == [[DATA[i * SEG : (i + 1) * SEG] for i in range(4)]], results
