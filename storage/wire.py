"""The wire format of Tahoe-LAFS's HTTP storage protocol, shared by our server and client.

Everything both sides must agree on byte for byte lives here: NURLs, base32
storage indexes, the ``Authorization`` and ``X-Tahoe-Authorization`` headers,
CBOR with sets as tag 258, the request and response bodies of every endpoint
(validated by hand-written validators that mirror Tahoe 1.20's CDDL schemas:
no extra keys, ``uint`` excludes booleans, the same size limits), ``Range`` and
``Content-Range`` headers, and the one table mapping :mod:`storage.errors` to
HTTP status codes.

Where Tahoe's code and its specification differ, this module follows the code
(Tahoe 1.20 ``allmydata/storage/http_server.py`` and ``http_client.py``).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
import io
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import cbor2
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
from storage.interfaces import (
    AllocationResult,
    ByteRange,
    ReadTestWriteResult,
    ReadVector,
    TestVector,
    TestWriteVectors,
    VersionInfo,
    WriteResult,
    WriteVector,
)

CBOR_MIME_TYPE = "application/cbor"
OCTET_STREAM = "application/octet-stream"
V1_PREFIX = "/storage/v1"
MAX_SHARE_NUMBER = 255
_V1_KEY = b"http://allmydata.org/tahoe/protocols/storage/v1"

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


# --- CBOR --------------------------------------------------------------------------------


class MalformedMessage(ValueError):
    """A CBOR body could not be decoded or does not match its endpoint's schema (400)."""


def cbor_dumps(value: object) -> bytes:
    """Encode a message as Tahoe does: sets (and frozensets) become tag 258 arrays."""
    return cbor2.dumps(value)


def cbor_loads(data: bytes) -> Any:
    """Decode exactly one CBOR item (tag 258 → frozenset); raises :class:`MalformedMessage`."""
    stream = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(stream, max_depth=16, allow_duplicate_keys=False)
        value = decoder.decode()
    except (cbor2.CBORDecodeError, RecursionError, ValueError, TypeError, OverflowError) as e:
        raise MalformedMessage(f"malformed CBOR: {e}") from None
    if stream.tell() != len(data):
        raise MalformedMessage("trailing bytes after the CBOR message")
    return _freeze_sets(value)


def _freeze_sets(value: Any) -> Any:
    if isinstance(value, set):
        return frozenset(value)
    return value


def _map(value: Any, keys: frozenset[Any], what: str) -> dict[Any, Any]:
    if not isinstance(value, dict) or set(value) != keys:
        raise MalformedMessage(f"{what} must be a map with keys {sorted(map(str, keys))}")
    return value


def _uint(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise MalformedMessage(f"{what} must be an unsigned integer")
    return value


def _bstr(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise MalformedMessage(f"{what} must be a byte string")
    return value


def _list(value: Any, what: str, max_items: int | None = None) -> list[Any]:
    if not isinstance(value, list) or (max_items is not None and len(value) > max_items):
        limit = "" if max_items is None else f" of at most {max_items} items"
        raise MalformedMessage(f"{what} must be an array{limit}")
    return value


def _share_set(value: Any, what: str) -> frozenset[int]:
    value = _freeze_sets(value)
    if not isinstance(value, frozenset) or len(value) > 256:
        raise MalformedMessage(f"{what} must be a set (tag 258) of at most 256 share numbers")
    shares = frozenset(_uint(v, what) for v in value)
    if any(s > MAX_SHARE_NUMBER for s in shares):
        raise MalformedMessage(f"{what}: share numbers are 0..255")
    return shares


# Request bodies (client encodes, server validates) -----------------------------------


def encode_allocate_request(share_numbers: frozenset[int], allocated_size: int) -> bytes:
    """Body of ``POST /storage/v1/immutable/:si``."""
    return cbor_dumps({"share-numbers": set(share_numbers), "allocated-size": allocated_size})


def decode_allocate_request(value: Any) -> tuple[frozenset[int], int]:
    """Validate an allocation request: ``{share-numbers: #6.258([0*256 uint]), allocated-size}``."""
    body = _map(value, frozenset({"share-numbers", "allocated-size"}), "allocation request")
    return _share_set(body["share-numbers"], "share-numbers"), _uint(
        body["allocated-size"], "allocated-size"
    )


def encode_corrupt_request(reason: str) -> bytes:
    """Body of the two ``.../corrupt`` endpoints."""
    return cbor_dumps({"reason": reason})


def decode_corrupt_request(value: Any) -> str:
    """Validate ``{reason: tstr .size (1..32765)}`` (size in UTF-8 bytes)."""
    reason = _map(value, frozenset({"reason"}), "corruption advice")["reason"]
    if not isinstance(reason, str) or not 1 <= len(reason.encode("utf-8")) <= 32765:
        raise MalformedMessage("reason must be text of 1..32765 bytes")
    return reason


def encode_rtw_request(
    test_write_vectors: Mapping[int, TestWriteVectors], read_vector: Iterable[ReadVector]
) -> bytes:
    """Body of ``POST /storage/v1/mutable/:si/read-test-write``."""
    return cbor_dumps(
        {
            "test-write-vectors": {
                shnum: {
                    "test": [
                        {"offset": t.offset, "size": t.size, "specimen": t.specimen}
                        for t in twv.test
                    ],
                    "write": [{"offset": w.offset, "data": w.data} for w in twv.write],
                    "new-length": twv.new_length,
                }
                for shnum, twv in test_write_vectors.items()
            },
            "read-vector": [{"offset": r.offset, "size": r.size} for r in read_vector],
        }
    )


_TWV_KEYS = frozenset({"test", "write", "new-length"})


def decode_rtw_request(value: Any) -> tuple[dict[int, TestWriteVectors], tuple[ReadVector, ...]]:
    """Validate a read-test-write request against Tahoe's schema (≤256 shares, ≤30 tests/reads)."""
    body = _map(value, frozenset({"test-write-vectors", "read-vector"}), "read-test-write request")
    twvs = body["test-write-vectors"]
    if not isinstance(twvs, dict) or len(twvs) > 256:
        raise MalformedMessage("test-write-vectors must be a map of at most 256 shares")
    result: dict[int, TestWriteVectors] = {}
    for shnum, raw in twvs.items():
        if _uint(shnum, "share number") > MAX_SHARE_NUMBER:
            raise MalformedMessage("share numbers are 0..255")
        twv = _map(raw, _TWV_KEYS, "test-write vector")
        tests = tuple(
            TestVector(
                _uint(t["offset"], "offset"),
                _uint(t["size"], "size"),
                _bstr(t["specimen"], "specimen"),
            )
            for t in (
                _map(t, frozenset({"offset", "size", "specimen"}), "test vector")
                for t in _list(twv["test"], "test", 30)
            )
        )
        writes = tuple(
            WriteVector(_uint(w["offset"], "offset"), _bstr(w["data"], "data"))
            for w in (
                _map(w, frozenset({"offset", "data"}), "write vector")
                for w in _list(twv["write"], "write")
            )
        )
        new_length = twv["new-length"]
        if new_length is not None:
            new_length = _uint(new_length, "new-length")
        result[shnum] = TestWriteVectors(tests, writes, new_length)
    reads = tuple(
        ReadVector(_uint(r["offset"], "offset"), _uint(r["size"], "size"))
        for r in (
            _map(r, frozenset({"offset", "size"}), "read vector")
            for r in _list(body["read-vector"], "read-vector", 30)
        )
    )
    return result, reads


# Response bodies (server encodes, client validates) -----------------------------------


_MAX_UINT64 = 2**64 - 1


def _clamp(value: int) -> int:
    """Clamp to CBOR's largest plain ``uint``: Tahoe's schema rejects bignums (tag 2)."""
    return max(0, min(value, _MAX_UINT64))


def encode_version(info: VersionInfo) -> bytes:
    """The version response: byte-string keys, exactly as Tahoe sends it; sizes ≤ 2**64-1."""
    return cbor_dumps(
        {
            _V1_KEY: {
                b"maximum-immutable-share-size": _clamp(info.maximum_immutable_share_size),
                b"maximum-mutable-share-size": _clamp(info.maximum_mutable_share_size),
                b"available-space": _clamp(info.available_space),
            },
            b"application-version": info.application_version,
        }
    )


def decode_version(value: Any) -> VersionInfo:
    """Validate a version response (extra keys tolerated, as future servers may add some)."""
    if not isinstance(value, dict) or not isinstance(value.get(_V1_KEY), dict):
        raise MalformedMessage("version response lacks the v1 map")
    v1 = value[_V1_KEY]
    return VersionInfo(
        maximum_immutable_share_size=_uint(
            v1.get(b"maximum-immutable-share-size"), "maximum-immutable-share-size"
        ),
        maximum_mutable_share_size=_uint(
            v1.get(b"maximum-mutable-share-size"), "maximum-mutable-share-size"
        ),
        available_space=_uint(v1.get(b"available-space"), "available-space"),
        application_version=_bstr(value.get(b"application-version"), "application-version"),
    )


def encode_allocation(result: AllocationResult) -> bytes:
    """The allocation response: two tag-258 sets."""
    return cbor_dumps(
        {"already-have": set(result.already_have), "allocated": set(result.allocated)}
    )


def decode_allocation(value: Any) -> AllocationResult:
    """Validate an allocation response."""
    body = _map(value, frozenset({"already-have", "allocated"}), "allocation response")
    return AllocationResult(
        already_have=_share_set(body["already-have"], "already-have"),
        allocated=_share_set(body["allocated"], "allocated"),
    )


def encode_write_progress(result: WriteResult) -> bytes:
    """The immutable write response: the ranges still required."""
    return cbor_dumps({"required": [{"begin": r.begin, "end": r.end} for r in result.required]})


def decode_write_progress(value: Any, finished: bool) -> WriteResult:
    """Validate a write response; ``finished`` comes from the status (201 vs 200)."""
    body = _map(value, frozenset({"required"}), "write response")
    required = tuple(
        ByteRange(_uint(r["begin"], "begin"), _uint(r["end"], "end"))
        for r in (
            _map(r, frozenset({"begin", "end"}), "range")
            for r in _list(body["required"], "required")
        )
    )
    return WriteResult(finished=finished, required=required)


def encode_share_set(shares: frozenset[int]) -> bytes:
    """A share listing: one tag-258 set."""
    return cbor_dumps(set(shares))


def decode_share_set(value: Any) -> frozenset[int]:
    """Validate a share listing."""
    return _share_set(value, "share listing")


def encode_rtw_result(result: ReadTestWriteResult) -> bytes:
    """The read-test-write response: ``{"success": bool, "data": {shnum: [bstr]}}``."""
    return cbor_dumps(
        {"success": result.success, "data": {k: list(v) for k, v in result.reads.items()}}
    )


def decode_rtw_result(value: Any) -> ReadTestWriteResult:
    """Validate a read-test-write response."""
    body = _map(value, frozenset({"success", "data"}), "read-test-write response")
    if not isinstance(body["success"], bool) or not isinstance(body["data"], dict):
        raise MalformedMessage("read-test-write response has the wrong types")
    reads = {
        _uint(k, "share number"): [_bstr(b, "read data") for b in _list(v, "reads")]
        for k, v in body["data"].items()
    }
    return ReadTestWriteResult(success=body["success"], reads=reads)


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
