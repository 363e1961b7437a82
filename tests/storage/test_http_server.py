"""The storage HTTP server over real loopback TLS: every endpoint, and bad input refused.

Requests are sent raw (a Twisted ``Agent`` with the pinning TLS policy) so that
malformed ones can be made; the server must answer the right 4xx and keep
serving. :class:`LiveStorage` is reused by the grid client tests.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import cbor2
import treq
from attrs import define, field
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer

from gateway.grid.http_transport import BytesProducer, PinnedTLSPolicy
from storage import wire
from storage.http_limits import HttpLimits
from storage.http_server import listen_storage_on, make_storage_site
from storage.memory import MemoryBackend
from storage.server import StorageServer
from storage.tls import generate_tls_credentials

SI = bytes(range(16))
SI_TEXT = wire.si_b2a(SI)
RENEW, CANCEL, UPLOAD, WE = b"r" * 32, b"c" * 32, b"u" * 32, b"w" * 32


def deferred_test(f: Callable[..., Awaitable[None]]) -> Callable[..., Deferred[None]]:
    """Run an ``async def`` test method as the Deferred trial waits for."""

    @functools.wraps(f)
    def run(*args: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(f(*args))  # type: ignore[arg-type]

    return run


class StreamedBody(BytesProducer):
    """A body of unknown length (sent chunked)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.length = UNKNOWN_LENGTH


@define
class Reply:
    """A raw response."""

    code: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return None if not values else values[0]

    def cbor(self) -> Any:
        assert self.header("content-type") == "application/cbor", self
        return cbor2.loads(self.body)


@define
class LiveStorage:
    """A real storage core behind the real HTTPS site on 127.0.0.1, and a raw requester."""

    core: StorageServer
    nurl: str
    swissnum: bytes = field(repr=False)
    port: IListeningPort
    tracker: WrappingFactory
    pool: HTTPConnectionPool
    agent: Agent

    @classmethod
    async def start(
        cls, testcase: TestCase, core: StorageServer | None = None, **site_options: Any
    ) -> LiveStorage:
        """Start a server (over ``core``, by default one in memory) on a fresh port; the
        test's cleanup stops it and every connection."""
        core = core or StorageServer(MemoryBackend(), reactor)
        swissnum = wire.new_swissnum()
        credentials = generate_tls_credentials()
        site = make_storage_site(core, swissnum, clock=reactor, **site_options)
        tracker = WrappingFactory(site)
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port, nurl = await listen_storage_on(endpoint, tracker, credentials, swissnum, "127.0.0.1")
        pool = HTTPConnectionPool(reactor, persistent=True)
        agent = Agent(reactor, PinnedTLSPolicy(credentials.spki_hash), pool=pool)
        live = cls(core, nurl, swissnum, port, tracker, pool, agent)
        testcase.addCleanup(lambda: Deferred.fromCoroutine(live.stop()))
        return live

    async def stop(self) -> None:
        """Close client connections, then server connections, then the listening port."""
        await self.pool.closeCachedConnections()
        await drop_connections(self.tracker)
        await self.port.stopListening()

    def url(self, path: str) -> bytes:
        nurl = wire.parse_nurl(self.nurl)
        return f"https://{nurl.host}:{nurl.port}{path}".encode("ascii")

    async def request(
        self,
        method: bytes,
        path: str,
        headers: dict[str, list[bytes]] | None = None,
        body: bytes | IBodyProducer | None = None,
        auth: bool = True,
        secrets: dict[wire.SecretKind, bytes] | None = None,
    ) -> Reply:
        """Send one request as given (plus the right Authorization unless ``auth`` is false)."""
        h = Headers(headers or {})
        if auth and not h.hasHeader("authorization"):
            h.addRawHeader("Authorization", wire.format_authorization(self.swissnum))
        for kind, value in (secrets or {}).items():
            h.addRawHeader("X-Tahoe-Authorization", wire.format_secret(kind, value))
        producer = BytesProducer(body) if isinstance(body, bytes) else body
        response = await self.agent.request(method, self.url(path), h, producer)
        data = await treq.content(response)
        return Reply(response.code, response.headers, data)


async def drop_connections(tracker: WrappingFactory) -> None:
    """Disconnect every server-side connection and wait until each is gone."""
    for protocol in list(tracker.protocols):
        protocol.transport.abortConnection()
    while tracker.protocols:
        d: Deferred[None] = Deferred()
        reactor.callLater(0.01, d.callback, None)
        await d


ALLOC = {
    wire.SecretKind.LEASE_RENEW: RENEW,
    wire.SecretKind.LEASE_CANCEL: CANCEL,
    wire.SecretKind.UPLOAD: UPLOAD,
}
RTW_SECRETS = {
    wire.SecretKind.LEASE_RENEW: RENEW,
    wire.SecretKind.LEASE_CANCEL: CANCEL,
    wire.SecretKind.WRITE_ENABLER: WE,
}
CBOR = {"content-type": [b"application/cbor"]}
IMM = f"/storage/v1/immutable/{SI_TEXT}"
MUT = f"/storage/v1/mutable/{SI_TEXT}"


class EndpointTests(TestCase):
    """Every endpoint answers what Tahoe 1.20's server answers for well-formed requests."""

    async def _upload(self, live: LiveStorage, data: bytes = b"0123456789abcdef") -> None:
        body = wire.encode_allocate_request(frozenset({0, 1}), len(data))
        reply = await live.request(b"POST", IMM, CBOR, body, secrets=ALLOC)
        assert reply.code == 200, reply
        for shnum in (0, 1):
            reply = await live.request(
                b"PATCH",
                f"{IMM}/{shnum}",
                {"content-range": [f"bytes 0-{len(data) - 1}/*".encode()]},
                data,
                secrets={wire.SecretKind.UPLOAD: UPLOAD},
            )
            assert reply.code == 201, reply

    @deferred_test
    async def test_version(self) -> None:
        """Byte-string keys, uints within 64 bits, application/cbor."""
        live = await LiveStorage.start(self)
        reply = await live.request(b"GET", "/storage/v1/version")
        assert reply.code == 200
        value = reply.cbor()
        v1 = value[b"http://allmydata.org/tahoe/protocols/storage/v1"]
        assert set(v1) == {
            b"maximum-immutable-share-size",
            b"maximum-mutable-share-size",
            b"available-space",
        }
        assert all(type(v) is int and 0 <= v < 2**64 for v in v1.values())
        assert isinstance(value[b"application-version"], bytes)

    @deferred_test
    async def test_requests_are_not_logged_one_by_one(self) -> None:
        """No access-log line per request (a download is thousands of block reads)."""
        live = await LiveStorage.start(self)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        try:
            for _ in range(3):
                assert (await live.request(b"GET", "/storage/v1/version")).code == 200
            assert (await live.request(b"GET", f"{IMM}/0", {"range": [b"bytes=0-9"]})).code == 404
        finally:
            globalLogPublisher.removeObserver(events.append)
        assert not [e for e in events if "/storage/v1/" in (formatEvent(e) or "")], events

    @deferred_test
    async def test_immutable_lifecycle(self) -> None:
        """Allocate, write in pieces (200 then 201), list, read whole/range/past end."""
        live = await LiveStorage.start(self)
        body = wire.encode_allocate_request(frozenset({0, 3}), 10)
        reply = await live.request(b"POST", IMM, CBOR, body, secrets=ALLOC)
        assert reply.code == 200
        assert b"\xd9\x01\x02" in reply.body  # sets travel as tag 258
        assert reply.cbor() == {"already-have": set(), "allocated": {0, 3}}
        upload = {wire.SecretKind.UPLOAD: UPLOAD}
        reply = await live.request(
            b"PATCH", f"{IMM}/0", {"content-range": [b"bytes 0-3/10"]}, b"0123", secrets=upload
        )
        assert reply.code == 200
        assert reply.cbor() == {"required": [{"begin": 4, "end": 10}]}
        reply = await live.request(
            b"PATCH", f"{IMM}/0", {"content-range": [b"bytes 4-9/*"]}, b"456789", secrets=upload
        )
        assert reply.code == 201
        assert reply.cbor() == {"required": []}
        reply = await live.request(b"GET", f"{IMM}/shares")
        assert (reply.code, reply.cbor()) == (200, {0})
        reply = await live.request(b"GET", f"{IMM}/0")
        assert (reply.code, reply.body) == (200, b"0123456789")
        assert reply.header("content-type") == "application/octet-stream"
        reply = await live.request(b"GET", f"{IMM}/0", {"range": [b"bytes=2-5"]})
        assert (reply.code, reply.body, reply.header("content-range")) == (
            206,
            b"2345",
            "bytes 2-5/*",
        )
        reply = await live.request(b"GET", f"{IMM}/0", {"range": [b"bytes=8-100"]})
        assert (reply.code, reply.body, reply.header("content-range")) == (
            206,
            b"89",
            "bytes 8-9/*",
        )
        reply = await live.request(b"GET", f"{IMM}/0", {"range": [b"bytes=10-20"]})
        assert (reply.code, reply.body) == (204, b"")
        reply = await live.request(b"GET", f"{IMM}/0", {"range": [b"bytes=5-"]})
        assert reply.code == 416
        reply = await live.request(b"GET", f"{IMM}/0", {"range": [b"bytes=0-1,4-5"]})
        assert reply.code == 416
        reply = await live.request(b"GET", f"{IMM}/3", {"range": [b"bytes=0-1"]})
        assert reply.code == 404  # allocated but incomplete
        # Tahoe's client reads a share read's Content-Type before its status code.
        assert reply.header("content-type") == "application/octet-stream"

    @deferred_test
    async def test_immutable_write_errors(self) -> None:
        """Conflicts 409, no upload 405, wrong upload secret 401, bad Content-Range 416/400."""
        live = await LiveStorage.start(self)
        body = wire.encode_allocate_request(frozenset({0}), 4)
        assert (await live.request(b"POST", IMM, CBOR, body, secrets=ALLOC)).code == 200
        upload = {wire.SecretKind.UPLOAD: UPLOAD}
        cr = {"content-range": [b"bytes 0-1/4"]}
        assert (await live.request(b"PATCH", f"{IMM}/0", cr, b"ab", secrets=upload)).code == 200
        assert (await live.request(b"PATCH", f"{IMM}/0", cr, b"xx", secrets=upload)).code == 409
        wrong = {wire.SecretKind.UPLOAD: b"x" * 32}
        assert (await live.request(b"PATCH", f"{IMM}/0", cr, b"ab", secrets=wrong)).code == 401
        assert (await live.request(b"PATCH", f"{IMM}/7", cr, b"ab", secrets=upload)).code == 405
        assert (await live.request(b"PATCH", f"{IMM}/0", None, b"ab", secrets=upload)).code == 416
        bad = {"content-range": [b"bytes 3-1/4"]}
        assert (await live.request(b"PATCH", f"{IMM}/0", bad, b"ab", secrets=upload)).code == 416
        assert (await live.request(b"PATCH", f"{IMM}/0", cr, b"abc", secrets=upload)).code == 400
        beyond = {"content-range": [b"bytes 3-5/*"]}
        assert (
            await live.request(b"PATCH", f"{IMM}/0", beyond, b"abc", secrets=upload)
        ).code == 416
        assert (await live.request(b"PUT", f"{IMM}/0/abort", secrets=upload)).code == 200
        assert (await live.request(b"PUT", f"{IMM}/0/abort", secrets=upload)).code == 405

    @deferred_test
    async def test_leases_and_corruption_advice(self) -> None:
        """Lease renewal 204 (404 when nothing is stored); corruption advice 200 / 404."""
        live = await LiveStorage.start(self)
        leases = {wire.SecretKind.LEASE_RENEW: RENEW, wire.SecretKind.LEASE_CANCEL: CANCEL}
        assert (
            await live.request(b"PUT", f"/storage/v1/lease/{SI_TEXT}", secrets=leases)
        ).code == 404
        await self._upload(live)
        assert (
            await live.request(b"PUT", f"/storage/v1/lease/{SI_TEXT}", secrets=leases)
        ).code == 204
        advice = wire.encode_corrupt_request("hash mismatch in block 3")
        assert (await live.request(b"POST", f"{IMM}/1/corrupt", CBOR, advice)).code == 200
        assert (await live.request(b"POST", f"{IMM}/9/corrupt", CBOR, advice)).code == 404
        assert (await live.request(b"POST", f"{MUT}/0/corrupt", CBOR, advice)).code == 404
        empty = cbor2.dumps({"reason": ""})
        assert (await live.request(b"POST", f"{IMM}/1/corrupt", CBOR, empty)).code == 400

    @deferred_test
    async def test_mutable_lifecycle(self) -> None:
        """Read-test-write creates and tests; reads, listing, wrong write enabler 401."""
        live = await LiveStorage.start(self)
        body = cbor2.dumps(
            {
                "test-write-vectors": {
                    2: {
                        "test": [{"offset": 0, "size": 1, "specimen": b""}],
                        "write": [{"offset": 0, "data": b"hello world"}],
                        "new-length": None,
                    }
                },
                "read-vector": [{"offset": 0, "size": 5}],
            }
        )
        path = f"{MUT}/read-test-write"
        reply = await live.request(b"POST", path, CBOR, body, secrets=RTW_SECRETS)
        assert (reply.code, reply.cbor()) == (200, {"success": True, "data": {}})
        reply = await live.request(b"POST", path, CBOR, body, secrets=RTW_SECRETS)
        assert reply.cbor() == {"success": False, "data": {2: [b"hello"]}}
        reply = await live.request(b"GET", f"{MUT}/shares")
        assert (reply.code, reply.cbor()) == (200, {2})
        reply = await live.request(b"GET", f"{MUT}/2", {"range": [b"bytes=6-10"]})
        assert (reply.code, reply.body) == (206, b"world")
        reply = await live.request(b"GET", f"{MUT}/2")
        assert (reply.code, reply.body) == (200, b"hello world")
        reply = await live.request(b"GET", f"{MUT}/2", {"range": [b"bytes=11-12"]})
        assert reply.code == 204
        assert (await live.request(b"GET", f"{MUT}/3", {"range": [b"bytes=0-1"]})).code == 404
        wrong = dict(RTW_SECRETS)
        wrong[wire.SecretKind.WRITE_ENABLER] = b"W" * 32
        assert (await live.request(b"POST", path, CBOR, body, secrets=wrong)).code == 401
        advice = wire.encode_corrupt_request("bad signature")
        assert (await live.request(b"POST", f"{MUT}/2/corrupt", CBOR, advice)).code == 200


class RefusalTests(TestCase):
    """Bad requests get the right 4xx and the server keeps serving."""

    async def _still_serving(self, live: LiveStorage) -> None:
        assert (await live.request(b"GET", "/storage/v1/version")).code == 200

    @deferred_test
    async def test_swissnum(self) -> None:
        """No, malformed or wrong swissnum: 401 before anything else is looked at."""
        live = await LiveStorage.start(self)
        assert (await live.request(b"GET", "/storage/v1/version", auth=False)).code == 401
        for value in (b"Tahoe-LAFS " + base64.b64encode(b"wrong"), b"Basic xyz", b"Tahoe-LAFS"):
            reply = await live.request(b"GET", "/storage/v1/version", {"authorization": [value]})
            assert reply.code == 401
            assert live.swissnum not in reply.body
        reply = await live.request(b"GET", f"{IMM}/999", auth=False)
        assert reply.code == 401
        await self._still_serving(live)

    @deferred_test
    async def test_routes_and_path_tricks(self) -> None:
        """Unknown paths 404, wrong methods 405, dot segments and odd encodings 400/404."""
        live = await LiveStorage.start(self)
        assert (await live.request(b"GET", "/storage/v1/nothing")).code == 404
        assert (await live.request(b"GET", "/storage/v2/version")).code == 404
        assert (await live.request(b"GET", "//storage/v1/version")).code == 404
        reply = await live.request(b"DELETE", "/storage/v1/version")
        assert (reply.code, reply.header("allow")) == (405, "GET")
        assert (await live.request(b"GET", f"{MUT}/read-test-write")).code == 405
        assert (await live.request(b"GET", "/storage/v1/immutable/../version")).code == 400
        assert (await live.request(b"GET", f"{IMM}/../shares")).code == 404
        assert (await live.request(b"GET", "/storage/v1/immutable/%2e%2e/0")).code == 400
        assert (await live.request(b"GET", f"/storage/v1/immutable/{SI_TEXT}%2fx/0")).code == 400
        await self._still_serving(live)

    @deferred_test
    async def test_storage_index_and_share_number(self) -> None:
        """Short, uppercase, non-canonical storage indexes and out-of-range shares: 400."""
        live = await LiveStorage.start(self)
        noncanonical = SI_TEXT[:-1] + "b"
        for si in (SI_TEXT[:-1], SI_TEXT.upper(), noncanonical, SI_TEXT + "a", "1" * 26):
            assert (await live.request(b"GET", f"/storage/v1/immutable/{si}/shares")).code == 400
        for shnum in ("256", "-1", "abc", "1000", "0x1", " 1"):
            reply = await live.request(b"GET", f"{IMM}/{shnum.replace(' ', '%20')}")
            assert reply.code == 400, shnum
        await self._still_serving(live)

    @deferred_test
    async def test_secrets(self) -> None:
        """Missing, short, unknown, extra, duplicated or non-base64 secrets: 400."""
        live = await LiveStorage.start(self)
        body = wire.encode_allocate_request(frozenset({0}), 10)
        cases: list[list[bytes]] = [
            [],
            [b"lease-renew-secret " + base64.b64encode(RENEW)],
            [
                b"lease-renew-secret " + base64.b64encode(b"short"),
                b"lease-cancel-secret " + base64.b64encode(CANCEL),
                b"upload-secret " + base64.b64encode(UPLOAD),
            ],
            [wire.format_secret(k, v) for k, v in ALLOC.items()]
            + [b"write-enabler " + base64.b64encode(WE)],
            [wire.format_secret(k, v) for k, v in ALLOC.items()]
            + [b"upload-secret " + base64.b64encode(UPLOAD)],
            [wire.format_secret(k, v) for k, v in ALLOC.items() if k != wire.SecretKind.UPLOAD]
            + [b"upload-secret !!!not-base64!!!"],
            [wire.format_secret(k, v) for k, v in ALLOC.items() if k != wire.SecretKind.UPLOAD]
            + [b"password " + base64.b64encode(UPLOAD)],
        ]
        for values in cases:
            headers = {"x-tahoe-authorization": values, **CBOR}
            reply = await live.request(b"POST", IMM, headers, body)
            assert reply.code == 400, values
            assert base64.b64encode(RENEW) not in reply.body
        leases = {wire.SecretKind.LEASE_RENEW: RENEW}
        assert (
            await live.request(b"PUT", f"/storage/v1/lease/{SI_TEXT}", secrets=leases)
        ).code == 400
        await self._still_serving(live)

    @deferred_test
    async def test_bodies(self) -> None:
        """Malformed CBOR or schema 400; wrong Content-Type 415; unacceptable Accept 406."""
        live = await LiveStorage.start(self)
        bad_bodies = [
            b"\xff\x00",
            cbor2.dumps({"share-numbers": {0}, "allocated-size": 10}) + b"\x00",
            cbor2.dumps({"share-numbers": [0], "allocated-size": 10}),
            cbor2.dumps({"share-numbers": {0}, "allocated-size": True}),
            cbor2.dumps({"share-numbers": {0}, "allocated-size": -1}),
            cbor2.dumps({"share-numbers": {256}, "allocated-size": 10}),
            cbor2.dumps({"share-numbers": {0}, "allocated-size": 10, "extra": 1}),
            cbor2.dumps({b"share-numbers": {0}, b"allocated-size": 10}),
            b"\x81" * 50 + b"\x80",  # nested deeper than allowed
        ]
        for body in bad_bodies:
            reply = await live.request(b"POST", IMM, CBOR, body, secrets=ALLOC)
            assert reply.code == 400, body
        good = wire.encode_allocate_request(frozenset({0}), 10)
        json = {"content-type": [b"application/json"]}
        assert (await live.request(b"POST", IMM, json, good, secrets=ALLOC)).code == 415
        html = {"accept": [b"text/html"], **CBOR}
        assert (await live.request(b"POST", IMM, html, good, secrets=ALLOC)).code == 406
        assert (await live.request(b"GET", f"{IMM}/shares", {"accept": [b"text/html"]})).code == 406
        refused = {"accept": [b"application/cbor;q=0, text/html"]}
        assert (await live.request(b"GET", "/storage/v1/version", refused)).code == 406
        for accept in (b"*/*", b"application/*", b"text/html, application/cbor;q=0.5"):
            reply = await live.request(b"GET", "/storage/v1/version", {"accept": [accept]})
            assert reply.code == 200
        # An Accept of CBOR on a share read (as Tahoe's client sends) is fine.
        reply = await live.request(b"GET", f"{IMM}/0", {"accept": [b"application/cbor"]})
        assert reply.code == 404
        assert live.core.list_immutable(SI) == frozenset()  # nothing was allocated
        assert (await live.request(b"POST", IMM, None, good, secrets=ALLOC)).code == 200

    @deferred_test
    async def test_oversized_bodies(self) -> None:
        """Bodies over the route's or the site's limit: 413 before they are read, declared or
        chunked; bodies on requests that take none, 413."""
        live = await LiveStorage.start(self, limits=HttpLimits(max_body_size=70_000))
        big = cbor2.dumps({"share-numbers": {0}, "allocated-size": 10, "pad": b"x" * 9000})
        assert (await live.request(b"POST", IMM, CBOR, big, secrets=ALLOC)).code == 413
        good = wire.encode_allocate_request(frozenset({0}), 100_000)
        assert (await live.request(b"POST", IMM, CBOR, good, secrets=ALLOC)).code == 200
        upload = {wire.SecretKind.UPLOAD: UPLOAD}
        huge = b"y" * 100_000
        cr = {"content-range": [b"bytes 0-99999/*"]}
        assert (await live.request(b"PATCH", f"{IMM}/0", cr, huge, secrets=upload)).code == 413
        streamed = StreamedBody(huge)
        assert (await live.request(b"PATCH", f"{IMM}/0", cr, streamed, secrets=upload)).code == 413
        reply = await live.request(b"GET", "/storage/v1/version", None, b"a body")
        assert reply.code == 413
        cr = {"content-range": [b"bytes 0-69999/*"]}
        reply = await live.request(b"PATCH", f"{IMM}/0", cr, b"z" * 70_000, secrets=upload)
        assert reply.code == 200
        assert live.core.list_immutable(SI) == frozenset()  # not complete: nothing was lost
        await self._still_serving(live)
