"""Tahoe-LAFS 1.20's own HTTP storage client library against our server, over loopback TLS.

A script run by ``/work/main/.venv-tahoe/bin/python`` drives
``allmydata.storage.http_client`` (the code a Tahoe client node uses) through
every endpoint of our server, which runs in this test's reactor.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.storage.test_http_server import LiveStorage, deferred_test

TAHOE_PYTHON = Path(__file__).resolve().parents[2] / ".venv-tahoe" / "bin" / "python"

TAHOE_CLIENT_SCRIPT = r"""
import sys, os
from twisted.internet.task import react
from twisted.internet.defer import ensureDeferred
from hyperlink import DecodedURL
from allmydata.storage.http_client import (
    StorageClientFactory, StorageClientGeneral, StorageClientImmutables,
    StorageClientMutables, TestWriteVectors, WriteVector, TestVector, ReadVector, ClientException,
)

async def main(reactor, nurl):
    factory = StorageClientFactory({"tcp": "tcp"}, None)
    client = await factory.create_storage_client(DecodedURL.from_text(nurl), reactor)
    try:
        general = StorageClientGeneral(client)
        v = await general.get_version()
        print("version", v[b"application-version"])
        imm = StorageClientImmutables(client)
        si = os.urandom(16)
        up, rn, cn = b"u" * 32, b"r" * 32, b"c" * 32
        r = await imm.create(si, {0, 1}, 20, up, rn, cn)
        assert r.allocated == {0, 1}, r
        p = await imm.write_share_chunk(si, 0, up, 0, b"0123456789")
        assert not p.finished
        p = await imm.write_share_chunk(si, 0, up, 10, b"abcdefghij")
        assert p.finished
        assert await imm.list_shares(si) == {0}
        assert await imm.read_share_chunk(si, 0, 5, 10) == b"56789abcde"
        assert await imm.read_share_chunk(si, 0, 15, 100) == b"fghij"
        assert await imm.read_share_chunk(si, 0, 20, 5) == b""
        await imm.abort_upload(si, 1, up)
        await imm.advise_corrupt_share(si, 0, "test")
        await general.add_or_renew_lease(si, rn, cn)
        try:
            await imm.read_share_chunk(si, 1, 0, 5)
            raise AssertionError("expected 404")
        except ClientException as e:
            assert e.code == 404, e.code
        mut = StorageClientMutables(client)
        msi = os.urandom(16)
        we = b"w" * 32
        res = await mut.read_test_write_chunks(msi, we, rn, cn, {
            3: TestWriteVectors(
                test_vectors=[TestVector(0, 1, b"")],
                write_vectors=[WriteVector(0, b"mutable data")],
                new_length=None,
            )
        }, [ReadVector(0, 7)])
        assert res.success, res
        res = await mut.read_test_write_chunks(msi, we, rn, cn, {
            3: TestWriteVectors(
                test_vectors=[TestVector(0, 1, b"")], write_vectors=[], new_length=None
            )
        }, [ReadVector(0, 7)])
        assert not res.success and res.reads == {3: [b"mutable"]}, res
        assert await mut.read_share_chunk(msi, 3, 8, 100) == b"data"
        assert await mut.list_shares(msi) == {3}
        await mut.advise_corrupt_share(msi, 3, "test")
        print("ALL OK")
    finally:
        await client.shutdown()

react(lambda r: ensureDeferred(main(r, sys.argv[1])))
"""


@pytest.mark.tahoe
@pytest.mark.skipif(
    not os.access(TAHOE_PYTHON, os.X_OK),
    reason="needs Tahoe-LAFS 1.20: python3 -m venv /work/main/.venv-tahoe && "
    "/work/main/.venv-tahoe/bin/pip install tahoe-lafs==1.20.0",
)
class TahoeClientAgainstOurServerTests(TestCase):
    """Tahoe's client library accepts every answer of our server."""

    timeout = 120

    @deferred_test
    async def test_every_endpoint(self) -> None:
        """Version; immutable allocate/write/list/read/abort/advise; lease; mutable RTW/read."""
        live = await LiveStorage.start(self)
        script = Path(self.mktemp() + ".py")
        script.write_text(TAHOE_CLIENT_SCRIPT)
        out, err, code = await getProcessOutputAndValue(
            str(TAHOE_PYTHON), [str(script), live.nurl], env={}, reactor=reactor
        )
        assert code == 0 and b"ALL OK" in out, (out + err).decode(errors="replace")[-3000:]
