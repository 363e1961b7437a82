"""Key derivation and segment encryption."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.objects import crypto
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.errors import CorruptObject


def test_person_tags_are_distinct_and_fit() -> None:
    """Every derivation has its own personalization tag, each at most 16 bytes (BLAKE2b's limit)."""
    tags = [v for k, v in vars(crypto).items() if k.startswith("PERSON_")]
    assert len(tags) == len(set(tags)) > 10
    assert all(len(t) <= 16 for t in tags)


def test_convergent_key_depends_on_everything() -> None:
    """Same inputs give the same key; any change of secret, parameters or plaintext changes it."""
    h = b"h" * 32
    base = crypto.convergent_key(b"s" * 32, 3, 10, 131072, h)
    assert base == crypto.convergent_key(b"s" * 32, 3, 10, 131072, h)
    others = {
        crypto.convergent_key(b"t" * 32, 3, 10, 131072, h),
        crypto.convergent_key(b"s" * 32, 2, 10, 131072, h),
        crypto.convergent_key(b"s" * 32, 3, 9, 131072, h),
        crypto.convergent_key(b"s" * 32, 3, 10, 65536, h),
        crypto.convergent_key(b"s" * 32, 3, 10, 131072, b"g" * 32),
    }
    assert len(others) == 5 and base not in others


def test_per_server_secrets_differ() -> None:
    """Lease and upload secrets differ per server, per storage index and per kind."""
    secrets = GatewaySecrets.generate()
    si1, si2 = b"a" * 16, b"b" * 16
    values = {
        secrets.renew_secret(b"s1", si1),
        secrets.renew_secret(b"s2", si1),
        secrets.renew_secret(b"s1", si2),
        secrets.cancel_secret(b"s1", si1),
        secrets.upload_secret(b"s1", si1),
    }
    assert len(values) == 5
    assert secrets.renew_secret(b"s1", si1) == secrets.renew_secret(b"s1", si1)
    assert repr(secrets) == "GatewaySecrets()"


def test_write_enablers_differ_per_server() -> None:
    """A server cannot use the write enabler it holds to write on another server."""
    master = crypto.write_enabler_master(b"seed" * 8)
    assert crypto.write_enabler(master, b"s1", b"i" * 16) != crypto.write_enabler(
        master, b"s2", b"i" * 16
    )


def test_length_prefix_is_unambiguous() -> None:
    """Moving bytes between parts changes the hash input."""
    assert crypto.length_prefixed(b"ab", b"c") != crypto.length_prefixed(b"a", b"bc")


@given(st.binary(max_size=300), st.integers(0, 2**40))
def test_segment_round_trip(plaintext: bytes, segnum: int) -> None:
    """A segment decrypts to its plaintext; it is 16 bytes longer when encrypted."""
    key = b"k" * 32
    ct = crypto.encrypt_segment(key, segnum, segnum + 1, plaintext)
    assert len(ct) == len(plaintext) + crypto.AEAD_TAG_SIZE
    assert crypto.decrypt_segment(key, segnum, segnum + 1, ct) == plaintext


def test_segment_bound_to_position_and_key() -> None:
    """A segment moved to another position, count or key, or flipped, fails authentication."""
    key = b"k" * 32
    ct = crypto.encrypt_segment(key, 1, 3, b"payload")
    for args in [(key, 2, 3, ct), (key, 1, 4, ct), (b"j" * 32, 1, 3, ct)]:
        with pytest.raises(CorruptObject):
            crypto.decrypt_segment(*args)
    with pytest.raises(CorruptObject, match="segment 1"):
        crypto.decrypt_segment(key, 1, 3, bytes([ct[0] ^ 1]) + ct[1:])
