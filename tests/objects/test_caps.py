"""Capability strings: round trips, reductions, storage indexes and parse errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.objects import caps
from gateway.objects.caps import (
    DirectoryReadCap,
    DirectoryVerifyCap,
    DirectoryWriteCap,
    ImmutableReadCap,
    ImmutableVerifyCap,
    LiteralCap,
    MutableReadCap,
    MutableVerifyCap,
    MutableWriteCap,
)
from gateway.objects.errors import BadCapability

key32 = st.binary(min_size=32, max_size=32)
si16 = st.binary(min_size=16, max_size=16)
kn = st.integers(1, 256).flatmap(lambda k: st.tuples(st.just(k), st.integers(k, 256)))
sizes = st.integers(0, 2**63)

literal = st.builds(LiteralCap, st.binary(max_size=100))
imm_read = st.builds(
    lambda key, ueb, p, size: ImmutableReadCap(key, ueb, p[0], p[1], size), key32, key32, kn, sizes
)
imm_verify = st.builds(
    lambda si, ueb, p, size: ImmutableVerifyCap(si, ueb, p[0], p[1], size), si16, key32, kn, sizes
)
mut_write = st.builds(MutableWriteCap, key32)
mut_read = st.builds(MutableReadCap, key32, key32)
mut_verify = st.builds(MutableVerifyCap, si16, key32)
any_cap = st.one_of(
    literal,
    imm_read,
    imm_verify,
    mut_write,
    mut_read,
    mut_verify,
    st.builds(DirectoryWriteCap, mut_write),
    st.builds(DirectoryReadCap, mut_read),
    st.builds(DirectoryVerifyCap, mut_verify),
)


@given(any_cap)
def test_round_trip(cap: caps.Capability) -> None:
    """Every capability parses back from its string to an equal value."""
    text = cap.to_string()
    assert text.startswith("GG:")
    assert text == text.strip() and " " not in text
    assert caps.parse(text) == cap


SECRET = bytes(range(100, 132))


@pytest.mark.parametrize(
    "cap",
    [
        LiteralCap(SECRET),
        ImmutableReadCap(SECRET, b"u" * 32, 3, 10, 99),
        MutableWriteCap(SECRET),
        MutableReadCap(SECRET, b"p" * 32),
        DirectoryWriteCap(MutableWriteCap(SECRET)),
        DirectoryReadCap(MutableReadCap(SECRET, b"p" * 32)),
    ],
)
def test_repr_hides_secrets(cap: caps.Capability) -> None:
    """No key, seed or literal content shows up in a capability's repr or str."""
    for text in (repr(cap), str(cap)):
        assert caps.b32encode(SECRET) not in text
        assert repr(SECRET)[2:-1] not in text
        assert SECRET.hex() not in text


@given(mut_write)
def test_mutable_reductions(writer: MutableWriteCap) -> None:
    """Write → read → verify, with one storage index and public key throughout."""
    reader = writer.get_read_cap()
    verifier = reader.get_verify_cap()
    assert writer.get_verify_cap() == verifier
    assert writer.storage_index == reader.storage_index == verifier.storage_index
    assert len(verifier.storage_index) == 16
    assert reader.public_key == verifier.public_key == writer.public_key
    assert reader.read_key != writer.signing_seed
    assert verifier.storage_index not in (reader.read_key[:16], writer.signing_seed[:16])
    assert not writer.read_only and reader.read_only and verifier.read_only


@given(mut_write)
def test_directory_reductions(writer: MutableWriteCap) -> None:
    """A directory's caps reduce like its mutable object's and keep the directory prefixes."""
    d = DirectoryWriteCap(writer)
    assert d.get_read_cap() == DirectoryReadCap(writer.get_read_cap())
    assert d.get_verify_cap() == DirectoryVerifyCap(writer.get_verify_cap())
    assert d.to_string().startswith("GG:DIR:")
    assert d.get_read_cap().to_string().startswith("GG:DIR-RO:")
    assert d.get_verify_cap().to_string().startswith("GG:DIR-V:")
    assert d.storage_index == writer.storage_index


@given(imm_read)
def test_immutable_reductions(reader: ImmutableReadCap) -> None:
    """An immutable read cap reduces to a verify cap with a storage index that hides the key."""
    verifier = reader.get_verify_cap()
    assert verifier.storage_index == reader.storage_index
    assert len(verifier.storage_index) == 16
    assert (verifier.ueb_hash, verifier.k, verifier.n, verifier.size) == (
        reader.ueb_hash,
        reader.k,
        reader.n,
        reader.size,
    )
    assert reader.key.hex() not in verifier.to_string()


def test_literal_has_no_verify_cap() -> None:
    """Literal files are stored nowhere, so they have no storage index or verify cap."""
    cap = LiteralCap(b"hello")
    assert cap.storage_index is None and cap.get_read_cap() is cap and cap.size == 5
    assert cap.to_string() == "GG:LIT:nbswy3dp"


def test_generated_write_caps_differ() -> None:
    """Fresh mutable objects get fresh keys."""
    assert MutableWriteCap.generate() != MutableWriteCap.generate()
    assert DirectoryWriteCap.generate() != DirectoryWriteCap.generate()


_GOOD = ImmutableReadCap(b"k" * 32, b"u" * 32, 3, 10, 12345).to_string()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "should start with 'GG:<kind>:'"),
        ("URI:CHK:abc", "should start with 'GG:<kind>:'"),
        ("GG:FOO:abc", "unknown capability kind 'FOO'"),
        ("GG:" + "x" * 40 + ":abc", "unknown capability kind (known"),
        ("GG:CHK:abc:def", "has 5 field(s)"),
        (_GOOD.replace(":3:10:", ":0:10:"), "k=0, n=10"),
        (_GOOD.replace(":3:10:", ":11:10:"), "k=11, n=10"),
        (_GOOD.replace(":3:10:", ":3:300:"), "n=300"),
        (_GOOD.replace(":12345", ":-1"), "size is not a decimal number"),
        (_GOOD.replace(":12345", ":012"), "size is not a decimal number"),
        (_GOOD.replace(":3:", ":x:"), "k (shares needed) is not a decimal"),
        ("GG:CHK:" + _GOOD.split(":")[2].upper() + ":" + ":".join(_GOOD.split(":")[3:]), "base32"),
        ("GG:CHK:" + _GOOD.split(":")[2][:-2] + ":" + ":".join(_GOOD.split(":")[3:]), "read key"),
        ("GG:SSK:aaaa", "signing key"),
        ("GG:SSK-RO:" + "a" * 52 + ":" + "a" * 50, "public key"),
        ("GG:LIT:a", "literal data is not valid base32"),
        ("GG:LIT:ab", "not canonical"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    """Parse errors say which part is wrong and never echo the capability."""
    with pytest.raises(BadCapability) as info:
        caps.parse(text)
    assert message in str(info.value)
    if len(text) > 20:
        assert text not in str(info.value)


def test_parse_strips_whitespace() -> None:
    """A capability pasted with surrounding whitespace still parses."""
    assert caps.parse(f"  {_GOOD}\n") == caps.parse(_GOOD)
