"""The fuzz targets of the storage HTTP server: what one client sends, by target.

Each target exists twice over the same idea. :data:`TARGETS` are Hypothesis
strategies (``tests/storage/test_fuzz_http.py`` runs them bounded in CI, and
``misc/fuzz_storage.py --engine hypothesis`` at length); :data:`BYTE_TARGETS`
turn a byte-level fuzzer's input (atheris, coverage-guided) into a request,
starting from valid seeds. Every request goes through
:func:`tests.storage.http_fuzz.check_input`.

- ``raw``: anything at all on the connection.
- ``requests``: any method, route-like paths, the protocol's headers, any body.
- ``auth``: valid requests with mutated ``Authorization`` and ``X-Tahoe-Authorization``.
- ``cbor``: authorized allocate, read-test-write and corruption advice with
  valid, random or mutated CBOR bodies.
- ``ranges``: share reads with ``Range`` and writes with ``Content-Range``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import cbor2
from attrs import frozen
from hypothesis import strategies as st

from storage import wire
from tests.storage.http_fuzz import (
    AUTH,
    CANCEL,
    RENEW,
    STORAGE_INDEXES,
    SWISSNUM,
    UPLOAD,
    WE,
    request,
    secret,
)

# --- what is sent: one strategy per fuzz target ---------------------------------------------

_METHODS = [b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS"]
_PATHS = [
    "/storage/v1/version",
    "/storage/v1/lease/{si}",
    "/storage/v1/immutable/{si}",
    "/storage/v1/immutable/{si}/shares",
    "/storage/v1/immutable/{si}/{sh}",
    "/storage/v1/immutable/{si}/{sh}/abort",
    "/storage/v1/immutable/{si}/{sh}/corrupt",
    "/storage/v1/mutable/{si}/read-test-write",
    "/storage/v1/mutable/{si}/shares",
    "/storage/v1/mutable/{si}/{sh}",
    "/storage/v1/mutable/{si}/{sh}/corrupt",
]
_SECRETS = [
    secret(wire.SecretKind.LEASE_RENEW, RENEW),
    secret(wire.SecretKind.LEASE_CANCEL, CANCEL),
    secret(wire.SecretKind.UPLOAD, UPLOAD),
    secret(wire.SecretKind.WRITE_ENABLER, WE),
]
_text = st.text(st.characters(codec="latin-1"), max_size=40).map(lambda t: t.encode("latin-1"))
_token = st.binary(max_size=40)
_storage_index = st.one_of(st.sampled_from(STORAGE_INDEXES), _text.map(lambda b: b.hex()[:30]))
_share_number = st.one_of(st.sampled_from(["0", "1", "2", "3", "255", "256"]), st.text(max_size=5))


@st.composite
def _paths(draw: st.DrawFn) -> str:
    template = draw(st.sampled_from(_PATHS))
    path = template.format(si=draw(_storage_index), sh=draw(_share_number))
    if draw(st.booleans()):
        return path
    return draw(st.sampled_from(["", "/", "//", "%2e", "/..", "?x=1", "#", "\x00"])).join(
        [path[: len(path) // 2], path[len(path) // 2 :]]
    )


def mutate(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few byte-level changes: flips, insertions, deletions, truncation."""
    out = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        at = draw(st.integers(0, len(out)))
        if op == "flip" and at < len(out):
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del out[at : at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del out[at:]
        elif op == "dup":
            out[at:at] = out[at : at + draw(st.integers(1, 16))]
    return bytes(out)


_cbor_leaf = st.one_of(
    st.integers(-(2**70), 2**70),
    st.binary(max_size=64),
    st.text(max_size=16),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True),
    st.sampled_from(["share-numbers", "allocated-size", "test-write-vectors", "read-vector"]),
    st.sampled_from(["offset", "size", "specimen", "data", "new-length", "test", "write"]),
    st.sampled_from(["reason"]),
)
_cbor_values = st.recursive(
    _cbor_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=16), st.integers(0, 300)), inner, max_size=4),
        st.frozensets(st.integers(-2, 300), max_size=4),
        st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 258, 259, 55799]), inner),
    ),
    max_leaves=12,
)


@st.composite
def _cbor_bodies(draw: st.DrawFn, valid: bytes) -> bytes:
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return mutate(draw, valid)
    try:
        encoded = cbor2.dumps(draw(_cbor_values), canonical=draw(st.booleans()))
    except (ValueError, TypeError, cbor2.CBOREncodeError):
        encoded = valid
    return encoded if choice == 1 else mutate(draw, encoded)


def _allocate_body(draw: st.DrawFn) -> bytes:
    shares = draw(st.frozensets(st.integers(0, 300), max_size=5))
    size = draw(st.integers(0, 2**64))
    return cbor2.dumps({"share-numbers": set(shares), "allocated-size": size})


def _rtw_body(draw: st.DrawFn) -> bytes:
    offset = draw(st.integers(0, 2**20))
    data = draw(st.binary(max_size=64))
    specimen = draw(st.binary(max_size=8))
    vectors = {
        draw(st.integers(0, 300)): {
            "test": [{"offset": offset, "size": len(specimen), "specimen": specimen}],
            "write": [{"offset": offset, "data": data}],
            "new-length": draw(st.one_of(st.none(), st.integers(0, 2**20))),
        }
    }
    reads = [{"offset": draw(st.integers(0, 2**20)), "size": draw(st.integers(0, 2**20))}]
    return cbor2.dumps({"test-write-vectors": vectors, "read-vector": reads})


def _frame(draw: st.DrawFn, head: bytes, body: bytes) -> bytes:
    """Finish a request head with a body: Content-Length (right or not) or chunked."""
    framing = draw(st.sampled_from(["length", "length", "chunked", "wrong-length", "none"]))
    if framing == "length":
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    if framing == "wrong-length":
        return head + b"Content-Length: %d\r\n\r\n" % draw(st.integers(0, 2**40)) + body
    if framing == "chunked":
        cut = draw(st.integers(0, len(body)))
        chunks = [c for c in (body[:cut], body[cut:]) if c]
        encoded = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + encoded
    return head + b"\r\n" + body


def _head(method: bytes, path: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [method + b" " + path.encode("latin-1", "replace") + b" HTTP/1.1", b"Host: storage"]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n"


@st.composite
def raw_bytes(draw: st.DrawFn) -> bytes:
    """Target ``raw``: anything at all, or a valid request head cut and mutated."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=4096))
    valid = request(b"POST", f"/storage/v1/immutable/{STORAGE_INDEXES[1]}", body=b"\xa0")
    return mutate(draw, valid)


@st.composite
def routes_and_headers(draw: st.DrawFn) -> bytes:
    """Target ``requests``: any method, route-like paths, protocol headers, any body."""
    headers: list[tuple[bytes, bytes]] = []
    if draw(st.integers(0, 9)):
        headers.append((b"Authorization", AUTH))
    headers += draw(st.lists(st.sampled_from(_SECRETS), max_size=4))
    names = [b"Accept", b"Content-Type", b"Range", b"Content-Range", b"Connection", b"Expect"]
    names += [b"X-Tahoe-Authorization", b"Content-Length", b"Transfer-Encoding", b"X-Other"]
    for _ in range(draw(st.integers(0, 4))):
        headers.append((draw(st.sampled_from(names)), draw(_text)))
    method = draw(st.one_of(st.sampled_from(_METHODS), _token.filter(lambda m: b" " not in m)))
    body = draw(st.one_of(st.just(b""), st.binary(max_size=512)))
    return _frame(draw, _head(method, draw(_paths()), headers), body)


@st.composite
def authorization(draw: st.DrawFn) -> bytes:
    """Target ``auth``: valid requests whose Authorization and secrets are mutated."""
    si = draw(st.sampled_from(STORAGE_INDEXES))
    method, path, body = draw(
        st.sampled_from(
            [
                (b"GET", "/storage/v1/version", b""),
                (b"PUT", f"/storage/v1/lease/{si}", b""),
                (b"POST", f"/storage/v1/immutable/{si}", b"allocate"),
                (b"PATCH", f"/storage/v1/immutable/{si}/1", b"x" * 100),
                (b"PUT", f"/storage/v1/immutable/{si}/0/abort", b""),
                (b"POST", f"/storage/v1/mutable/{si}/read-test-write", b"rtw"),
            ]
        )
    )
    if body == b"allocate":
        body = _allocate_body(draw)
    elif body == b"rtw":
        body = _rtw_body(draw)
    auth = draw(
        st.sampled_from(
            [AUTH, b"Tahoe-LAFS " + base64.b64encode(SWISSNUM[:-1]), b"Tahoe-LAFS", b"Basic x"]
        )
    )
    if draw(st.booleans()):
        auth = mutate(draw, auth)
    headers = [(b"Authorization", auth)] * draw(st.integers(0, 2))
    secrets = draw(st.lists(st.sampled_from(_SECRETS), max_size=4))
    headers += [(n, mutate(draw, v) if draw(st.booleans()) else v) for n, v in secrets]
    if method == b"PATCH":
        headers.append((b"Content-Range", b"bytes 0-99/3000"))
    return _frame(draw, _head(method, path, headers), body)


@st.composite
def cbor_requests(draw: st.DrawFn) -> bytes:
    """Target ``cbor``: authorized allocate, read-test-write and corruption advice with CBOR
    bodies that are valid, random or mutated."""
    si = draw(st.sampled_from(STORAGE_INDEXES))
    kind = draw(st.sampled_from(["allocate", "rtw", "corrupt-immutable", "corrupt-mutable"]))
    if kind == "allocate":
        path, secrets = f"/storage/v1/immutable/{si}", _SECRETS[:3]
        valid = _allocate_body(draw)
    elif kind == "rtw":
        path, secrets = f"/storage/v1/mutable/{si}/read-test-write", [*_SECRETS[:2], _SECRETS[3]]
        valid = _rtw_body(draw)
    else:
        path = f"/storage/v1/{kind.split('-')[1]}/{si}/0/corrupt"
        secrets, valid = [], cbor2.dumps({"reason": draw(st.text(max_size=20))})
    headers = [(b"Authorization", AUTH), *secrets]
    if draw(st.booleans()):
        headers.append((b"Content-Type", b"application/cbor"))
    return _frame(draw, _head(b"POST", path, headers), draw(_cbor_bodies(valid)))


_byte_ranges = st.one_of(
    st.tuples(st.integers(0, 4000), st.integers(0, 4000)).map(lambda r: b"bytes %d-%d" % r),
    st.tuples(st.integers(-5, 2**65), st.integers(-5, 2**65)).map(lambda r: b"bytes %d-%d" % r),
)


@st.composite
def range_requests(draw: st.DrawFn) -> bytes:
    """Target ``ranges``: share reads with Range and writes with Content-Range, mutated."""
    if draw(st.booleans()):
        path = draw(
            st.sampled_from(
                [
                    f"/storage/v1/immutable/{STORAGE_INDEXES[0]}/0",
                    f"/storage/v1/mutable/{STORAGE_INDEXES[2]}/0",
                    f"/storage/v1/immutable/{STORAGE_INDEXES[1]}/0",
                ]
            )
        )
        value = draw(_byte_ranges).replace(b"bytes ", b"bytes=")
        value = mutate(draw, value) if draw(st.booleans()) else value
        headers = [(b"Authorization", AUTH), (b"Range", value)]
        return _head(b"GET", path, headers) + b"\r\n"
    value = draw(_byte_ranges) + b"/" + draw(st.sampled_from([b"*", b"3000", b"10"]))
    value = mutate(draw, value) if draw(st.booleans()) else value
    share = draw(st.sampled_from(["0", "1", "2"]))
    path = f"/storage/v1/immutable/{STORAGE_INDEXES[1]}/{share}"
    body = draw(st.one_of(st.just(b"h" * 100), st.binary(max_size=300)))
    headers = [(b"Authorization", AUTH), _SECRETS[2], (b"Content-Range", value)]
    return _frame(draw, _head(b"PATCH", path, headers), body)


TARGETS: dict[str, Callable[[], st.SearchStrategy[bytes]]] = {
    "raw": raw_bytes,
    "requests": routes_and_headers,
    "auth": authorization,
    "cbor": cbor_requests,
    "ranges": range_requests,
}
"""The fuzz targets by name: each a strategy of the bytes one client sends."""


# --- byte-level targets (atheris) -----------------------------------------------------------


@frozen
class ByteTarget:
    """A target for a byte-level fuzzer: the request its input becomes, and valid seeds."""

    wrap: Callable[[bytes], bytes]
    seeds: tuple[bytes, ...]


def _pick(data: bytes, choices: list[Any]) -> tuple[Any, bytes]:
    """The choice named by the first byte, and the rest of the input."""
    if not data:
        return choices[0], b""
    return choices[data[0] % len(choices)], data[1:]


_IMM_OPEN = f"/storage/v1/immutable/{STORAGE_INDEXES[1]}"
_ALLOC = wire.encode_allocate_request(frozenset({3, 4}), 100)
_RTW = cbor2.dumps(
    {
        "test-write-vectors": {
            0: {"test": [], "write": [{"offset": 10, "data": b"x" * 10}], "new-length": None}
        },
        "read-vector": [{"offset": 0, "size": 20}],
    }
)
_SEED_REQUESTS = (
    request(b"GET", "/storage/v1/version"),
    request(b"POST", f"/storage/v1/immutable/{STORAGE_INDEXES[3]}", _SECRETS[:3], _ALLOC),
    request(
        b"PATCH",
        f"{_IMM_OPEN}/1",
        [_SECRETS[2], (b"Content-Range", b"bytes 0-9/3000")],
        b"0123456789",
    ),
    request(
        b"POST",
        f"/storage/v1/mutable/{STORAGE_INDEXES[2]}/read-test-write",
        [*_SECRETS[:2], _SECRETS[3]],
        _RTW,
    ),
    request(b"GET", f"/storage/v1/immutable/{STORAGE_INDEXES[0]}/0", [(b"Range", b"bytes=0-9")]),
)


def _with_auth(data: bytes) -> bytes:
    """The input as a request, a valid Authorization line inserted after its first line."""
    first, sep, rest = data.partition(b"\r\n")
    return first + sep + b"Authorization: " + AUTH + b"\r\n" + rest if sep else data


_AUTH_TEMPLATES = [
    (b"GET", "/storage/v1/version", b""),
    (b"PUT", f"/storage/v1/lease/{STORAGE_INDEXES[0]}", b""),
    (b"POST", f"/storage/v1/immutable/{STORAGE_INDEXES[3]}", _ALLOC),
    (b"PATCH", f"{_IMM_OPEN}/2", b"x" * 10),
    (b"PUT", f"{_IMM_OPEN}/2/abort", b""),
    (b"POST", f"/storage/v1/mutable/{STORAGE_INDEXES[2]}/read-test-write", _RTW),
]


def _auth_request(data: bytes) -> bytes:
    """A template request whose Authorization and X-Tahoe-Authorization lines are the input."""
    (method, path, body), lines = _pick(data, _AUTH_TEMPLATES)
    headers = [tuple(line.split(b": ", 1)) for line in lines.split(b"\r\n") if b": " in line]
    if method == b"PATCH":
        headers.append((b"Content-Range", b"bytes 0-9/3000"))
    return request(method, path, headers, body, auth=False)  # type: ignore[arg-type]


def _auth_seed(index: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = b"\r\n".join(
        name + b": " + value for name, value in [(b"Authorization", AUTH), *headers]
    )
    return bytes([index]) + lines


_CBOR_TEMPLATES = [
    (f"/storage/v1/immutable/{STORAGE_INDEXES[3]}", _SECRETS[:3]),
    (f"/storage/v1/mutable/{STORAGE_INDEXES[2]}/read-test-write", [*_SECRETS[:2], _SECRETS[3]]),
    (f"/storage/v1/immutable/{STORAGE_INDEXES[0]}/0/corrupt", []),
    (f"/storage/v1/mutable/{STORAGE_INDEXES[2]}/0/corrupt", []),
]


def _cbor_request(data: bytes) -> bytes:
    """An authorized CBOR request (endpoint by the first byte) whose body is the input."""
    (path, secrets), body = _pick(data, _CBOR_TEMPLATES)
    return request(b"POST", path, [*secrets, (b"Content-Type", b"application/cbor")], body)


_CORRUPT = wire.encode_corrupt_request("bad block")
_RANGE_TEMPLATES = [
    f"/storage/v1/immutable/{STORAGE_INDEXES[0]}/0",
    f"/storage/v1/mutable/{STORAGE_INDEXES[2]}/0",
    f"{_IMM_OPEN}/0",
    f"{_IMM_OPEN}/1",
]


def _range_request(data: bytes) -> bytes:
    """A share read with the input as its Range, or a write with it as Content-Range (its
    body after a newline)."""
    path, rest = _pick(data, _RANGE_TEMPLATES)
    value, _, body = rest.partition(b"\n")
    if path.startswith(_IMM_OPEN):
        return request(b"PATCH", path, [_SECRETS[2], (b"Content-Range", value)], body)
    return request(b"GET", path, [(b"Range", value)])


BYTE_TARGETS: dict[str, ByteTarget] = {
    "raw": ByteTarget(lambda data: data, _SEED_REQUESTS),
    "requests": ByteTarget(
        _with_auth,
        tuple(r.replace(b"Authorization: " + AUTH + b"\r\n", b"") for r in _SEED_REQUESTS),
    ),
    "auth": ByteTarget(
        _auth_request,
        (
            _auth_seed(0, []),
            _auth_seed(1, _SECRETS[:2]),
            _auth_seed(2, _SECRETS[:3]),
            _auth_seed(3, [_SECRETS[2]]),
            _auth_seed(5, [*_SECRETS[:2], _SECRETS[3]]),
        ),
    ),
    "cbor": ByteTarget(
        _cbor_request, (b"\x00" + _ALLOC, b"\x01" + _RTW, b"\x02" + _CORRUPT, b"\x03" + _CORRUPT)
    ),
    "ranges": ByteTarget(
        _range_request,
        (
            b"\x00bytes=0-99",
            b"\x01bytes=10-20",
            b"\x02bytes 1500-1599/3000\n" + b"h" * 100,
            b"\x03bytes 0-9/*\n0123456789",
        ),
    ),
}
"""The byte-level fuzz targets by name (the same names as :data:`TARGETS`)."""
