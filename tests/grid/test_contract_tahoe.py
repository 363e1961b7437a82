"""The IStorageClient contract over HTTPS to an unmodified Tahoe-LAFS 1.20 storage node.

A gateway may keep shares on Tahoe storage nodes (docs/interop.rst): every
operation of the object layer must work against Tahoe's own server. Where
Tahoe answers differently from ours (docs/storage.rst), the suite expects
Tahoe's answer (``TAHOE_1_20``). Tahoe 1.20 serves HTTP storage on its
Foolscap port with the key of ``private/node.pem``; the NURL is built from
that key and the swissnum of ``private/storage.furl``. One node (on
127.0.0.1) serves every test of this module.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from gateway.grid.http_client import HttpStorageClient
from gateway.grid.interfaces import IStorageClient
from storage import wire
from storage.errors import NotAuthorized
from tests.grid.contract import TAHOE_1_20, NurlContract, StorageClientContract, closing, sockets_to
from tests.grid_e2e.processes import TahoeStorageNode
from tests.storage.test_http_server import deferred_test
from tests.tahoe import REQUIRES_TAHOE

pytestmark = REQUIRES_TAHOE


@pytest.fixture(scope="module")
def tahoe_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TahoeStorageNode]:
    """One Tahoe 1.20 storage node for the module, stopped by its pid at the end."""
    node = TahoeStorageNode(tmp_path_factory.mktemp("contract-tahoe") / "node", "contract")
    try:
        node.start()
        yield node
    finally:
        node.stop()


class HttpTahoeContractTests(StorageClientContract, NurlContract, TestCase):
    """The contract for HttpStorageClient against a Tahoe-LAFS 1.20 storage node."""

    expect = TAHOE_1_20
    keeps_connections = True
    port: int

    @pytest.fixture(autouse=True)
    def _server(self, tahoe_node: TahoeStorageNode) -> None:
        self.nurl = tahoe_node.nurl
        self.port = tahoe_node.port

    def client_for(self, nurl: str) -> HttpStorageClient:
        return closing(self, HttpStorageClient.from_nurl(reactor, nurl, timeout=30))

    async def make_client(self) -> IStorageClient:
        return self.client_for(self.nurl)

    def open_connections(self) -> int:
        return sockets_to(self.port)

    @deferred_test
    async def test_tahoes_own_nurl_is_served_and_a_forged_swissnum_refused(self) -> None:
        """The NURL built from Tahoe's node.pem and storage.furl reaches Tahoe's HTTP storage
        (it says what it is); the same pin and address with another swissnum is refused
        (NotAuthorized), as our own servers refuse it."""
        real = wire.parse_nurl(self.nurl)
        assert real.port == self.port
        version = await self.client_for(self.nurl).get_version()
        assert version.available_space is None or version.available_space > 0
        forged = wire.format_nurl(real.spki_hash, real.host, real.port, wire.new_swissnum())
        with pytest.raises(NotAuthorized):
            await self.client_for(forged).get_version()
