"""The gateway's object layer keeping its shares on unmodified Tahoe-LAFS 1.20 storage nodes.

Five ``tahoe create-node`` / ``tahoe run`` storage nodes run as processes on
loopback; the object layer in the test process talks Tahoe's HTTP storage
protocol to them (NURLs built from each node's ``node.pem`` and ``storage.furl``)
with encoding 3/5/5. Round trips: small and boundary sizes, a few MiB, random
ranges, a mutable object, a directory, a check/verify, and reads with two nodes
SIGKILLed.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet import reactor

from gateway.objects import immutable_format as fmt
from gateway.objects.caps import ImmutableReadCap
from gateway.objects.checker import check
from gateway.objects.placement import permuted_ring
from gateway.objects.repairer import repair
from gateway.objects.store import ObjectStore
from storage import wire
from tests.grid_e2e.processes import TahoeStorageNode, start_tahoe_grid, stop_all
from tests.grid_e2e.support import (
    GridTestCase,
    MiB,
    off_reactor,
    streamed_sha256,
    write_random_file,
)
from tests.storage.test_http_server import deferred_test
from tests.tahoe import REQUIRES_TAHOE

SERVERS = 5
PARAMS = fmt.EncodingParams(k=3, happy=5, n=5)
SEG = PARAMS.segment_size

pytestmark = REQUIRES_TAHOE


@pytest.fixture(scope="module")
def tahoe_grid() -> Iterator[list[TahoeStorageNode]]:
    """Five Tahoe-LAFS 1.20 storage nodes as processes; stopped by pid, directory removed."""
    root = Path(tempfile.mkdtemp(prefix="grid-e2e-tahoe-"))
    nodes: list[TahoeStorageNode] = []
    try:
        nodes = start_tahoe_grid(root, SERVERS)
        yield nodes
    finally:
        stop_all(nodes)
        shutil.rmtree(root, ignore_errors=True)


class TahoeStorageGridTests(GridTestCase):
    """Our immutable, mutable and directory objects on Tahoe-LAFS 1.20 storage servers."""

    timeout = 300
    params = PARAMS

    @pytest.fixture(autouse=True)
    def _use_grid(self, tahoe_grid: list[TahoeStorageNode]) -> None:
        self.nodes = tahoe_grid

    @deferred_test
    async def test_versions(self) -> None:
        """Every server answers as Tahoe-LAFS 1.20 over HTTPS."""
        for client in self.clients():
            version = await client.get_version()
            assert version.application_version.startswith(b"tahoe-lafs/1.20"), version

    @deferred_test
    async def test_immutable_sizes(self) -> None:
        """0 B, 1 B, 55/56 B, segment boundaries ±1 and a few MiB round-trip byte for byte."""
        store = self.store()
        sizes = [0, 1, fmt.LITERAL_THRESHOLD, fmt.LITERAL_THRESHOLD + 1, 4096]
        sizes += [SEG - 1, SEG, SEG + 1, 2 * SEG + 1, 3 * MiB + 17]
        for size in sizes:
            await self.round_trip(store, os.urandom(size))

    @deferred_test
    async def test_streamed_file_and_ranges(self) -> None:
        """A 20 MiB file streamed from disk, hashed back; then random ranges of it."""
        path = Path(tempfile.mkdtemp(prefix="grid-e2e-tahoe-file-")) / "f"
        self.addCleanup(shutil.rmtree, path.parent, True)
        size = 20 * MiB + 1
        expected = write_random_file(path, size)
        store = self.store()
        with open(path, "rb") as f:
            cap = await store.upload(f)
        assert await streamed_sha256(store, cap) == (expected, size)
        data = path.read_bytes()
        rng = random.Random(7)
        reader = store.reader(cap)
        for _ in range(20):
            offset = rng.randrange(size + 10)
            length = rng.choice([1, 1000, SEG + 3, 3 * SEG])
            assert await reader.read(offset, length) == data[offset : offset + length]

    @deferred_test
    async def test_reupload_and_check(self) -> None:
        """A second upload of the same file finds its shares (leases renewed); check/verify."""
        store = self.store()
        data = os.urandom(SEG * 2 + 5)
        cap = await store.upload(io.BytesIO(data))
        assert isinstance(cap, ImmutableReadCap)
        assert await store.upload(io.BytesIO(data)) == cap
        for verify in (False, True):
            result = await check(cap, store.servers, verify=verify, happy=PARAMS.happy)
            assert result.healthy, result.summary()

    @deferred_test
    async def test_mutable_round_trip(self) -> None:
        """A mutable object: create, read, overwrite (1 MiB), empty, modify; healthy."""
        store = self.store()
        cap = await self.mutable_round_trip(store)
        result = await check(cap, store.servers, verify=True, happy=PARAMS.happy)
        assert result.healthy, result.summary()

    @deferred_test
    async def test_directory_round_trip(self) -> None:
        """A directory with a file, a subdirectory and a symlink, reopened from its cap."""
        await self.directory_round_trip(self.store())

    @deferred_test
    async def test_two_nodes_killed(self) -> None:
        """SIGKILL two Tahoe nodes: files, a mutable and a directory stay readable."""
        store = self.store()
        data = os.urandom(SEG * 3 + 11)
        cap = await store.upload(io.BytesIO(data))
        mutable_data = os.urandom(10_000)
        mutable_cap = await store.mutable_client().create(mutable_data)
        directory = await store.create_directory()
        await directory.add("f", cap)
        victims = list(self.nodes[3:5])
        try:
            for node in victims:
                node.kill()
            servers = self.clients()  # the dead ones included: they fail fast
            after = ObjectStore(lambda: servers, store.secrets, PARAMS, reactor)
            assert await after.reader(cap).read(0, len(data)) == data
            assert await after.read_mutable(mutable_cap.get_read_cap()) == mutable_data
            listed = await after.directory(directory.cap.get_read_cap().to_string()).list()
            assert set(listed) == {"f"}
        finally:
            for node in victims:
                if node.pid is None:
                    await off_reactor(node.start)

    @deferred_test
    async def test_large_mutable_and_directory(self) -> None:
        """An 8 MiB mutable object and a directory of 1000 entries (one publish)."""
        store = self.store()
        client = store.mutable_client()
        big = os.urandom(8 * MiB + 3)
        cap = await client.create(big)
        assert await store.read_mutable(cap.get_read_cap()) == big
        _, version = await client.read(cap)
        await client.write(cap, big[::-1], version)
        assert await store.read_mutable(cap) == big[::-1]
        file_cap = await store.upload(io.BytesIO(os.urandom(100)))
        directory = await store.create_directory()
        await directory.add_many({f"entry-{i:04d}": (file_cap, None) for i in range(1000)})
        again = store.directory(directory.cap.to_string())
        assert len(await again.list()) == 1000

    @deferred_test
    async def test_flipped_share_bytes_read_and_repair(self) -> None:
        """Flip bytes in one share file of a Tahoe node: reads correct, repair heals."""
        store = self.store()
        data = os.urandom(4 * SEG + 99)
        cap = await store.upload(io.BytesIO(data))
        assert isinstance(cap, ImmutableReadCap)
        si = wire.si_b2a(cap.storage_index)
        by_id = {wire.parse_nurl(node.nurl).spki_digest: node for node in self.nodes}
        node = by_id[permuted_ring(store.servers, cap.storage_index)[0].server_id]
        files = sorted((node.shares_dir / si[:2] / si).iterdir())
        assert len(files) == 1
        size = files[0].stat().st_size
        with open(files[0], "r+b") as f:  # Tahoe's container: 12-byte header, share, leases
            for where in (size // 3, size // 2):
                f.seek(where)
                byte = f.read(1)
                f.seek(where)
                f.write(bytes([byte[0] ^ 0x55]))
        assert await store.reader(cap).read(0, len(data)) == data
        before = await check(cap, store.servers, verify=True, happy=PARAMS.happy)
        assert len(before.corrupt_shares) == 1 and not before.healthy, before.summary()
        result = await repair(cap, store.servers, store.secrets, PARAMS)
        assert result.ok, result.after.summary()
        after = await check(cap, store.servers, verify=True, happy=PARAMS.happy)
        assert after.healthy, after.summary()
