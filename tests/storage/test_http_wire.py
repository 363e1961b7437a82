"""Property tests of the shared wire format: NURLs, storage indexes, secrets, CBOR, ranges."""

from __future__ import annotations

import base64

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage import wire
from storage.errors import (
    ConflictingWrite,
    InvalidRequest,
    NoSpace,
    NoSuchShare,
    NoSuchUpload,
    NotAuthorized,
    RangeNotSatisfiable,
)
from storage.interfaces import (
    AllocationResult,
    ByteRange,
    ReadTestWriteResult,
    ReadVector,
    VersionInfo,
    WriteResult,
    WriteVector,
)
from storage.interfaces import TestVector as TVector
from storage.interfaces import TestWriteVectors as TWVectors
from storage.tls import generate_tls_credentials, spki_hash

spki_hashes = st.binary(min_size=32, max_size=32).map(
    lambda d: base64.urlsafe_b64encode(d).rstrip(b"=").decode()
)
hosts = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}", fullmatch=True),
    st.ip_addresses().map(str),
)
swissnums = st.from_regex(r"[A-Za-z0-9._~-]{1,60}", fullmatch=True).map(str.encode)
share_numbers = st.integers(0, 255)
uints = st.integers(0, 2**64 - 1)


@given(spki_hashes, hosts, st.integers(1, 65535), swissnums)
def test_nurl_round_trip(spki: str, host: str, port: int, swissnum: bytes) -> None:
    """Any NURL we format parses back to the same parts; the swissnum stays out of repr."""
    text = wire.format_nurl(spki, host, port, swissnum)
    nurl = wire.parse_nurl(text)
    assert (nurl.spki_hash, nurl.host, nurl.port, nurl.swissnum) == (spki, host, port, swissnum)
    assert nurl.to_text() == text and text.endswith("#v=1")
    assert "swissnum" not in repr(nurl)  # the field is left out of repr


def test_tahoe_nurl() -> None:
    """A NURL exactly as a Tahoe 1.20 node serves it parses."""
    text = "pb://mhm8-Y6aKqWzQgbPWNfoFHsEWgTP7WWP7HxMrWEUYDc@127.0.0.1:57915/jlsxsqhgqbcpmtjhznabcacf647775et#v=1"
    nurl = wire.parse_nurl(text)
    assert nurl.port == 57915 and nurl.swissnum == b"jlsxsqhgqbcpmtjhznabcacf647775et"
    assert len(nurl.spki_digest) == 32
    assert wire.format_authorization(nurl.swissnum) == b"Tahoe-LAFS " + base64.b64encode(
        b"jlsxsqhgqbcpmtjhznabcacf647775et"
    )


@pytest.mark.parametrize(
    "text",
    [
        "pb://tubid@tcp:127.0.0.1:1234/sekrit",  # a Foolscap fURL
        "pb://mhm8-Y6aKqWzQgbPWNfoFHsEWgTP7WWP7HxMrWEUYDc@127.0.0.1:57915/sekrit",  # no #v=1
        "pb://mhm8-Y6aKqWzQgbPWNfoFHsEWgTP7WWP7HxMrWEUYDc@127.0.0.1:0/sekrit#v=1",
        "pb://mhm8-Y6aKqWzQgbPWNfoFHsEWgTP7WWP7HxMrWEUYDc@127.0.0.1:99999/sekrit#v=1",
        "https://mhm8-Y6aKqWzQgbPWNfoFHsEWgTP7WWP7HxMrWEUYDc@127.0.0.1:1/sekrit#v=1",
        "pb://mhm8-Y6aKqWzQgbPWNfoFHsEWgTP7WWP7HxMrWEUYDc@127.0.0.1:1/a/b#v=1",
    ],
)
def test_bad_nurls(text: str) -> None:
    """Anything but an HTTP storage NURL is refused, without echoing the swissnum."""
    with pytest.raises(wire.InvalidNurl) as caught:
        wire.parse_nurl(text)
    assert "sekrit" not in str(caught.value)


def test_spki_hash_is_tahoes() -> None:
    """43 URL-safe characters, SHA-256 of the DER SubjectPublicKeyInfo."""
    credentials = generate_tls_credentials()
    assert len(credentials.spki_hash) == 43
    assert credentials.spki_hash == spki_hash(credentials.certificate)
    assert "PRIVATE" not in repr(credentials)


@given(st.binary(min_size=16, max_size=16))
def test_storage_index_round_trip(si: bytes) -> None:
    """26 lowercase base32 characters, exactly Tahoe's ``si_b2a``."""
    text = wire.si_b2a(si)
    assert len(text) == 26 and text == base64.b32encode(si).decode().rstrip("=").lower()
    assert wire.si_a2b(text) == si


@given(st.text(max_size=40))
def test_storage_index_validation(text: str) -> None:
    """Only canonical encodings of 16 bytes decode; everything else is InvalidRequest."""
    try:
        si = wire.si_a2b(text)
    except InvalidRequest:
        return
    assert wire.si_b2a(si) == text


def test_noncanonical_storage_index() -> None:
    """The last character carries 3 bits; set trailing bits are refused."""
    text = wire.si_b2a(bytes(16))
    with pytest.raises(InvalidRequest):
        wire.si_a2b(text[:-1] + "b")


@given(st.frozensets(share_numbers, max_size=256), uints)
def test_allocate_request_round_trip(shares: frozenset[int], size: int) -> None:
    """Share numbers travel as a tag-258 set, and come back as a frozenset."""
    body = wire.encode_allocate_request(shares, size)
    assert body.count(b"\xd9\x01\x02") == 1
    assert wire.decode_allocate_request(wire.cbor_loads(body)) == (shares, size)


@given(
    st.dictionaries(
        share_numbers,
        st.builds(
            TWVectors,
            st.lists(st.builds(TVector, uints, uints, st.binary(max_size=8)), max_size=30).map(
                tuple
            ),
            st.lists(st.builds(WriteVector, uints, st.binary(max_size=8)), max_size=5).map(tuple),
            st.none() | uints,
        ),
        max_size=5,
    ),
    st.lists(st.builds(ReadVector, uints, uints), max_size=30).map(tuple),
)
def test_rtw_request_round_trip(twvs: dict[int, TWVectors], reads: tuple[ReadVector, ...]) -> None:
    """Read-test-write requests decode to exactly what was encoded."""
    body = wire.encode_rtw_request(twvs, reads)
    assert wire.decode_rtw_request(wire.cbor_loads(body)) == (twvs, reads)


@given(
    st.frozensets(share_numbers, max_size=256),
    st.frozensets(share_numbers, max_size=256),
    st.booleans(),
    st.lists(st.tuples(uints, uints).map(lambda t: ByteRange(*t)), max_size=4).map(tuple),
    st.dictionaries(share_numbers, st.lists(st.binary(max_size=8), max_size=3), max_size=4),
)
def test_responses_round_trip(
    have: frozenset[int],
    allocated: frozenset[int],
    success: bool,
    required: tuple[ByteRange, ...],
    reads: dict[int, list[bytes]],
) -> None:
    """Every response body decodes to what the server encoded."""
    allocation = AllocationResult(have, allocated)
    assert wire.decode_allocation(wire.cbor_loads(wire.encode_allocation(allocation))) == allocation
    assert wire.decode_share_set(wire.cbor_loads(wire.encode_share_set(have))) == have
    progress = WriteResult(finished=success, required=required)
    encoded = wire.encode_write_progress(progress)
    assert wire.decode_write_progress(wire.cbor_loads(encoded), success) == progress
    rtw = ReadTestWriteResult(success, reads)
    assert wire.decode_rtw_result(wire.cbor_loads(wire.encode_rtw_result(rtw))) == rtw


@given(st.integers(0, 2**70), st.binary(max_size=20))
def test_version_round_trip(space: int, version: bytes) -> None:
    """Byte-string keys; sizes beyond 64 bits are clamped (Tahoe's schema forbids bignums)."""
    info = VersionInfo(space, 69_105_000, space, version)
    decoded = wire.decode_version(cbor2.loads(wire.encode_version(info)))
    assert decoded.available_space == min(space, 2**64 - 1)
    assert decoded.application_version == version


@given(st.integers(0, 2**62), st.integers(1, 2**40))
def test_range_round_trip(offset: int, length: int) -> None:
    """Range and Content-Range headers are inclusive on the wire, half-open in Python."""
    assert wire.parse_range(wire.format_range(offset, length)) == (offset, offset + length)
    header = wire.format_content_range(offset, length)
    assert wire.parse_content_range(header) == (offset, offset + length)
    total = wire.format_content_range(offset, length, offset + length)
    assert wire.parse_content_range(total) == (offset, offset + length)


@pytest.mark.parametrize(
    "header", ["bytes=5-", "bytes=-5", "bytes=5-4", "bytes=0-1,3-4", "items=0-1", "bytes=a-b", ""]
)
def test_unsupported_ranges(header: str) -> None:
    """Open, suffix, inverted, multiple or non-byte ranges are 416 as in Tahoe."""
    with pytest.raises(RangeNotSatisfiable):
        wire.parse_range(header)


@pytest.mark.parametrize("header", ["bytes 0-9/5", "bytes 5-4/*", "bytes 0-1", "bytes */10"])
def test_bad_content_ranges(header: str) -> None:
    """Inconsistent or unsatisfied Content-Range headers are refused."""
    with pytest.raises(RangeNotSatisfiable):
        wire.parse_content_range(header)


@given(
    st.dictionaries(
        st.sampled_from(list(wire.SecretKind)), st.binary(min_size=32, max_size=32), min_size=1
    )
)
def test_secrets_round_trip(secrets: dict[wire.SecretKind, bytes]) -> None:
    """X-Tahoe-Authorization values parse back; messages about bad ones never show values."""
    headers = [wire.format_secret(k, v) for k, v in secrets.items()]
    assert wire.parse_secrets(headers, frozenset(secrets)) == secrets
    with pytest.raises(wire.BadSecrets) as caught:
        wire.parse_secrets(headers + headers[:1], frozenset(secrets))
    for value in secrets.values():
        assert base64.b64encode(value).decode() not in str(caught.value)


def test_error_status_table() -> None:
    """Each core error has one status; the client maps statuses back to the same errors."""
    expected = {
        InvalidRequest: 400,
        NotAuthorized: 401,
        NoSuchShare: 404,
        NoSuchUpload: 405,
        ConflictingWrite: 409,
        RangeNotSatisfiable: 416,
        NoSpace: 507,
    }
    for cls, code in expected.items():
        assert wire.status_for_error(cls("x")) == code
        assert type(wire.error_for_status(code, "x")) is cls
    assert type(wire.error_for_status(413, "x")) is InvalidRequest
    assert wire.error_for_status(500, "x") is None
