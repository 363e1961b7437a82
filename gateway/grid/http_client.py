"""An :class:`IStorageClient` speaking Tahoe-LAFS's HTTP storage protocol to one NURL.

TLS is verified only by the SPKI hash pinned in the NURL (names, CAs and
validity dates are ignored, as Tahoe does). Requests go through a persistent
connection pool with a per-request timeout covering the whole exchange; the
server's refusals become :mod:`storage.errors` via :func:`storage.wire.error_for_status`,
while unreachable servers, timeouts and malformed answers become
:class:`ServerUnavailable`. Redirects are never followed (they would carry the
swissnum elsewhere). A :class:`ServerHealth` record tracks each server.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterable
from typing import Any

from attrs import evolve, field, frozen
from OpenSSL import SSL
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredSemaphore,
    TimeoutError,
    succeed,
)
from twisted.internet.interfaces import IConsumer, IOpenSSLClientConnectionCreator
from twisted.internet.ssl import CertificateOptions
from twisted.web.client import Agent, HTTPConnectionPool, ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IPolicyForHTTPS, IResponse
from zope.interface import implementer

from gateway.grid.interfaces import IStorageClient, ServerHealth, ServerUnavailable
from storage import tls, wire
from storage.errors import InvalidRequest, StorageError
from storage.interfaces import (
    AllocationResult,
    ReadTestWriteResult,
    ReadVector,
    TestWriteVectors,
    VersionInfo,
    WriteResult,
)
from storage.wire import SecretKind

DEFAULT_TIMEOUT = 60.0
MAX_IN_FLIGHT = 10
"""Requests in flight to one server at once: each has a pooled connection to itself (more
would each open, and TLS-handshake, a connection that is closed after one request)."""
DEFAULT_MAX_RESPONSE = 64 * 1024 * 1024
_MAX_ERROR_BODY = 64 * 1024


_TOLERATED_VERIFY_ERRORS = frozenset(
    {
        0,  # X509_V_OK
        9,  # certificate is not yet valid
        10,  # certificate has expired
        18,  # self-signed certificate at depth zero
        19,  # self-signed certificate in chain
    }
)


@implementer(IPolicyForHTTPS, IOpenSSLClientConnectionCreator)
class PinnedTLSPolicy:
    """Accept exactly the server whose certificate's SPKI hash is pinned; ignore the hostname."""

    def __init__(self, spki_hash: str) -> None:
        self._spki_hash = spki_hash.encode("ascii")
        self._context: SSL.Context | None = None

    def creatorForNetloc(self, hostname: bytes, port: int) -> PinnedTLSPolicy:
        """Every host gets the same pinning connection creator."""
        return self

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        """A client TLS connection that verifies the peer only by its pinned key."""
        if self._context is None:
            context = CertificateOptions().getContext()
            context.set_verify(SSL.VERIFY_PEER, self._verify)
            self._context = context
        return SSL.Connection(self._context, None)

    def _verify(
        self, connection: SSL.Connection, certificate: Any, errno: int, depth: int, ok: int
    ) -> bool:
        if errno not in _TOLERATED_VERIFY_ERRORS:
            return False
        actual = tls.spki_hash(certificate.to_cryptography()).encode("ascii")
        return hmac.compare_digest(actual, self._spki_hash)


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body already in memory, written in one piece."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        """Nothing to pause: the body is written at once."""

    def resumeProducing(self) -> None:
        """Nothing to resume."""

    def stopProducing(self) -> None:
        """Nothing to stop."""


class _TooLarge(Exception):
    """A response body exceeded what the request could legitimately return."""


@frozen
class _Answer:
    """A complete HTTP response: status, headers, body."""

    code: int
    headers: Headers
    body: bytes = field(repr=False)

    def content_type(self) -> str | None:
        values = self.headers.getRawHeaders(b"content-type")
        if not values:
            return None
        return values[0].decode("latin-1").split(";")[0].strip().lower()


async def _collect(response: IResponse, limit: int) -> bytes:
    """Read a response body, failing once it exceeds ``limit`` bytes (no quadratic copying)."""
    import treq

    chunks: list[bytes] = []
    size = 0

    def collect(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > limit:
            raise _TooLarge(f"response larger than {limit} bytes")
        chunks.append(data)

    await treq.collect(response, collect)
    return b"".join(chunks)


def _timed_out(result: object, timeout: float) -> None:
    """Whatever cancelling produced (often a wrapped CancelledError), report a timeout."""
    raise TimeoutError(f"no answer within {timeout:g}s")


def _describe(error: BaseException) -> str:
    """A short, secret-free description of a transport failure."""
    reasons = getattr(error, "reasons", None)
    if reasons:
        inner = [r.value for r in reasons]
        if any(isinstance(e, SSL.Error) for e in inner):
            return "TLS handshake failed (the server's key does not match the NURL's pin?)"
        return "; ".join(type(e).__name__ + (f": {e}" if str(e) else "") for e in inner)[:300]
    if isinstance(error, ResponseNeverReceived):
        return "connection lost before a response"
    return (type(error).__name__ + (f": {error}" if str(error) else ""))[:300]


@implementer(IStorageClient)
class HttpStorageClient:
    """One Tahoe-LAFS HTTP storage server (ours or Tahoe's), addressed by its NURL."""

    def __init__(
        self,
        reactor: Any,
        nurl: wire.Nurl,
        *,
        pool: HTTPConnectionPool | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        nickname: str | None = None,
        max_response_size: int = DEFAULT_MAX_RESPONSE,
        agent: IAgent | None = None,
    ) -> None:
        """``agent`` carries the requests instead of a pinning TLS agent (tests run in memory)."""
        self._reactor = reactor
        self._nurl = nurl
        self._timeout = timeout
        self._max_response = max_response_size
        self._owns_pool = pool is None
        if pool is None:
            pool = HTTPConnectionPool(reactor, persistent=True)
            pool.maxPersistentPerHost = MAX_IN_FLIGHT
        self._pool = pool
        self._slots = DeferredSemaphore(MAX_IN_FLIGHT)
        if agent is None:
            agent = Agent(reactor, contextFactory=PinnedTLSPolicy(nurl.spki_hash), pool=pool)
        self._agent = agent
        host = f"[{nurl.host}]" if ":" in nurl.host else nurl.host
        self._base = f"https://{host}:{nurl.port}".encode("ascii")
        self._auth = wire.format_authorization(nurl.swissnum)
        self.server_id: bytes = nurl.spki_digest
        self.nickname: str = nickname or f"{nurl.host}:{nurl.port}"
        self._health = ServerHealth()

    @classmethod
    def from_nurl(cls, reactor: Any, nurl: str, **kwargs: Any) -> HttpStorageClient:
        """A client for the server at ``nurl`` (``pb://<spki-hash>@host:port/<swissnum>#v=1``)."""
        return cls(reactor, wire.parse_nurl(nurl), **kwargs)

    def __repr__(self) -> str:
        return f"<HttpStorageClient {self.nickname}>"

    @property
    def health(self) -> ServerHealth:
        """The latest health record of this server (see :class:`IStorageClient`)."""
        return self._health

    async def close(self) -> None:
        """Close idle pooled connections, when this client created the pool.

        A pool passed in belongs to the caller, who closes it. The pool stays usable.
        """
        if self._owns_pool:
            await self._pool.closeCachedConnections()

    # --- the exchange ----------------------------------------------------------------

    async def _exchange(
        self,
        method: bytes,
        path: str,
        *,
        secrets: Iterable[tuple[SecretKind, bytes]] = (),
        body: bytes | None = None,
        content_type: str | None = None,
        extra_headers: dict[bytes, bytes] | None = None,
        limit: int | None = None,
    ) -> _Answer:
        """Send one request; answer the response or raise ServerUnavailable."""
        headers = Headers({b"Authorization": [self._auth], b"Accept": [b"application/cbor"]})
        secret_values = []
        for kind, value in secrets:
            headers.addRawHeader(b"X-Tahoe-Authorization", wire.format_secret(kind, value))
            secret_values.append(value)
        if content_type is not None:
            headers.addRawHeader(b"Content-Type", content_type.encode("ascii"))
        for name, value in (extra_headers or {}).items():
            headers.addRawHeader(name, value)
        producer = None if body is None else _BytesProducer(body)
        url = self._base + path.encode("ascii")
        started = self._reactor.seconds()

        async def run() -> _Answer:
            response = await self._agent.request(method, url, headers, producer)
            if response.code >= 300:
                cap = _MAX_ERROR_BODY
            else:
                cap = self._max_response if limit is None else limit
            data = await _collect(response, cap)
            return _Answer(response.code, response.headers, data)

        await self._slots.acquire()
        attempt = Deferred.fromCoroutine(run())
        attempt.addTimeout(self._timeout, self._reactor, onTimeoutCancel=_timed_out)
        try:
            answer = await attempt
        except (TimeoutError, CancelledError):
            raise self._unavailable(f"no answer within {self._timeout:g}s") from None
        except _TooLarge as e:
            raise self._unavailable(str(e)) from None
        except Exception as e:
            raise self._unavailable(_describe(e)) from None
        finally:
            self._slots.release()
        self._health = evolve(
            self._health,
            connected=True,
            last_latency=self._reactor.seconds() - started,
            last_contact=self._reactor.seconds(),
        )
        if answer.code >= 400:
            raise self._refusal(method, path, answer, secret_values)
        return answer

    def _unavailable(self, message: str) -> ServerUnavailable:
        self._health = evolve(self._health, connected=False, last_error=message)
        return ServerUnavailable(f"storage server {self.nickname}: {message}")

    def _refusal(
        self, method: bytes, path: str, answer: _Answer, secret_values: list[bytes]
    ) -> Exception:
        detail = answer.body[:300].decode("utf-8", "replace").strip()
        forbidden = [self._nurl.swissnum, self._auth]
        for value in secret_values:
            forbidden += [value, base64.b64encode(value)]
        if any(s.decode("latin-1") in detail for s in forbidden if s):
            detail = ""
        message = f"{self.nickname}: {method.decode()} {path} answered {answer.code}"
        message += f": {detail}" if detail else ""
        error = wire.error_for_status(answer.code, message)
        if error is None:
            return self._unavailable(message)
        return error

    def _garbage(self, what: str) -> ServerUnavailable:
        return self._unavailable(f"malformed answer: {what}")

    async def _cbor(self, method: bytes, path: str, **kwargs: Any) -> tuple[int, Any]:
        answer = await self._exchange(method, path, **kwargs)
        if answer.content_type() != wire.CBOR_MIME_TYPE:
            raise self._garbage(f"expected CBOR, got {answer.content_type()}")
        try:
            return answer.code, wire.cbor_loads(answer.body)
        except wire.MalformedMessage as e:
            raise self._garbage(str(e)) from None

    def _decode(self, decoder: Any, value: Any, *args: Any) -> Any:
        try:
            return decoder(value, *args)
        except wire.MalformedMessage as e:
            raise self._garbage(str(e)) from None

    # --- IStorageClient ----------------------------------------------------------------

    async def get_version(self) -> VersionInfo:
        """Ask the server for its limits and available space."""
        _, value = await self._cbor(b"GET", "/storage/v1/version")
        info: VersionInfo = self._decode(wire.decode_version, value)
        self._health = evolve(self._health, available_space=info.available_space)
        return info

    async def add_or_renew_lease(
        self, storage_index: bytes, renew_secret: bytes, cancel_secret: bytes
    ) -> None:
        """Renew or add a lease on every share of the index."""
        await self._exchange(
            b"PUT",
            f"/storage/v1/lease/{wire.si_b2a(storage_index)}",
            secrets=[
                (SecretKind.LEASE_RENEW, renew_secret),
                (SecretKind.LEASE_CANCEL, cancel_secret),
            ],
        )

    async def allocate_buckets(
        self,
        storage_index: bytes,
        share_numbers: frozenset[int],
        allocated_size: int,
        upload_secret: bytes,
        renew_secret: bytes,
        cancel_secret: bytes,
    ) -> AllocationResult:
        """Open immutable shares for writing."""
        _, value = await self._cbor(
            b"POST",
            f"/storage/v1/immutable/{wire.si_b2a(storage_index)}",
            secrets=[
                (SecretKind.LEASE_RENEW, renew_secret),
                (SecretKind.LEASE_CANCEL, cancel_secret),
                (SecretKind.UPLOAD, upload_secret),
            ],
            body=wire.encode_allocate_request(share_numbers, allocated_size),
            content_type=wire.CBOR_MIME_TYPE,
        )
        result: AllocationResult = self._decode(wire.decode_allocation, value)
        return result

    async def write_immutable(
        self,
        storage_index: bytes,
        share_number: int,
        upload_secret: bytes,
        offset: int,
        data: bytes,
    ) -> WriteResult:
        """Write a chunk of an allocated immutable share (``data`` must not be empty)."""
        if not data:
            raise InvalidRequest("an immutable write needs at least one byte")
        code, value = await self._cbor(
            b"PATCH",
            f"/storage/v1/immutable/{wire.si_b2a(storage_index)}/{share_number}",
            secrets=[(SecretKind.UPLOAD, upload_secret)],
            body=data,
            content_type=wire.OCTET_STREAM,
            extra_headers={
                b"Content-Range": wire.format_content_range(offset, len(data)).encode("ascii")
            },
        )
        if code not in (200, 201):
            raise self._garbage(f"unexpected status {code} for a write")
        result: WriteResult = self._decode(wire.decode_write_progress, value, code == 201)
        return result

    async def abort_immutable(
        self, storage_index: bytes, share_number: int, upload_secret: bytes
    ) -> None:
        """Discard an incomplete immutable upload."""
        await self._exchange(
            b"PUT",
            f"/storage/v1/immutable/{wire.si_b2a(storage_index)}/{share_number}/abort",
            secrets=[(SecretKind.UPLOAD, upload_secret)],
        )

    async def list_immutable(self, storage_index: bytes) -> frozenset[int]:
        """Complete immutable shares held for the index."""
        return await self._list("immutable", storage_index)

    async def read_immutable(
        self, storage_index: bytes, share_number: int, offset: int, length: int
    ) -> bytes:
        """Read a byte range of an immutable share (clamped at its end)."""
        return await self._read("immutable", storage_index, share_number, offset, length)

    async def advise_corrupt_immutable(
        self, storage_index: bytes, share_number: int, reason: str
    ) -> None:
        """Tell the server one of its immutable shares is corrupt."""
        await self._advise("immutable", storage_index, share_number, reason)

    async def read_test_write(
        self,
        storage_index: bytes,
        write_enabler: bytes,
        renew_secret: bytes,
        cancel_secret: bytes,
        test_write_vectors: dict[int, TestWriteVectors],
        read_vector: tuple[ReadVector, ...],
    ) -> ReadTestWriteResult:
        """Atomic read, test and write on a mutable slot."""
        _, value = await self._cbor(
            b"POST",
            f"/storage/v1/mutable/{wire.si_b2a(storage_index)}/read-test-write",
            secrets=[
                (SecretKind.LEASE_RENEW, renew_secret),
                (SecretKind.LEASE_CANCEL, cancel_secret),
                (SecretKind.WRITE_ENABLER, write_enabler),
            ],
            body=wire.encode_rtw_request(test_write_vectors, read_vector),
            content_type=wire.CBOR_MIME_TYPE,
        )
        result: ReadTestWriteResult = self._decode(wire.decode_rtw_result, value)
        return result

    async def list_mutable(self, storage_index: bytes) -> frozenset[int]:
        """Shares of a mutable slot."""
        return await self._list("mutable", storage_index)

    async def read_mutable(
        self, storage_index: bytes, share_number: int, offset: int, length: int
    ) -> bytes:
        """Read a byte range of a mutable share."""
        return await self._read("mutable", storage_index, share_number, offset, length)

    async def advise_corrupt_mutable(
        self, storage_index: bytes, share_number: int, reason: str
    ) -> None:
        """Tell the server one of its mutable shares is corrupt."""
        await self._advise("mutable", storage_index, share_number, reason)

    # --- shared by both share types ----------------------------------------------------

    async def _list(self, kind: str, storage_index: bytes) -> frozenset[int]:
        _, value = await self._cbor(
            b"GET", f"/storage/v1/{kind}/{wire.si_b2a(storage_index)}/shares"
        )
        shares: frozenset[int] = self._decode(wire.decode_share_set, value)
        return shares

    async def _read(
        self, kind: str, storage_index: bytes, share_number: int, offset: int, length: int
    ) -> bytes:
        if offset < 0 or length < 0:
            raise InvalidRequest("read offsets and lengths are non-negative")
        if length == 0:
            return b""
        answer = await self._exchange(
            b"GET",
            f"/storage/v1/{kind}/{wire.si_b2a(storage_index)}/{share_number}",
            extra_headers={b"Range": wire.format_range(offset, length).encode("ascii")},
            limit=length,
        )
        if answer.code == 204:
            return b""
        if answer.code != 206 or answer.content_type() != wire.OCTET_STREAM:
            raise self._garbage(f"a range read answered {answer.code} {answer.content_type()}")
        content_range = answer.headers.getRawHeaders(b"content-range")
        try:
            if not content_range:
                raise StorageError("no Content-Range")
            begin, end = wire.parse_content_range(content_range[0].decode("latin-1"))
        except StorageError:
            raise self._garbage("missing or invalid Content-Range") from None
        if begin != offset or end - begin > length or end - begin != len(answer.body):
            raise self._garbage("Content-Range does not match the request or the body")
        return answer.body

    async def _advise(
        self, kind: str, storage_index: bytes, share_number: int, reason: str
    ) -> None:
        await self._exchange(
            b"POST",
            f"/storage/v1/{kind}/{wire.si_b2a(storage_index)}/{share_number}/corrupt",
            body=wire.encode_corrupt_request(reason),
            content_type=wire.CBOR_MIME_TYPE,
        )
