"""The HTTPS side of Tahoe-LAFS's storage protocol: a thin adapter over :class:`IStorageServer`.

Every endpoint is one row of :data:`_ROUTES`, which declares its method, path,
required ``X-Tahoe-Authorization`` secrets, body kind and size limit, body
validator and whether it answers CBOR. :class:`StorageResource` applies those
declarations in one order for every request. As soon as the request head is
in, before a byte of the body is read (:meth:`StorageResource.admit`, called
by :mod:`storage.http_limits`): swissnum (401), then for a request with a body
its route (404/405) and size (413). Once the body is in (:meth:`render`):
route (404/405), path parameters (400), secrets (400), ``Accept`` (406),
``Content-Type`` (415), CBOR and schema (400) — and only then the handler.
Core errors map to statuses through :func:`storage.wire.status_for_error`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import IO, Any, cast

from attrs import field, frozen
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from zope.interface import implementer

from storage import wire
from storage.errors import InvalidRequest, RangeNotSatisfiable, StorageError
from storage.http_limits import (
    DEFAULT_MAX_BODY_SIZE,
    HttpLimits,
    IRequestGate,
    LimitedSite,
    Refusal,
)
from storage.interfaces import IStorageServer
from storage.tls import TlsCredentials
from storage.wire import SecretKind

_log = Logger()

_READ_CHUNK = 1024 * 1024


@frozen
class _Reply:
    """What a handler answers: status, optional content type and body."""

    code: int = 200
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@frozen
class _Call:
    """One validated request, as handlers see it."""

    request: server.Request
    storage_index: bytes = b""
    share_number: int = -1
    secrets: dict[SecretKind, bytes] = field(factory=dict, repr=False)
    message: Any = field(default=None, repr=False)


_Handler = Callable[["StorageResource", _Call], "_Reply | Deferred[_Reply]"]


@frozen
class _Route:
    """The declaration of one endpoint: everything checked before its handler runs."""

    method: bytes
    pattern: re.Pattern[str]
    handler: _Handler
    secrets: frozenset[SecretKind] = frozenset()
    body: str = "none"  # "none" | "cbor" | "raw"
    max_body: int = 0
    validate: Callable[[Any], Any] | None = None
    responds_cbor: bool = False
    raw_errors: bool = False


class _HTTPError(Exception):
    """Raised while checking a request to answer it with a status and a message."""

    def __init__(self, code: int, message: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.headers = headers


@implementer(IRequestGate)
class StorageResource(Resource):
    """The ``/storage/v1/`` tree over one storage core, authorized by one swissnum."""

    isLeaf = True

    def __init__(
        self,
        storage: IStorageServer,
        swissnum: bytes,
        *,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    ) -> None:
        super().__init__()
        self._storage = storage
        self._swissnum = swissnum
        self._max_body_size = max_body_size

    def __repr__(self) -> str:
        return f"<StorageResource over {self._storage!r}>"

    # --- the request pipeline ---------------------------------------------------------

    def admit(
        self, method: bytes, uri: bytes, headers: Headers, length: int | None
    ) -> Refusal | int:
        """Check a request head before its body is read: swissnum, route, body size.

        Answers a :class:`Refusal` or the most body bytes the request may send
        (:class:`IRequestGate`); :meth:`render` checks the rest once the body is in.
        """
        auth = headers.getRawHeaders(b"authorization")
        if auth is None or len(auth) != 1 or not wire.check_authorization(auth[0], self._swissnum):
            return Refusal(401, "missing or wrong Authorization (swissnum)")
        if length == 0:
            return 0
        try:
            route, _ = self._find_route(method, uri.split(b"?", 1)[0])
        except _HTTPError as e:
            return Refusal(e.code, e.message, e.headers)
        if route.body == "none":
            return Refusal(413, "this request takes no body")
        return self._body_limit(route)

    def _body_limit(self, route: _Route) -> int:
        return min(route.max_body or self._max_body_size, self._max_body_size)

    def render(self, request: server.Request) -> bytes | int:
        """Check the request against its route's declaration, run the handler, answer.

        A handler may answer later (a write completing a share answers once the share is
        durable): then the request is finished when its Deferred fires.
        """
        request.defaultContentType = None
        route: _Route | None = None
        reply: _Reply | Deferred[_Reply]
        try:
            route, match = self._find_route(request.method, request.path)
            reply = route.handler(self, self._check(request, route, match))
        except Exception:
            reply = _error_reply(Failure(), request)
        if isinstance(reply, Deferred):
            gone: list[Failure] = []
            request.notifyFinish().addErrback(gone.append)
            reply.addErrback(_error_reply, request)
            reply.addCallback(self._answer_later, request, route, gone)
            return server.NOT_DONE_YET
        return self._answer(request, route, reply)

    def _answer_later(
        self, reply: _Reply, request: server.Request, route: _Route | None, gone: list[Failure]
    ) -> None:
        if gone:
            return  # the client went away meanwhile
        request.write(self._answer(request, route, reply))
        request.finish()

    def _answer(self, request: server.Request, route: _Route | None, reply: _Reply) -> bytes:
        """Set the status and headers of ``reply``; answer its body."""
        if route is not None and route.raw_errors and reply.code >= 300:
            # Tahoe's client checks a share read's Content-Type before its status.
            reply = _Reply(reply.code, b"", wire.OCTET_STREAM, reply.headers)
        request.setResponseCode(reply.code)
        for name, value in reply.headers:
            request.setHeader(name, value)
        if reply.content_type is not None:
            request.setHeader("Content-Type", reply.content_type)
        return reply.body

    def _find_route(self, method: bytes, raw_path: bytes) -> tuple[_Route, re.Match[str]]:
        try:
            path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            raise _HTTPError(404, "no such resource") from None
        resource: str | None = None
        for route in _ROUTES:
            match = route.pattern.fullmatch(path)
            if match is None or (resource is not None and route.pattern.pattern != resource):
                continue
            resource = route.pattern.pattern
            if route.method == method:
                return route, match
        if resource is None:
            raise _HTTPError(404, "no such resource")
        allowed = ", ".join(
            sorted(r.method.decode() for r in _ROUTES if r.pattern.pattern == resource)
        )
        raise _HTTPError(405, "method not allowed here", (("Allow", allowed),))

    def _check(self, request: server.Request, route: _Route, match: re.Match[str]) -> _Call:
        headers = request.requestHeaders
        auth = headers.getRawHeaders(b"authorization")
        if auth is None or len(auth) != 1 or not wire.check_authorization(auth[0], self._swissnum):
            raise _HTTPError(401, "missing or wrong Authorization (swissnum)")
        params = match.groupdict()
        storage_index = wire.si_a2b(params["si"]) if "si" in params else b""
        share_number = wire.parse_share_number(params["sh"]) if "sh" in params else -1
        try:
            secrets = wire.parse_secrets(
                headers.getRawHeaders(b"x-tahoe-authorization", []), route.secrets
            )
        except wire.BadSecrets as e:
            raise _HTTPError(400, str(e)) from None
        if route.responds_cbor and not wire.accepts_cbor(request.getHeader(b"accept")):
            raise _HTTPError(406, "this endpoint answers application/cbor only")
        message = self._read_body(request, route)
        return _Call(request, storage_index, share_number, secrets, message)

    def _read_body(self, request: server.Request, route: _Route) -> Any:
        if route.body == "none":
            return None
        limit = self._body_limit(route)
        content = cast(IO[bytes] | None, request.content)
        data = b""
        if content is not None:
            content.seek(0, 2)
            if content.tell() > limit:
                raise _HTTPError(413, f"request body larger than {limit} bytes")
            content.seek(0)
            data = content.read()
        if route.body == "raw":
            return data
        content_type = wire.media_type(request.getHeader(b"content-type"))
        if content_type not in (None, wire.CBOR_MIME_TYPE):
            raise _HTTPError(415, "request bodies must be application/cbor")
        try:
            decoded = wire.cbor_loads(data)
            return route.validate(decoded) if route.validate else decoded
        except wire.MalformedMessage as e:
            raise _HTTPError(400, str(e)) from None

    # --- handlers -------------------------------------------------------------------

    def _version(self, call: _Call) -> _Reply:
        return _cbor(wire.encode_version(self._storage.get_version()))

    def _renew_lease(self, call: _Call) -> _Reply:
        self._storage.add_or_renew_lease(
            call.storage_index,
            call.secrets[SecretKind.LEASE_RENEW],
            call.secrets[SecretKind.LEASE_CANCEL],
        )
        return _Reply(204)

    def _allocate(self, call: _Call) -> _Reply:
        share_numbers, allocated_size = call.message
        result = self._storage.allocate_buckets(
            call.storage_index,
            share_numbers,
            allocated_size,
            call.secrets[SecretKind.UPLOAD],
            call.secrets[SecretKind.LEASE_RENEW],
            call.secrets[SecretKind.LEASE_CANCEL],
        )
        return _cbor(wire.encode_allocation(result))

    def _write(self, call: _Call) -> _Reply | Deferred[_Reply]:
        content_range = call.request.getHeader(b"content-range")
        if content_range is None:
            raise RangeNotSatisfiable("a write needs a Content-Range header")
        begin, end = wire.parse_content_range(content_range.decode("latin-1"))
        if len(call.message) != end - begin:
            raise InvalidRequest("body length differs from the Content-Range")
        result = self._storage.write_immutable(
            call.storage_index,
            call.share_number,
            call.secrets[SecretKind.UPLOAD],
            begin,
            call.message,
        )
        reply = _cbor(wire.encode_write_progress(result), 201 if result.finished else 200)
        if not result.finished:
            return reply
        done = self._storage.durable(call.storage_index, call.share_number)
        return done.addCallback(lambda _: reply)  # answered once the share is durable

    def _abort(self, call: _Call) -> _Reply:
        self._storage.abort_immutable(
            call.storage_index, call.share_number, call.secrets[SecretKind.UPLOAD]
        )
        return _Reply(200)

    def _list_immutable(self, call: _Call) -> _Reply:
        return _cbor(wire.encode_share_set(self._storage.list_immutable(call.storage_index)))

    def _read_immutable(self, call: _Call) -> _Reply:
        return _read_range(call, self._storage.read_immutable)

    def _corrupt_immutable(self, call: _Call) -> _Reply:
        self._storage.advise_corrupt_immutable(call.storage_index, call.share_number, call.message)
        return _Reply(200)

    def _read_test_write(self, call: _Call) -> _Reply:
        test_write_vectors, read_vector = call.message
        result = self._storage.read_test_write(
            call.storage_index,
            call.secrets[SecretKind.WRITE_ENABLER],
            call.secrets[SecretKind.LEASE_RENEW],
            call.secrets[SecretKind.LEASE_CANCEL],
            test_write_vectors,
            read_vector,
        )
        return _cbor(wire.encode_rtw_result(result))

    def _list_mutable(self, call: _Call) -> _Reply:
        return _cbor(wire.encode_share_set(self._storage.list_mutable(call.storage_index)))

    def _read_mutable(self, call: _Call) -> _Reply:
        return _read_range(call, self._storage.read_mutable)

    def _corrupt_mutable(self, call: _Call) -> _Reply:
        self._storage.advise_corrupt_mutable(call.storage_index, call.share_number, call.message)
        return _Reply(200)


def _cbor(body: bytes, code: int = 200) -> _Reply:
    return _Reply(code, body, wire.CBOR_MIME_TYPE)


def _error_reply(failure: Failure, request: server.Request) -> _Reply:
    """The answer to a request whose checks or handler failed."""
    error = failure.value
    if isinstance(error, _HTTPError):
        return _text_reply(error.code, error.message, error.headers)
    if isinstance(error, StorageError):
        return _text_reply(wire.status_for_error(error), str(error) or type(error).__name__)
    _log.failure(
        "storage request {method} {path} failed",
        failure,
        method=request.method,
        path=request.path,
    )
    return _text_reply(500, "internal error in the storage server")


def _text_reply(code: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> _Reply:
    return _Reply(code, message.encode("utf-8"), "text/plain; charset=utf-8", headers)


def _read_range(call: _Call, read: Callable[[bytes, int, int, int], bytes]) -> _Reply:
    """Serve a share read as Tahoe does: 200 whole share, 206 a range, 204 an empty range."""
    range_header = call.request.getHeader(b"range")
    si, shnum = call.storage_index, call.share_number
    if range_header is None:
        chunks = []
        offset = 0
        while True:
            chunk = read(si, shnum, offset, _READ_CHUNK)
            chunks.append(chunk)
            offset += len(chunk)
            if len(chunk) < _READ_CHUNK:
                break
        return _Reply(200, b"".join(chunks), wire.OCTET_STREAM)
    begin, end = wire.parse_range(range_header.decode("latin-1"))
    data = read(si, shnum, begin, end - begin)
    if not data:
        return _Reply(204)
    content_range = wire.format_content_range(begin, len(data))
    return _Reply(206, data, wire.OCTET_STREAM, (("Content-Range", content_range),))


_SI = r"(?P<si>[^/]+)"
_SH = r"(?P<sh>[^/]+)"
_LEASES = frozenset({SecretKind.LEASE_RENEW, SecretKind.LEASE_CANCEL})
_UPLOAD = frozenset({SecretKind.UPLOAD})
_S = StorageResource


def _p(path: str) -> re.Pattern[str]:
    return re.compile(wire.V1_PREFIX + path)


# Literal paths come before the parameterised paths they would otherwise match.
_ROUTES: tuple[_Route, ...] = (
    _Route(b"GET", _p("/version"), _S._version, responds_cbor=True),
    _Route(b"PUT", _p(f"/lease/{_SI}"), _S._renew_lease, _LEASES),
    _Route(b"GET", _p(f"/immutable/{_SI}/shares"), _S._list_immutable, responds_cbor=True),
    _Route(
        b"POST",
        _p(f"/immutable/{_SI}"),
        _S._allocate,
        _LEASES | _UPLOAD,
        "cbor",
        8192,
        wire.decode_allocate_request,
        responds_cbor=True,
    ),
    _Route(b"PUT", _p(f"/immutable/{_SI}/{_SH}/abort"), _S._abort, _UPLOAD),
    _Route(
        b"POST",
        _p(f"/immutable/{_SI}/{_SH}/corrupt"),
        _S._corrupt_immutable,
        body="cbor",
        max_body=32768,
        validate=wire.decode_corrupt_request,
    ),
    _Route(b"PATCH", _p(f"/immutable/{_SI}/{_SH}"), _S._write, _UPLOAD, "raw", responds_cbor=True),
    _Route(b"GET", _p(f"/immutable/{_SI}/{_SH}"), _S._read_immutable, raw_errors=True),
    _Route(
        b"POST",
        _p(f"/mutable/{_SI}/read-test-write"),
        _S._read_test_write,
        _LEASES | {SecretKind.WRITE_ENABLER},
        "cbor",
        validate=wire.decode_rtw_request,
        responds_cbor=True,
    ),
    _Route(b"GET", _p(f"/mutable/{_SI}/shares"), _S._list_mutable, responds_cbor=True),
    _Route(
        b"POST",
        _p(f"/mutable/{_SI}/{_SH}/corrupt"),
        _S._corrupt_mutable,
        body="cbor",
        max_body=32768,
        validate=wire.decode_corrupt_request,
    ),
    _Route(b"GET", _p(f"/mutable/{_SI}/{_SH}"), _S._read_mutable, raw_errors=True),
)


def make_storage_site(
    storage: IStorageServer,
    swissnum: bytes,
    *,
    clock: IReactorTime,
    limits: HttpLimits | None = None,
) -> LimitedSite:
    """A twisted.web ``Site`` serving the storage protocol over ``storage`` for ``swissnum``.

    ``limits`` (defaults: :class:`HttpLimits`) bound connections, request heads,
    bodies and time; ``clock`` times the deadlines.
    """
    limits = limits or HttpLimits()
    resource = StorageResource(storage, swissnum, max_body_size=limits.max_body_size)
    return LimitedSite(resource, resource, limits, clock)


async def listen_storage_on(
    endpoint: IStreamServerEndpoint,
    site: IProtocolFactory,
    credentials: TlsCredentials,
    swissnum: bytes,
    nurl_host: str,
) -> tuple[IListeningPort, str]:
    """Serve ``site`` over TLS on ``endpoint``; answer the listening port and the NURL.

    ``site`` is normally :func:`make_storage_site`'s (any protocol factory wrapping it works).
    """
    factory = TLSMemoryBIOFactory(credentials.server_options(), False, site)
    port = await endpoint.listen(factory)
    address = cast(IPv4Address | IPv6Address, port.getHost())
    return port, wire.format_nurl(credentials.spki_hash, nurl_host, address.port, swissnum)


async def listen_storage(
    reactor: Any,
    site: IProtocolFactory,
    credentials: TlsCredentials,
    swissnum: bytes,
    host: str = "127.0.0.1",
    port: int = 0,
    nurl_host: str | None = None,
) -> tuple[IListeningPort, str]:
    """Listen with TLS on ``host:port`` (0 picks a port); the NURL names ``nurl_host`` or host."""
    endpoint: IStreamServerEndpoint
    if ":" in host:
        endpoint = TCP6ServerEndpoint(reactor, port, interface=host)
    else:
        endpoint = TCP4ServerEndpoint(reactor, port, interface=host)
    return await listen_storage_on(endpoint, site, credentials, swissnum, nurl_host or host)
