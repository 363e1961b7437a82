"""The wire format of Tahoe-LAFS's HTTP storage protocol, shared by our server and client.

Everything both sides must agree on byte for byte lives here: NURLs, base32
storage indexes, the ``Authorization`` and ``X-Tahoe-Authorization`` headers,
``Range`` and ``Content-Range`` headers, and the one table mapping
:mod:`storage.errors` to HTTP status codes. The CBOR request and response
bodies of every endpoint (and their validators, which mirror Tahoe 1.20's CDDL
schemas) are :mod:`storage.wire_bodies`'s; this module re-exports their names,
so callers find the whole wire format here.

Where Tahoe's code and its specification differ, this module follows the code
(Tahoe 1.20 ``allmydata/storage/http_server.py`` and ``http_client.py``).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
import os
import re
from collections.abc import Iterable, Mapping

from attrs import field, frozen

from storage import base32
from storage.errors import (
    ConflictingWrite,
    InvalidRequest,
    NoSpace,
    NoSuchShare,
    NoSuchUpload,
    NotAuthorized,
    RangeNotSatisfiable,
    StorageError,
)
from storage.wire_bodies import (
    MAX_SHARE_NUMBER,
    MalformedMessage,
    cbor_dumps,
    cbor_loads,
    decode_allocate_request,
    decode_allocation,
    decode_corrupt_request,
    decode_rtw_request,
    decode_rtw_result,
    decode_share_set,
    decode_version,
    decode_write_progress,
    encode_allocate_request,
    encode_allocation,
    encode_corrupt_request,
    encode_rtw_request,
    encode_rtw_result,
    encode_share_set,
    encode_version,
    encode_write_progress,
)

__all__ = [
    "CBOR_MIME_TYPE",
    "MAX_SHARE_NUMBER",
    "OCTET_STREAM",
    "STATUS_FOR_ERROR",
    "V1_PREFIX",
    "BadSecrets",
    "InvalidNurl",
    "MalformedMessage",
    "Nurl",
    "SecretKind",
    "cbor_dumps",
    "cbor_loads",
    "check_authorization",
    "decode_allocate_request",
    "decode_allocation",
    "decode_corrupt_request",
    "decode_rtw_request",
    "decode_rtw_result",
    "decode_share_set",
    "decode_version",
    "decode_write_progress",
    "encode_allocate_request",
    "encode_allocation",
    "encode_corrupt_request",
    "encode_rtw_request",
    "encode_rtw_result",
    "encode_share_set",
    "encode_version",
    "encode_write_progress",
    "error_for_status",
    "format_authorization",
    "format_content_range",
    "format_nurl",
    "format_range",
    "format_secret",
    "new_swissnum",
    "parse_content_range",
    "parse_nurl",
    "parse_range",
    "parse_secrets",
    "parse_share_number",
    "si_a2b",
    "si_b2a",
    "status_for_error",
]

CBOR_MIME_TYPE = "application/cbor"
OCTET_STREAM = "application/octet-stream"
V1_PREFIX = "/storage/v1"


# --- errors -> status codes, the one place -------------------------------------------

STATUS_FOR_ERROR: Mapping[type[StorageError], int] = {
    InvalidRequest: 400,
    NotAuthorized: 401,
    NoSuchShare: 404,
    NoSuchUpload: 405,
    ConflictingWrite: 409,
    RangeNotSatisfiable: 416,
    NoSpace: 507,
}


def status_for_error(error: StorageError) -> int:
    """The HTTP status code the server answers for a core error."""
    for cls in type(error).__mro__:
        if cls in STATUS_FOR_ERROR:
            return STATUS_FOR_ERROR[cls]
    return 500


def error_for_status(code: int, detail: str) -> StorageError | None:
    """The core error a client raises for an error status, or None if the server failed.

    Status codes the table does not name but that still blame the request
    (413, 415, 406, other 4xx) become :class:`InvalidRequest`.
    """
    for cls, status in STATUS_FOR_ERROR.items():
        if status == code:
            return cls(detail)
    if 400 <= code < 500:
        return InvalidRequest(detail)
    return None


# --- NURLs ------------------------------------------------------------------------------

_SPKI_HASH = r"[A-Za-z0-9_-]{43}"
_SWISSNUM = r"[A-Za-z0-9._~-]{1,200}"
_NURL_RE = re.compile(
    rf"^(?P<scheme>pb)://(?P<spki>{_SPKI_HASH})@"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})"
    rf"/(?P<swissnum>{_SWISSNUM})#v=1$"
)


class InvalidNurl(ValueError):
    """A NURL is not an HTTP storage NURL (``pb://<spki-hash>@host:port/<swissnum>#v=1``)."""


@frozen
class Nurl:
    """The address of one HTTP storage server: TLS key pin, location and swissnum.

    ``spki_hash`` is Tahoe's unpadded URL-safe base64 of SHA-256 over the DER
    SubjectPublicKeyInfo; the swissnum is the NURL's path segment as ASCII bytes
    (clients send base64 of exactly these bytes).
    """

    spki_hash: str
    host: str
    port: int
    swissnum: bytes = field(repr=False)

    def to_text(self) -> str:
        """The NURL as Tahoe writes it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        swissnum = self.swissnum.decode("ascii")
        return f"pb://{self.spki_hash}@{host}:{self.port}/{swissnum}#v=1"

    @property
    def spki_digest(self) -> bytes:
        """The raw 32-byte SHA-256 digest the SPKI hash encodes."""
        return base64.urlsafe_b64decode(self.spki_hash + "=")


def parse_nurl(text: str) -> Nurl:
    """Parse an HTTP storage NURL; raises :class:`InvalidNurl` (message without the swissnum)."""
    match = _NURL_RE.match(text.strip())
    if match is None:
        raise InvalidNurl("not an HTTP storage NURL (pb://<spki-hash>@host:port/<swissnum>#v=1)")
    port = int(match["port"])
    if not 0 < port < 65536:
        raise InvalidNurl(f"NURL port {port} out of range")
    host = match["host"].strip("[]")
    return Nurl(match["spki"], host, port, match["swissnum"].encode("ascii"))


def format_nurl(spki_hash: str, host: str, port: int, swissnum: bytes) -> str:
    """Build the NURL text for a server (validated by parsing it back)."""
    text = Nurl(spki_hash, host, port, swissnum).to_text()
    parse_nurl(text)
    return text


def new_swissnum() -> bytes:
    """A fresh random swissnum: 32 random bytes as 52 lowercase base32 characters."""
    return base32.b2a(os.urandom(32)).encode("ascii")


# --- storage indexes and share numbers -------------------------------------------------

_SI_RE = re.compile(r"^[a-z2-7]{26}$")


def si_b2a(storage_index: bytes) -> str:
    """Encode a 16-byte storage index as Tahoe does: 26 lowercase base32 characters."""
    if len(storage_index) != 16:
        raise InvalidRequest("a storage index is 16 bytes")
    return base32.b2a(storage_index)


def si_a2b(text: str) -> bytes:
    """Decode a storage index from a URL path; raises :class:`InvalidRequest` unless canonical."""
    if not _SI_RE.match(text):
        raise InvalidRequest("a storage index is 26 lowercase base32 characters")
    try:
        return base32.a2b(text)
    except ValueError:
        raise InvalidRequest("storage index is not canonically encoded") from None


def parse_share_number(text: str) -> int:
    """Parse a decimal share number from a URL path (0..255), else :class:`InvalidRequest`."""
    if not re.fullmatch(r"[0-9]{1,3}", text) or int(text) > MAX_SHARE_NUMBER:
        raise InvalidRequest("a share number is a decimal integer from 0 to 255")
    return int(text)


# --- Authorization headers -------------------------------------------------------------


class SecretKind(enum.Enum):
    """The kinds of secret carried by ``X-Tahoe-Authorization`` headers."""

    LEASE_RENEW = "lease-renew-secret"
    LEASE_CANCEL = "lease-cancel-secret"
    UPLOAD = "upload-secret"
    WRITE_ENABLER = "write-enabler"


_SECRET_LENGTHS: Mapping[SecretKind, tuple[int, int]] = {
    SecretKind.LEASE_RENEW: (32, 32),
    SecretKind.LEASE_CANCEL: (32, 32),
    SecretKind.UPLOAD: (1, 64),
    SecretKind.WRITE_ENABLER: (1, 64),
}


class BadSecrets(ValueError):
    """``X-Tahoe-Authorization`` headers are missing, extra, duplicated or malformed (400)."""


def format_authorization(swissnum: bytes) -> bytes:
    """The ``Authorization`` header value for a swissnum."""
    return b"Tahoe-LAFS " + base64.b64encode(swissnum)


def check_authorization(header: bytes | None, swissnum: bytes) -> bool:
    """Whether an ``Authorization`` header carries the swissnum (constant time)."""
    return header is not None and hmac.compare_digest(header, format_authorization(swissnum))


def format_secret(kind: SecretKind, value: bytes) -> bytes:
    """One ``X-Tahoe-Authorization`` header value."""
    return kind.value.encode("ascii") + b" " + base64.b64encode(value)


def parse_secrets(
    values: Iterable[bytes], required: frozenset[SecretKind]
) -> dict[SecretKind, bytes]:
    """Decode ``X-Tahoe-Authorization`` values; exactly ``required`` must be present.

    Several secrets may share one header line, comma-separated (RFC 9110 lets
    intermediaries combine repeated fields that way; base64 has no commas).
    Raises :class:`BadSecrets` with a message naming kinds, never values.
    """
    by_name = {k.value: k for k in SecretKind}
    result: dict[SecretKind, bytes] = {}
    for raw in (part for line in values for part in line.split(b",")):
        name, _, encoded = raw.strip().partition(b" ")
        kind = by_name.get(name.decode("ascii", "replace"))
        if kind is None:
            raise BadSecrets("unknown kind of secret in X-Tahoe-Authorization")
        if kind in result:
            raise BadSecrets(f"{kind.value} sent more than once")
        try:
            value = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise BadSecrets(f"{kind.value} is not base64") from None
        low, high = _SECRET_LENGTHS[kind]
        if not low <= len(value) <= high:
            raise BadSecrets(f"{kind.value} must be {low}..{high} bytes")
        result[kind] = value
    if result.keys() != required:
        wanted = sorted(k.value for k in required)
        raise BadSecrets(f"expected exactly these secrets: {', '.join(wanted) or 'none'}")
    return result


# --- Range and Content-Range -------------------------------------------------------------

_RANGE_RE = re.compile(r"^bytes=([0-9]{1,19})-([0-9]{1,19})$")
_CONTENT_RANGE_RE = re.compile(r"^bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)$")


def format_range(offset: int, length: int) -> str:
    """``Range`` header for ``length`` (≥1) bytes at ``offset`` (HTTP ranges are inclusive)."""
    if offset < 0 or length < 1:
        raise ValueError("a Range covers at least one byte")
    return f"bytes={offset}-{offset + length - 1}"


def parse_range(value: str) -> tuple[int, int]:
    """Parse the only ``Range`` Tahoe uses (one closed byte range) into ``(begin, end)`` half-open.

    Raises :class:`RangeNotSatisfiable` for anything else, as Tahoe answers 416.
    """
    match = _RANGE_RE.match(value.strip())
    if match is None or int(match[2]) < int(match[1]):
        raise RangeNotSatisfiable("only a single closed byte range is supported")
    return int(match[1]), int(match[2]) + 1


def format_content_range(offset: int, length: int, total: int | None = None) -> str:
    """``Content-Range`` for ``length`` (≥1) bytes at ``offset``; total ``*`` when unknown."""
    if offset < 0 or length < 1:
        raise ValueError("a Content-Range covers at least one byte")
    return f"bytes {offset}-{offset + length - 1}/{'*' if total is None else total}"


def parse_content_range(value: str) -> tuple[int, int]:
    """Parse ``bytes a-b/total`` (or ``/*``) into ``(begin, end)`` half-open.

    Raises :class:`RangeNotSatisfiable` when unparseable or inconsistent.
    """
    match = _CONTENT_RANGE_RE.match(value.strip())
    if match is None:
        raise RangeNotSatisfiable("Content-Range must be 'bytes first-last/total'")
    begin, end = int(match[1]), int(match[2]) + 1
    total = None if match[3] == "*" else int(match[3])
    if end <= begin or (total is not None and end > total):
        raise RangeNotSatisfiable("Content-Range is inconsistent")
    return begin, end


def accepts_cbor(accept: bytes | None) -> bool:
    """Whether an ``Accept`` header admits ``application/cbor`` (absent means yes)."""
    if accept is None:
        return True
    for item in accept.decode("latin-1").split(","):
        media, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0 and media.lower() in ("application/cbor", "application/*", "*/*"):
            return True
    return False


def media_type(value: bytes | None) -> str | None:
    """The media type of a ``Content-Type`` header, lowercased, parameters dropped."""
    if value is None:
        return None
    return value.decode("latin-1").split(";")[0].strip().lower() or None
