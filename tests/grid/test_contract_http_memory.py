"""The IStorageClient contract for the HTTPS client and our storage site, carried in memory.

The gateway talks to remote storage servers through HttpStorageClient; what it
relies on is that the client and our server agree on every request and answer
(paths, secrets, CBOR, ranges, status codes and the errors they become). Here
the requests go to the real storage site over in-memory transports (no socket,
no TLS, no reactor), so the whole contract runs in a fraction of a second;
``test_contract_http_node.py`` runs it again over real TLS to a real node.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from gateway.grid.http_client import HttpStorageClient
from gateway.grid.interfaces import IStorageClient
from storage import wire
from storage.errors import NotAuthorized
from storage.http_server import make_storage_site
from storage.memory import MemoryBackend
from storage.server import StorageServer
from tests.grid.contract import OURS, SiteAgent, StorageClientContract, closing, memory_nurl
from tests.storage.test_http_server import deferred_test


class HttpInMemoryContractTests(StorageClientContract, TestCase):
    """The contract for HttpStorageClient with our storage site behind an in-memory agent."""

    expect = OURS
    agent: SiteAgent

    async def make_client(self) -> IStorageClient:
        clock = Clock()
        swissnum = wire.new_swissnum()
        site = make_storage_site(StorageServer(MemoryBackend(), clock), swissnum, clock=clock)
        self.agent = SiteAgent(site)
        nurl = wire.parse_nurl(memory_nurl(swissnum))
        return closing(self, HttpStorageClient(clock, nurl, agent=self.agent))

    def open_connections(self) -> int:
        return self.agent.open_connections()


class HttpInMemoryAuthorizationTests(TestCase):
    """What only the HTTP transport adds: the swissnum in the NURL is the server's key."""

    @deferred_test
    async def test_a_wrong_swissnum_is_refused(self) -> None:
        """A client whose NURL carries another swissnum is refused (401: NotAuthorized),
        and the server still answers the right one."""
        clock = Clock()
        swissnum = wire.new_swissnum()
        site = make_storage_site(StorageServer(MemoryBackend(), clock), swissnum, clock=clock)
        agent = SiteAgent(site)
        wrong = wire.parse_nurl(memory_nurl(wire.new_swissnum()))
        stranger = closing(self, HttpStorageClient(clock, wrong, agent=agent))
        with pytest.raises(NotAuthorized):
            await stranger.get_version()
        right = wire.parse_nurl(memory_nurl(swissnum))
        owner = closing(self, HttpStorageClient(clock, right, agent=agent))
        assert (await owner.get_version()).available_space > 0
