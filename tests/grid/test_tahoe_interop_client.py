"""Our HTTPS storage client against an unmodified Tahoe-LAFS 1.20 storage node.

The node is created and run from ``/work/main/.venv-tahoe`` (install with
``python3 -m venv .venv-tahoe && .venv-tahoe/bin/pip install tahoe-lafs==1.20.0``).
Tahoe 1.20 serves HTTP storage on its Foolscap port (one TLS listener switches
protocols) with the Foolscap certificate (``private/node.pem``) and the swissnum
of ``private/storage.furl``; it writes no NURL file, so the test builds the NURL
from those two the way Tahoe's ``build_nurl`` does.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from gateway.grid.http_client import HttpStorageClient
from gateway.grid.interfaces import ServerUnavailable
from storage import wire
from storage.errors import ConflictingWrite, NoSuchShare, NoSuchUpload, NotAuthorized
from storage.interfaces import ByteRange, ReadVector, WriteVector
from storage.interfaces import TestVector as TVector
from storage.interfaces import TestWriteVectors as TWVectors
from storage.tls import generate_tls_credentials, load_tls_credentials
from tests.storage.test_http_server import deferred_test

TAHOE = Path(__file__).resolve().parents[2] / ".venv-tahoe" / "bin" / "tahoe"
RENEW, CANCEL, UPLOAD, WE = b"r" * 32, b"c" * 32, b"u" * 32, b"w" * 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tahoe_nurl(node_dir: Path, port: int) -> str:
    """The HTTP storage NURL of a Tahoe 1.20 node: pin of node.pem, swissnum of storage.furl."""
    pem = (node_dir / "private" / "node.pem").read_bytes()
    furl = (node_dir / "private" / "storage.furl").read_text().strip()
    swissnum = furl.rsplit("/", 1)[1].encode("ascii")
    spki_hash = load_tls_credentials(pem, pem).spki_hash
    return wire.format_nurl(spki_hash, "127.0.0.1", port, swissnum)


class TahoeNode:
    """A Tahoe-LAFS 1.20 storage node in a temporary directory, run as a child process."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tahoe-interop-"))
        self.node_dir = self.root / "node"
        self.port = _free_port()
        subprocess.run(
            [
                str(TAHOE), "create-node",
                f"--port=tcp:{self.port}:interface=127.0.0.1",
                f"--location=tcp:127.0.0.1:{self.port}",
                "--webport=none", "--nickname=interop", str(self.node_dir),
            ],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        config = self.node_dir / "tahoe.cfg"
        config.write_text(config.read_text().replace("reserved_space = 1G", "reserved_space = 0"))
        self.log = open(self.root / "run.log", "wb")
        self.process = subprocess.Popen(
            [str(TAHOE), "run", "--allow-stdin-close", str(self.node_dir)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self._wait_until_listening()
        self.nurl = tahoe_nurl(self.node_dir, self.port)

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + 90
        furl = self.node_dir / "private" / "storage.furl"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tahoe run exited; see {self.root / 'run.log'}")
            if furl.exists():
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    pass
            time.sleep(0.2)
        raise RuntimeError("Tahoe node did not start listening in time")

    def stop(self) -> None:
        """Stop the child process (by its pid) and remove the directory."""
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.mark.tahoe
@pytest.mark.skipif(
    not os.access(TAHOE, os.X_OK),
    reason="needs Tahoe-LAFS 1.20: python3 -m venv /work/main/.venv-tahoe && "
    "/work/main/.venv-tahoe/bin/pip install tahoe-lafs==1.20.0",
)
class TahoeInteropClientTests(TestCase):
    """Every IStorageClient operation against a real Tahoe-LAFS 1.20 storage server."""

    timeout = 120
    node: TahoeNode

    @classmethod
    def setUpClass(cls) -> None:
        cls.node = TahoeNode()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.node.stop()

    def _client(self, nurl: str | None = None) -> HttpStorageClient:
        client = HttpStorageClient.from_nurl(reactor, nurl or self.node.nurl, timeout=30)
        self.addCleanup(lambda: Deferred.fromCoroutine(client.close()))
        return client

    @deferred_test
    async def test_version(self) -> None:
        """Tahoe's version answer decodes (byte-string keys) and names Tahoe 1.20."""
        info = await self._client().get_version()
        assert info.application_version.startswith(b"tahoe-lafs/1.20")
        assert info.available_space > 0 and info.maximum_immutable_share_size > 0

    @deferred_test
    async def test_immutable(self) -> None:
        """Allocate, write in chunks, list, read ranges, conflicts, abort, leases, advice."""
        client = self._client()
        si = os.urandom(16)
        data = bytes(range(256)) * 4
        result = await client.allocate_buckets(
            si, frozenset({0, 1}), len(data), UPLOAD, RENEW, CANCEL
        )
        assert result.allocated == frozenset({0, 1}) and result.already_have == frozenset()
        first = await client.write_immutable(si, 0, UPLOAD, 0, data[:300])
        assert not first.finished and first.required == (ByteRange(300, len(data)),)
        with self.assertRaises(ConflictingWrite):
            await client.write_immutable(si, 0, UPLOAD, 0, b"\xff" * 10)
        with self.assertRaises(NotAuthorized):
            await client.write_immutable(si, 0, b"v" * 32, 300, data[300:])
        assert (await client.write_immutable(si, 0, UPLOAD, 300, data[300:])).finished
        await client.write_immutable(si, 1, UPLOAD, 0, data[:10])
        assert await client.list_immutable(si) == frozenset({0})
        assert await client.read_immutable(si, 0, 0, len(data)) == data
        assert await client.read_immutable(si, 0, 1000, 100) == data[1000:]
        assert await client.read_immutable(si, 0, len(data), 10) == b""
        with self.assertRaises(NoSuchShare):
            await client.read_immutable(si, 1, 0, 10)
        again = await client.allocate_buckets(
            si, frozenset({0, 2}), len(data), UPLOAD, RENEW, CANCEL
        )
        assert again.already_have == frozenset({0})
        await client.abort_immutable(si, 1, UPLOAD)
        with self.assertRaises((NoSuchShare, NoSuchUpload)):  # Tahoe answers 404 here
            await client.abort_immutable(si, 1, UPLOAD)
        with self.assertRaises(NoSuchUpload):  # a complete share cannot be aborted: 405
            await client.abort_immutable(si, 0, UPLOAD)
        await client.add_or_renew_lease(si, RENEW, CANCEL)
        await client.add_or_renew_lease(si, b"R" * 32, b"C" * 32)
        with self.assertRaises(NoSuchShare):
            await client.add_or_renew_lease(os.urandom(16), RENEW, CANCEL)
        await client.advise_corrupt_immutable(si, 0, "interop test: not really corrupt")

    @deferred_test
    async def test_mutable(self) -> None:
        """Read-test-write create/test/update/truncate, reads, listing, wrong write enabler."""
        client = self._client()
        si = os.urandom(16)
        create = {
            0: TWVectors(test=(TVector(0, 1, b""),), write=(WriteVector(0, b"first version"),)),
            5: TWVectors(write=(WriteVector(0, b"other share"),)),
        }
        result = await client.read_test_write(si, WE, RENEW, CANCEL, create, (ReadVector(0, 5),))
        assert result.success
        result = await client.read_test_write(si, WE, RENEW, CANCEL, create, (ReadVector(0, 5),))
        assert not result.success and result.reads == {0: [b"first"], 5: [b"other"]}
        update = {
            0: TWVectors(
                test=(TVector(0, 5, b"first"),), write=(WriteVector(6, b"v2"),), new_length=8
            )
        }
        assert (await client.read_test_write(si, WE, RENEW, CANCEL, update, ())).success
        assert await client.read_mutable(si, 0, 0, 100) == b"first v2"
        assert await client.read_mutable(si, 5, 6, 5) == b"share"
        assert await client.read_mutable(si, 0, 8, 5) == b""
        assert await client.list_mutable(si) == frozenset({0, 5})
        with self.assertRaises(NotAuthorized):
            await client.read_test_write(si, b"W" * 32, RENEW, CANCEL, update, ())
        with self.assertRaises(NoSuchShare):
            await client.read_mutable(si, 3, 0, 5)
        await client.add_or_renew_lease(si, RENEW, CANCEL)
        await client.advise_corrupt_mutable(si, 5, "interop test: not really corrupt")

    @deferred_test
    async def test_wrong_credentials(self) -> None:
        """A wrong swissnum is NotAuthorized; a wrong pin never gets through TLS."""
        nurl = wire.parse_nurl(self.node.nurl)
        bad_swissnum = wire.format_nurl(nurl.spki_hash, nurl.host, nurl.port, b"wrong")
        with self.assertRaises(NotAuthorized):
            await self._client(bad_swissnum).get_version()
        other_pin = generate_tls_credentials().spki_hash
        bad_pin = wire.format_nurl(other_pin, nurl.host, nurl.port, nurl.swissnum)
        with self.assertRaises(ServerUnavailable):
            await self._client(bad_pin).get_version()
