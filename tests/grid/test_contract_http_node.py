"""The IStorageClient contract over HTTPS to one of our storage nodes, run as users run it.

A gateway's remote servers are ``gateway create-storage`` nodes reached by their
NURL: real TLS pinned by the SPKI hash, a pooled persistent connection, the
node's disk backend. One node (on 127.0.0.1) serves every test of this module;
each test uses its own storage indexes and secrets.
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
from tests.grid.contract import (
    OURS,
    NurlContract,
    StorageClientContract,
    StorageNodeProcess,
    closing,
    sockets_to,
)
from tests.storage.test_http_server import deferred_test


@pytest.fixture(scope="module")
def storage_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageNodeProcess]:
    """One storage node for the module, stopped by its pid at the end."""
    node = StorageNodeProcess(tmp_path_factory.mktemp("contract-node") / "node")
    try:
        node.start()
        yield node
    finally:
        node.stop()


class HttpStorageNodeContractTests(StorageClientContract, NurlContract, TestCase):
    """The contract for HttpStorageClient against a running storage node."""

    expect = OURS
    keeps_connections = True

    @pytest.fixture(autouse=True)
    def _server(self, storage_node: StorageNodeProcess) -> None:
        self.nurl = storage_node.nurl

    def client_for(self, nurl: str) -> HttpStorageClient:
        return closing(self, HttpStorageClient.from_nurl(reactor, nurl, timeout=10))

    async def make_client(self) -> IStorageClient:
        return self.client_for(self.nurl)

    def open_connections(self) -> int:
        return sockets_to(wire.parse_nurl(self.nurl).port)

    @deferred_test
    async def test_a_stolen_pin_without_the_swissnum_is_refused(self) -> None:
        """Over real TLS to the node: right pin and address, another swissnum: refused
        (NotAuthorized), while the real NURL is served."""
        real = wire.parse_nurl(self.nurl)
        forged = wire.format_nurl(real.spki_hash, real.host, real.port, wire.new_swissnum())
        with pytest.raises(NotAuthorized):
            await self.client_for(forged).get_version()
        assert (await self.client_for(self.nurl).get_version()).available_space > 0
