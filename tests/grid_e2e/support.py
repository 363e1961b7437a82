"""Shared by the end-to-end grid tests: HTTPS clients for a grid, stores, streaming I/O."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.trial.unittest import TestCase

from gateway.grid.http_client import HttpStorageClient
from gateway.grid.interfaces import IStorageClient
from gateway.objects.caps import ImmutableCap, ImmutableReadCap, MutableWriteCap
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.immutable import ImmutableReader
from gateway.objects.immutable_format import EncodingParams
from gateway.objects.store import ObjectStore
from tests.grid_e2e.processes import StorageNode

T = TypeVar("T")
MiB = 2**20


def write_random_file(path: Path, size: int, chunk: int = 4 * MiB) -> str:
    """Fill ``path`` with ``size`` random bytes, a chunk at a time; its SHA-256 (hex)."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            piece = os.urandom(min(chunk, left))
            digest.update(piece)
            f.write(piece)
            left -= len(piece)
    return digest.hexdigest()


async def streamed_sha256(store: ObjectStore, cap: ImmutableCap) -> tuple[str, int]:
    """Read a whole immutable file a segment at a time; its SHA-256 (hex) and length."""
    digest = hashlib.sha256()
    if not isinstance(cap, ImmutableReadCap):  # a literal cap: the data is in the cap
        digest.update(cap.data)
        return digest.hexdigest(), len(cap.data)
    total = 0
    async for piece in ImmutableReader(cap, store.servers).iter_range(0, cap.size):
        digest.update(piece)
        total += len(piece)
    return digest.hexdigest(), total


def _closer(client: HttpStorageClient) -> Callable[[], Deferred[None]]:
    return lambda: Deferred.fromCoroutine(client.close())


class GridTestCase(TestCase):
    """A trial test case whose tests talk HTTPS to a grid of storage node processes."""

    nodes: Sequence[StorageNode]
    params: EncodingParams

    def clients(self, nodes: Sequence[StorageNode] | None = None) -> list[IStorageClient]:
        """Fresh HTTPS clients for ``nodes`` (default: all), closed when the test ends."""
        out: list[IStorageClient] = []
        for node in self.nodes if nodes is None else nodes:
            client = HttpStorageClient.from_nurl(reactor, node.nurl, timeout=30)
            self.addCleanup(_closer(client))
            out.append(client)
        return out

    def store(
        self,
        servers: Sequence[IStorageClient] | None = None,
        secrets: GatewaySecrets | None = None,
    ) -> ObjectStore:
        """An object store on ``servers`` (default: clients for every node)."""
        chosen = list(self.clients() if servers is None else servers)
        return ObjectStore(
            lambda: chosen, secrets or GatewaySecrets.generate(), self.params, reactor
        )

    async def round_trip(self, store: ObjectStore, data: bytes) -> ImmutableCap:
        """Upload ``data``, read it back whole and check it byte for byte."""
        import io

        cap = await store.upload(io.BytesIO(data))
        assert cap.size == len(data)
        got = await store.reader(cap).read(0, len(data) + 10)
        assert got == data, f"{len(data)}-byte round trip differs"
        return cap

    async def mutable_round_trip(self, store: ObjectStore) -> MutableWriteCap:
        """Create a mutable object, overwrite it twice (growing, then empty), read each back."""
        client = store.mutable_client()
        first = os.urandom(3000)
        cap = await client.create(first)
        assert await store.read_mutable(cap) == first
        assert await store.read_mutable(cap.get_read_cap()) == first
        _, version = await client.read(cap)
        second = os.urandom(MiB + 7)
        version = await client.write(cap, second, version)
        assert await store.read_mutable(cap.get_read_cap()) == second
        await client.write(cap, b"", version)
        assert await store.read_mutable(cap) == b""
        await client.modify(cap, lambda old: old + b"appended")
        assert await store.read_mutable(cap) == b"appended"
        return cap

    async def directory_round_trip(self, store: ObjectStore) -> str:
        """A directory with a file, a subdirectory and a symlink, reopened from its cap string."""
        import io

        data = os.urandom(200_000)
        file_cap = await store.upload(io.BytesIO(data))
        root = await store.create_directory()
        await root.add("Datei-a\u0308.bin", file_cap)  # decomposed; stored NFC
        sub = await root.mkdir("sub")
        await sub.add("tiny", await store.upload(io.BytesIO(b"tiny")))
        from gateway.objects.dirnode import EntryMetadata

        await root.add("link", None, EntryMetadata.symlink_to("sub/tiny", 1.0))
        cap_text = root.cap.to_string()

        again = ObjectStore(lambda: store.servers, store.secrets, store.params, reactor)
        reopened = again.directory(cap_text)
        entries = await reopened.list()
        assert set(entries) == {"Datei-\u00e4.bin", "sub", "link"}
        entry = entries["Datei-\u00e4.bin"]
        assert entry.kind == "file" and entry.cap is not None
        assert await again.reader(entry.cap).read(0, len(data)) == data  # type: ignore[arg-type]
        assert entries["link"].metadata.symlink == "sub/tiny"
        child = await reopened.child("sub")
        tiny = (await child.get("tiny")).cap
        assert await again.reader(tiny).read(0, 100) == b"tiny"  # type: ignore[arg-type]
        read_only = again.directory(root.cap.get_read_cap().to_string())
        assert set(await read_only.list()) == set(entries)
        return cap_text


def in_reactor(coroutine: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """From a non-reactor thread: run a coroutine in the reactor and wait for its result."""
    call: Callable[[], Any] = lambda: Deferred.fromCoroutine(coroutine())  # noqa: E731
    return cast(T, blockingCallFromThread(cast(Any, reactor), call))


def off_reactor(function: Callable[[], None]) -> Awaitable[None]:
    """Run a blocking function (e.g. a Hypothesis test using :func:`in_reactor`) in a thread."""
    return deferToThread(function)
