"""What only the HTTPS storage client does: pinning, pooling, timeouts, garbage, health, secrecy."""

from __future__ import annotations

import base64
import gc
import socket
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from gateway.grid.http_client import HttpStorageClient
from gateway.grid.interfaces import ServerUnavailable
from storage import wire
from storage.errors import ConflictingWrite, NotAuthorized
from storage.http_server import listen_storage_on
from storage.interfaces import TestWriteVectors as TWVectors
from storage.interfaces import WriteVector
from storage.tls import generate_tls_credentials
from tests.storage.test_http_server import LiveStorage, deferred_test, drop_connections

SI = bytes(range(50, 66))
RENEW, CANCEL, UPLOAD, WE = b"r" * 32, b"c" * 32, b"u" * 32, b"w" * 32


class _Canned(Resource):
    """A fake server answering every request with one fixed response, or never."""

    isLeaf = True

    def __init__(self, code: int, content_type: bytes, body: bytes, hang: bool = False) -> None:
        super().__init__()
        self._answer = (code, content_type, body)
        self._hang = hang

    def render(self, request: Request) -> object:
        if self._hang:
            return NOT_DONE_YET
        code, content_type, body = self._answer
        request.setResponseCode(code)
        request.setHeader(b"content-type", content_type)
        return body


class HttpClientTests(TestCase):
    """Transport behaviour of :class:`HttpStorageClient` over real loopback TLS."""

    def _client(self, nurl: str, **kwargs: object) -> HttpStorageClient:
        client = HttpStorageClient.from_nurl(reactor, nurl, **kwargs)
        self.addCleanup(lambda: Deferred.fromCoroutine(client.close()))
        return client

    async def _canned(self, resource: Resource) -> str:
        credentials = generate_tls_credentials()
        tracker = WrappingFactory(Site(resource))
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port, nurl = await listen_storage_on(
            endpoint, tracker, credentials, wire.new_swissnum(), "127.0.0.1"
        )

        async def stop() -> None:
            await drop_connections(tracker)
            await port.stopListening()

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        return nurl

    @deferred_test
    async def test_wrong_pin_refused(self) -> None:
        """A server whose key does not match the NURL's pin never receives a request."""
        live = await LiveStorage.start(self)
        nurl = wire.parse_nurl(live.nurl)
        other = generate_tls_credentials().spki_hash
        bad = wire.format_nurl(other, nurl.host, nurl.port, nurl.swissnum)
        client = self._client(bad, timeout=10)
        twv = {0: TWVectors(write=(WriteVector(0, b"data"),))}
        with self.assertRaises(ServerUnavailable) as caught:
            await client.read_test_write(SI, WE, RENEW, CANCEL, twv, ())
        assert "TLS" in str(caught.exception)
        assert not client.health.connected and "TLS" in (client.health.last_error or "")
        assert live.core.list_mutable(SI) == frozenset()

    @deferred_test
    async def test_a_written_body_is_let_go_once_answered(self) -> None:
        """The bytes of an immutable write are not kept once the server has answered,
        although Twisted's HTTP client leaves each request in reference cycles that only
        the garbage collector frees: a large upload held every share written until the
        next collection (95 MiB of a 256 MiB upload to a 3-of-5 grid)."""
        live = await LiveStorage.start(self)
        client = self._client(live.nurl)
        await client.allocate_buckets(SI, frozenset({0}), 1 << 20, UPLOAD, RENEW, CANCEL)
        data = bytes(range(256)) * 4096
        baseline = sys.getrefcount(data)
        gc.disable()  # what a collection would free must not count
        try:
            await client.write_immutable(SI, 0, UPLOAD, 0, data)
            self.assertEqual(sys.getrefcount(data), baseline)
        finally:
            gc.enable()
        self.assertEqual(await client.read_immutable(SI, 0, 0, 8), data[:8])

    @deferred_test
    async def test_wrong_swissnum(self) -> None:
        """A wrong swissnum is NotAuthorized, and the message does not carry it."""
        live = await LiveStorage.start(self)
        nurl = wire.parse_nurl(live.nurl)
        bad = wire.format_nurl(nurl.spki_hash, nurl.host, nurl.port, b"notthesecret")
        client = self._client(bad)
        with self.assertRaises(NotAuthorized) as caught:
            await client.get_version()
        assert "notthesecret" not in str(caught.exception)
        assert client.health.connected  # reachable, just refused

    @deferred_test
    async def test_connection_refused(self) -> None:
        """Nothing listening: ServerUnavailable, and health says why."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            free_port = s.getsockname()[1]
        nurl = wire.format_nurl(generate_tls_credentials().spki_hash, "127.0.0.1", free_port, b"s")
        client = self._client(nurl)
        with self.assertRaises(ServerUnavailable):
            await client.list_immutable(SI)
        assert client.health.connected is False and client.health.last_error

    @deferred_test
    async def test_timeout(self) -> None:
        """A server that never answers: ServerUnavailable after the per-request timeout."""
        nurl = await self._canned(_Canned(200, b"", b"", hang=True))
        client = self._client(nurl, timeout=0.3)
        started = reactor.seconds()
        with self.assertRaises(ServerUnavailable) as caught:
            await client.get_version()
        assert "0.3s" in str(caught.exception)
        assert reactor.seconds() - started < 5

    @deferred_test
    async def test_garbage_answers(self) -> None:
        """HTML, bad CBOR, schema mismatches and 5xx are ServerUnavailable, not crashes."""
        cases = [
            _Canned(200, b"text/html", b"<html></html>"),
            _Canned(200, b"application/cbor", b"\xff\xff"),
            _Canned(200, b"application/cbor", wire.cbor_dumps({"what": 1})),
            _Canned(500, b"text/plain", b"oops"),
            _Canned(302, b"text/plain", b""),
        ]
        for resource in cases:
            client = self._client(await self._canned(resource))
            with self.assertRaises(ServerUnavailable):
                await client.get_version()
            with self.assertRaises(ServerUnavailable):
                await client.list_mutable(SI)
            assert client.health.last_error

    @deferred_test
    async def test_read_needs_consistent_range(self) -> None:
        """A read answered 200 with a whole body, or with a lying Content-Range, is refused."""
        client = self._client(await self._canned(_Canned(200, b"application/octet-stream", b"x")))
        with self.assertRaises(ServerUnavailable):
            await client.read_immutable(SI, 0, 0, 10)

    @deferred_test
    async def test_health_and_pooling(self) -> None:
        """Successful requests record latency and space; one persistent connection is reused."""
        live = await LiveStorage.start(self)
        client = self._client(live.nurl)
        for _ in range(5):
            info = await client.get_version()
        health = client.health
        assert health.connected and health.last_error is None
        assert health.last_latency is not None and health.last_latency >= 0
        assert health.available_space == info.available_space
        assert len(live.tracker.protocols) == 1
        assert client.server_id == wire.parse_nurl(live.nurl).spki_digest

    @deferred_test
    async def test_secrets_stay_secret(self) -> None:
        """Neither repr nor exception messages show the swissnum or request secrets."""
        live = await LiveStorage.start(self)
        client = self._client(live.nurl)
        await client.allocate_buckets(SI, frozenset({0}), 4, UPLOAD, RENEW, CANCEL)
        await client.write_immutable(SI, 0, UPLOAD, 0, b"ab")
        with self.assertRaises(ConflictingWrite) as caught:
            await client.write_immutable(SI, 0, UPLOAD, 0, b"xy")
        text = repr(client) + repr(wire.parse_nurl(live.nurl)) + str(caught.exception)
        for secret in (live.swissnum, UPLOAD, base64.b64encode(UPLOAD)):
            assert secret.decode() not in text
        assert live.swissnum.decode() not in str(client.health)
