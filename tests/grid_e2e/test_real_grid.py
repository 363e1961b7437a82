"""The object layer on a real grid: five of OUR storage nodes as processes, HTTPS, 3-of-5.

A module-scoped fixture runs ``gateway create-storage`` / ``gateway start`` five
times (NURL = last line of the create output); each test builds the object
layer in the test process on :class:`HttpStorageClient` connections to those
NURLs, with encoding 3/5/5 (k=3, happy=5, n=5). The Twisted reactor runs for
each test through trial's :class:`TestCase` (pytest runs it).

Covered: byte-exact round trips at 0 B, 1 B, the literal threshold (55/56 B),
segment boundaries ±1, a few MiB and (marked slow, still in the suite) 200 MiB
streamed from a file with bounded memory; Hypothesis sizes around segment
boundaries; random byte ranges; two of five servers SIGKILLed; a flipped byte
in one share on disk (reads still correct, verify finds it, repair restores
health); mutable objects and directories.
"""

from __future__ import annotations

import io
import os
import random
import resource
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor

from gateway.objects import immutable_format as fmt
from gateway.objects.caps import ImmutableReadCap, LiteralCap
from gateway.objects.checker import ShareStatus, check
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.placement import permuted_ring
from gateway.objects.repairer import repair
from gateway.objects.store import ObjectStore
from gateway.objects.upload import ImmutableUploader
from storage import wire
from tests.grid_e2e.processes import OurStorageNode, StorageNode, start_our_grid, stop_all
from tests.grid_e2e.support import (
    GridTestCase,
    MiB,
    in_reactor,
    off_reactor,
    streamed_sha256,
    write_random_file,
)
from tests.storage.test_http_server import deferred_test

SERVERS = 5
PARAMS = fmt.EncodingParams(k=3, happy=5, n=5)
SEG = PARAMS.segment_size


@pytest.fixture(scope="module")
def our_grid() -> Iterator[list[OurStorageNode]]:
    """Five of our storage nodes running as processes; stopped by pid, directory removed."""
    root = Path(tempfile.mkdtemp(prefix="grid-e2e-ours-"))
    nodes: list[OurStorageNode] = []
    try:
        nodes = start_our_grid(root, SERVERS)
        yield nodes
    finally:
        stop_all(nodes)
        shutil.rmtree(root, ignore_errors=True)


def share_files(node: StorageNode, cap: ImmutableReadCap) -> dict[int, Path]:
    """The complete share files one node holds for ``cap``: ``{share number: path}``."""
    si = wire.si_b2a(cap.storage_index)
    folder = node.shares_dir / si[:2] / si
    if not folder.is_dir():
        return {}
    return {int(p.name): p for p in folder.iterdir() if p.name.isdigit()}


class RealGridTests(GridTestCase):
    """Immutable, mutable and directory objects on five storage node processes."""

    timeout = 300
    params = PARAMS

    @pytest.fixture(autouse=True)
    def _use_grid(self, our_grid: list[OurStorageNode]) -> None:
        self.nodes = our_grid

    @deferred_test
    async def test_small_and_boundary_sizes(self) -> None:
        """0 B, 1 B, 55/56 B (literal threshold), segment boundaries ±1, k-alignment."""
        store = self.store()
        threshold = fmt.LITERAL_THRESHOLD
        sizes = [0, 1, threshold, threshold + 1, 1000]
        for m in (1, 2, 3):
            sizes += [m * SEG - 1, m * SEG, m * SEG + 1]
        sizes += [SEG - 16, SEG - 17, SEG - 18]  # ciphertext (plaintext + 16-byte tag) vs k=3
        for size in sizes:
            cap = await self.round_trip(store, os.urandom(size))
            assert isinstance(cap, LiteralCap) == (size <= threshold), size
        assert isinstance(await self.round_trip(store, b"x" * 56), ImmutableReadCap)

    @deferred_test
    async def test_a_few_mib(self) -> None:
        """A few MiB, not a multiple of anything, byte-exact; a second upload converges."""
        store = self.store()
        data = os.urandom(5 * MiB + 12345)
        cap = await self.round_trip(store, data)
        assert await store.upload(io.BytesIO(data)) == cap  # convergent: same cap, already there

    @pytest.mark.slow
    @deferred_test
    async def test_200_mib_streamed(self) -> None:
        """200 MiB streamed from a file and read back a segment at a time; memory stays bounded."""
        size = 200 * MiB + 3
        path = Path(tempfile.mkdtemp(prefix="grid-e2e-big-")) / "big"
        self.addCleanup(shutil.rmtree, path.parent, True)
        expected = write_random_file(path, size)
        store = self.store()
        peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
        with open(path, "rb") as f:
            cap = await store.upload(f)
        assert cap.size == size
        assert await streamed_sha256(store, cap) == (expected, size)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
        assert grown < 100 * 1024, f"peak RSS grew by {grown} KiB for a 200 MiB file"

    @deferred_test
    async def test_sizes_around_segment_boundaries(self) -> None:
        """Hypothesis: sizes m·segment ± a few bytes, for two segment sizes, round-trip exactly."""
        servers = self.clients()
        secrets = GatewaySecrets.generate()

        @settings(
            max_examples=12,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(
            segment_size=st.sampled_from([4096, 65536 + 1]),
            segments=st.integers(0, 4),
            delta=st.integers(-3, 3),
            seed=st.integers(0, 2**32 - 1),
        )
        def round_trip(segment_size: int, segments: int, delta: int, seed: int) -> None:
            size = max(0, segments * segment_size + delta)
            data = random.Random(seed).randbytes(size)
            params = fmt.EncodingParams(k=3, happy=5, n=5, segment_size=segment_size)
            store = ObjectStore(lambda: servers, secrets, params, reactor)

            async def go() -> bytes:
                cap = await ImmutableUploader(servers, secrets, params).upload_bytes(data)
                return await store.reader(cap).read(0, size)

            assert in_reactor(go) == data

        await off_reactor(round_trip)

    @deferred_test
    async def test_random_ranges(self) -> None:
        """Random ranges (within, across segments, past the end, empty) match the source."""
        store = self.store()
        data = os.urandom(3 * SEG + 777)
        cap = await store.upload(io.BytesIO(data))
        reader = store.reader(cap)
        rng = random.Random(1234)
        ranges = [(0, 0), (len(data), 10), (len(data) - 1, 5), (SEG - 3, 6), (0, len(data))]
        for _ in range(40):
            offset = rng.randrange(len(data) + 100)
            ranges.append((offset, rng.choice([1, 17, 4096, SEG, 2 * SEG + 5, 10**6])))
        for offset, length in ranges:
            got = await reader.read(offset, length)
            assert got == data[offset : offset + length], (offset, length)

    @deferred_test
    async def test_two_servers_killed(self) -> None:
        """SIGKILL two of five servers by pid: every file, mutable and directory stays readable."""
        store = self.store()
        files = {size: os.urandom(size) for size in (56, SEG + 1, 2 * MiB + 5)}
        caps = {size: await store.upload(io.BytesIO(data)) for size, data in files.items()}
        mutable_data = os.urandom(50_000)
        mutable_cap = await store.mutable_client().create(mutable_data)
        directory = await store.create_directory()
        await directory.add("f", caps[SEG + 1])
        victims = list(self.nodes[1:3])
        try:
            for node in victims:
                node.kill()
            survivors = self.clients([n for n in self.nodes if n not in victims])
            after = ObjectStore(lambda: survivors, store.secrets, store.params, reactor)
            for size, data in files.items():
                assert await after.reader(caps[size]).read(0, size) == data, size
            assert await after.read_mutable(mutable_cap.get_read_cap()) == mutable_data
            listed = await after.directory(directory.cap.to_string()).list()
            assert listed["f"].cap == caps[SEG + 1]
            # Reading with the dead servers still configured also works (they fail fast).
            dead_too = self.store(secrets=store.secrets)
            for size, data in files.items():
                assert await dead_too.reader(caps[size]).read(0, size) == data, size
        finally:
            for node in victims:  # the grid is shared by the module's other tests
                if node.pid is None:
                    await off_reactor(node.start)

    @deferred_test
    async def test_flipped_share_bytes_read_and_repair(self) -> None:
        """Flip bytes of one share on disk: reads stay correct, verify sees it, repair heals."""
        store = self.store()
        data = os.urandom(4 * SEG + 99)
        cap = await store.upload(io.BytesIO(data))
        assert isinstance(cap, ImmutableReadCap)
        located = {node: share_files(node, cap) for node in self.nodes}
        assert sum(len(files) for files in located.values()) == PARAMS.n
        # Corrupt the share a reader opens first: the one on the first server in ring order.
        by_id = {wire.parse_nurl(node.nurl).spki_digest: node for node in self.nodes}
        node = by_id[permuted_ring(store.servers, cap.storage_index)[0].server_id]
        number, path = sorted(located[node].items())[0]
        layout = fmt.ShareLayout(cap.size, SEG, cap.k, cap.n)
        with open(path, "r+b") as f:  # one byte in the block of segment 1, one in segment 3
            for segment in (1, 3):
                f.seek(layout.block_offset(segment) + 10)
                byte = f.read(1)
                f.seek(-1, os.SEEK_CUR)
                f.write(bytes([byte[0] ^ 0xFF]))

        servers = store.servers
        assert await store.reader(cap).read(0, len(data)) == data
        advisories = node.node_dir / "storage" / "corruption-advisories.log"
        assert wire.si_b2a(cap.storage_index) in advisories.read_text(), "no corruption advice"
        for offset in (SEG + 5, 3 * SEG):
            assert await store.reader(cap).read(offset, 100) == data[offset : offset + 100]

        before = await check(cap, servers, verify=True, happy=PARAMS.happy)
        assert not before.healthy and before.recoverable
        assert [(r.share_number, r.status) for r in before.corrupt_shares] == [
            (number, ShareStatus.CORRUPT)
        ]
        result = await repair(cap, servers, store.secrets, PARAMS)
        assert result.attempted and result.ok, result.after.summary()
        after = await check(cap, servers, verify=True, happy=PARAMS.happy)
        assert after.healthy, after.summary()
        assert after.good_share_numbers == frozenset(range(PARAMS.n))
        assert after.happiness >= PARAMS.happy
        assert await self.store(secrets=store.secrets).reader(cap).read(0, len(data)) == data

    @deferred_test
    async def test_mutable_round_trip(self) -> None:
        """A mutable object: create, read (write and read cap), overwrite, empty, modify."""
        store = self.store()
        cap = await self.mutable_round_trip(store)
        result = await check(cap, store.servers, verify=True, happy=PARAMS.happy)
        assert result.healthy, result.summary()

    @deferred_test
    async def test_directory_round_trip(self) -> None:
        """A directory with a file, a subdirectory and a symlink, reopened from its cap."""
        await self.directory_round_trip(self.store())
