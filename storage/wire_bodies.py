"""The CBOR bodies of Tahoe-LAFS's HTTP storage protocol, shared by our server and client.

CBOR with sets as tag 258, and the request and response bodies of every
endpoint: an encoder for each, and a decoder that validates it by hand against
Tahoe 1.20's CDDL schemas (no extra keys, ``uint`` excludes booleans, the same
size limits). Where Tahoe's code and its specification differ, this module
follows the code. The rest of the wire format (NURLs, headers, paths, status
codes) is :mod:`storage.wire`'s, which re-exports these names.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from typing import Any

import cbor2

from storage.errors import InvalidRequest
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

__all__ = [
    "MAX_SHARE_NUMBER",
    "MalformedMessage",
    "cbor_dumps",
    "cbor_loads",
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
]

MAX_SHARE_NUMBER = 255
_V1_KEY = b"http://allmydata.org/tahoe/protocols/storage/v1"


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
    """Body of ``POST /storage/v1/immutable/:si``; share numbers outside 0..255 are refused
    here, before a server could allocate anything for them."""
    if any(not 0 <= s <= MAX_SHARE_NUMBER for s in share_numbers):
        raise InvalidRequest("share numbers are 0..255")
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
