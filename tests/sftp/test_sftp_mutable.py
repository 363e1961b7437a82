"""A file that already is a mutable object keeps its capability when written over SFTP."""

from __future__ import annotations

import json
import time
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from gateway.grid.http_client import HttpStorageClient
from gateway.objects.caps import MutableWriteCap
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.dirnode import EntryMetadata
from gateway.objects.immutable_format import EncodingParams
from gateway.objects.store import ObjectStore
from tests.nodes import NodeReaper, gateway
from tests.sftp.gateway_node import RunningGateway, start_gateway


class MutableFileTests(TestCase):
    """A gateway on one storage-node process; the test links a mutable file into the root."""

    def setUp(self) -> None:
        reaper = NodeReaper()
        self.addCleanup(reaper.reap)
        base = Path(self.mktemp()).absolute()
        base.mkdir(parents=True)
        storage = reaper.track(base / "storage")
        created = gateway("create-storage", storage, "--reserved-space", "1M")
        assert created.code == 0, created.err
        self.nurl = created.out.strip().splitlines()[-1]
        assert gateway("start", storage).code == 0
        self.gw: RunningGateway = start_gateway(
            base, reaper, "--storage", self.nurl, "--shares", "1/1/1"
        )

    async def test_writing_a_mutable_file_publishes_a_new_version(self) -> None:
        """SFTP writes to a mutable file become its next version under the same capability."""
        transport, sftp = self.gw.sftp()
        try:
            assert sftp.listdir("/") == []  # the gateway creates the account's root
        finally:
            transport.close()
        accounts = json.loads((self.gw.node_dir / "private" / "accounts.json").read_text())
        root_cap = accounts["accounts"]["alice"]["root_cap"]
        client = HttpStorageClient.from_nurl(reactor, self.nurl)
        self.addCleanup(lambda: Deferred.fromCoroutine(client.close()))
        store = ObjectStore(
            lambda: [client], GatewaySecrets.generate(), EncodingParams(1, 1, 1), reactor
        )
        writer = await store.mutable_client().create(b"version one")
        root = store.directory(root_cap)
        now = time.time()
        await root.add("notes.txt", writer, EntryMetadata(kind="file", mtime=now, ctime=now))

        transport, sftp = self.gw.sftp()
        try:
            deadline = time.monotonic() + 30
            while "notes.txt" not in sftp.listdir("/"):  # the gateway caches listings briefly
                assert time.monotonic() < deadline, "the linked file never appeared"
                time.sleep(0.1)
            with sftp.open("/notes.txt", "r+") as f:
                assert f.read() == b"version one"
                f.seek(0)
                f.write(b"version two, longer")
        finally:
            transport.close()

        deadline = time.monotonic() + 30
        while (await store.read_mutable(writer)) != b"version two, longer":
            assert time.monotonic() < deadline, "the new version was never published"
        entry = await root.get("notes.txt")
        assert isinstance(entry.cap, MutableWriteCap)
        assert entry.cap == writer
        _, version = await store.mutable_client().read(writer)
        assert version.seqnum == 2
