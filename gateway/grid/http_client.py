"""An :class:`IStorageClient` speaking Tahoe-LAFS's HTTP storage protocol to one NURL.

TLS is verified only by the SPKI hash pinned in the NURL (names, CAs and
validity dates are ignored, as Tahoe does; that and the rest of the HTTPS
plumbing are :mod:`gateway.grid.http_transport`'s). Requests go through a
persistent connection pool with a per-request timeout covering the whole
exchange; the server's refusals become :mod:`storage.errors` via
:func:`storage.wire.error_for_status`, while unreachable servers, timeouts and
malformed answers become
:class:`ServerUnavailable`. Redirects are never followed (they would carry the
swissnum elsewhere). A :class:`ServerHealth` record tracks each server.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from attrs import evolve
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredSemaphore,
    TimeoutError,
)
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent
from zope.interface import implementer

from gateway.grid.http_transport import (
    Answer,
    BytesProducer,
    PinnedTLSPolicy,
    ResponseTooLarge,
    collect_body,
    describe_failure,
    timed_out,
)
from gateway.grid.interfaces import IStorageClient, ServerHealth, ServerUnavailable
from gateway.intents.turns import turn
from storage import wire
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
IDLE_CONNECTION_TIMEOUT = 50
"""Seconds a pooled connection may idle: less than storage servers keep idle ones open."""
_MAX_ERROR_BODY = 64 * 1024


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
            # Give up idle connections before servers do (ours after 60 s, nginx 75 s):
            # a POST sent as the server closes would fail, and is not retried.
            pool.cachedConnectionTimeout = IDLE_CONNECTION_TIMEOUT
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
    ) -> Answer:
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
        producer = None if body is None else BytesProducer(body)
        url = self._base + path.encode("ascii")
        started = self._reactor.seconds()

        async def run() -> Answer:
            response = await self._agent.request(method, url, headers, producer)
            if response.code >= 300:
                cap = _MAX_ERROR_BODY
            else:
                cap = self._max_response if limit is None else limit
            data = await collect_body(response, cap)
            return Answer(response.code, response.headers, data)

        # Background work (an upload, a publish) waits its turn while clients are busy.
        await turn(len(body or b"") + (limit or 0))
        await self._slots.acquire()
        attempt = Deferred.fromCoroutine(run())
        attempt.addTimeout(self._timeout, self._reactor, onTimeoutCancel=timed_out)
        try:
            answer = await attempt
        except (TimeoutError, CancelledError):
            raise self._unavailable(f"no answer within {self._timeout:g}s") from None
        except ResponseTooLarge as e:
            raise self._unavailable(str(e)) from None
        except Exception as e:
            raise self._unavailable(describe_failure(e)) from None
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
        self, method: bytes, path: str, answer: Answer, secret_values: list[bytes]
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
