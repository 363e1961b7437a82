"""The HTTPS plumbing under :class:`gateway.grid.http_client.HttpStorageClient`.

TLS verified only by the SPKI hash pinned in a NURL (names, CAs and validity
dates are ignored, as Tahoe does); a request body already in memory; a complete
response, read with a size limit; and the secret-free descriptions of transport
failures. What the requests and responses mean is the client's.
"""

from __future__ import annotations

import hmac
from typing import Any

from attrs import field, frozen
from OpenSSL import SSL
from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.internet.interfaces import IConsumer, IOpenSSLClientConnectionCreator
from twisted.internet.ssl import CertificateOptions
from twisted.web.client import ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IPolicyForHTTPS, IResponse
from zope.interface import implementer

from storage import tls

__all__ = [
    "Answer",
    "BytesProducer",
    "PinnedTLSPolicy",
    "ResponseTooLarge",
    "collect_body",
    "describe_failure",
    "timed_out",
]


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
class BytesProducer:
    """A request body already in memory, written in one piece.

    It lets go of the body once written: Twisted's HTTP client keeps each request (and so
    its producer) in reference cycles with its parser and response that only the garbage
    collector frees. Holding the body, a 256 MiB upload to a 3-of-5 grid kept about 300
    shares' bytes (95 MiB) alive between collections, and the gateway's RSS stayed at
    250 MiB after it.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        """Write the whole body to ``consumer`` at once (a body is produced once: the
        client never retries a request that has one)."""
        data, self._data = self._data, b""
        consumer.write(data)
        return succeed(None)

    def pauseProducing(self) -> None:
        """Nothing to pause: the body is written at once."""

    def resumeProducing(self) -> None:
        """Nothing to resume."""

    def stopProducing(self) -> None:
        """Nothing to stop; the body is let go."""
        self._data = b""


class ResponseTooLarge(Exception):
    """A response body exceeded what the request could legitimately return."""


@frozen
class Answer:
    """A complete HTTP response: status, headers, body."""

    code: int
    headers: Headers
    body: bytes = field(repr=False)

    def content_type(self) -> str | None:
        """The media type of the body, lower-cased and without parameters (None if unsent)."""
        values = self.headers.getRawHeaders(b"content-type")
        if not values:
            return None
        return values[0].decode("latin-1").split(";")[0].strip().lower()


async def collect_body(response: IResponse, limit: int) -> bytes:
    """Read a response body, failing once it exceeds ``limit`` bytes (no quadratic copying).

    The pieces are let go once joined: the collecting protocol stays in the response's
    reference cycles (see :class:`BytesProducer`) until the garbage collector runs.
    """
    import treq

    chunks: list[bytes] = []
    size = 0

    def collect(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > limit:
            raise ResponseTooLarge(f"response larger than {limit} bytes")
        chunks.append(data)

    try:
        await treq.collect(response, collect)
        return b"".join(chunks)
    finally:
        chunks.clear()


def timed_out(result: object, timeout: float) -> None:
    """Whatever cancelling produced (often a wrapped CancelledError), report a timeout."""
    raise TimeoutError(f"no answer within {timeout:g}s")


def describe_failure(error: BaseException) -> str:
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
