"""The SSH packet ciphers and MACs against packets built here from ``cryptography``'s primitives.

Each test builds or takes apart a packet the way the specification describes
(OpenSSH ``PROTOCOL.chacha20poly1305``, RFC 5647 as OpenSSH does it, OpenSSH
``PROTOCOL`` for ``-etm`` MACs, RFC 4253 for encrypt-and-MAC), independently
of :mod:`gateway.sftp.ciphers`, and checks both directions: what ``seal``
sends opens here, and what is built here ``open`` reads.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.poly1305 import Poly1305
from hypothesis import given
from hypothesis import strategies as st

from gateway.sftp.ciphers import PacketError, make_opener, make_sealer

CHACHA = b"chacha20-poly1305@openssh.com"
KEY = bytes(range(64))
IV = bytes(range(100, 116))
MAC_KEY = bytes(range(200, 256))
PAYLOADS = [b"\x05", b"\x5e" + b"x" * 27, b"\x5e" + os.urandom(32_768)]


def chacha_stream(key: bytes, sequence: int, counter: int = 0) -> Cipher[None]:
    """ChaCha20 with a 64-bit little-endian block counter and the sequence number as nonce."""
    nonce = struct.pack("<Q", counter) + struct.pack(">Q", sequence)
    return Cipher(algorithms.ChaCha20(key, nonce), mode=None)


def body_of(payload: bytes, pad: int) -> bytes:
    """``padding_length || payload || padding`` with ``pad`` zero bytes of padding."""
    return bytes((pad,)) + payload + bytes(pad)


def padding_for(size: int, block: int) -> int:
    """RFC 4253's padding: to a multiple of ``block``, at least 4 bytes."""
    pad = block - size % block
    return pad + block if pad < 4 else pad


@pytest.mark.parametrize("payload", PAYLOADS, ids=["1", "28", "32k"])
def test_chacha20_poly1305_seal(payload: bytes) -> None:
    """The length is encrypted with the second key half, the payload with the first from block
    1, and the Poly1305 tag (key: block 0 of the first half's stream) covers both."""
    sequence = 7
    packet = make_sealer(CHACHA, b"", b"", KEY, b"").seal(sequence, payload)
    main, header = KEY[:32], KEY[32:]
    (length,) = struct.unpack(">L", chacha_stream(header, sequence).decryptor().update(packet[:4]))
    assert len(packet) == 4 + length + 16 and length % 8 == 0
    poly_key = chacha_stream(main, sequence).encryptor().update(bytes(32))
    Poly1305.verify_tag(poly_key, packet[: 4 + length], packet[4 + length :])
    body = chacha_stream(main, sequence, counter=1).decryptor().update(packet[4 : 4 + length])
    assert 4 <= body[0] < 4 + 8
    assert body[1 : length - body[0]] == payload


@pytest.mark.parametrize("payload", PAYLOADS, ids=["1", "28", "32k"])
def test_chacha20_poly1305_open(payload: bytes) -> None:
    """A packet built from the specification opens, whole or fed in pieces."""
    sequence = 2**32 - 1
    main, header = KEY[:32], KEY[32:]
    pad = padding_for(1 + len(payload), 8)
    body = body_of(payload, pad)
    encrypted = chacha_stream(header, sequence).encryptor().update(struct.pack(">L", len(body)))
    encrypted += chacha_stream(main, sequence, counter=1).encryptor().update(body)
    poly_key = chacha_stream(main, sequence).encryptor().update(bytes(32))
    packet = encrypted + Poly1305.generate_tag(poly_key, encrypted)
    opener = make_opener(CHACHA, b"", b"", KEY, b"")
    assert opener.open(sequence, packet[:3]) is None
    assert opener.open(sequence, packet[:20]) is None
    assert opener.open(sequence, packet + b"next") == (payload, len(packet))


@pytest.mark.parametrize("cipher", [b"aes128-gcm@openssh.com", b"aes256-gcm@openssh.com"])
def test_aes_gcm_both_ways(cipher: bytes) -> None:
    """RFC 5647 as OpenSSH does it: the length in clear is the AAD, the nonce is the IV's fixed
    4 bytes and a 64-bit invocation counter that grows by one a packet."""
    key = KEY[: 16 if b"128" in cipher else 32]
    sealer = make_sealer(cipher, b"", IV, KEY, b"")
    aead = AESGCM(key)
    counter = int.from_bytes(IV[4:12], "big")
    for number, payload in enumerate(PAYLOADS):
        packet = sealer.seal(number + 3, payload)
        length = packet[:4]
        nonce = IV[:4] + (counter + number).to_bytes(8, "big")
        body = aead.decrypt(nonce, packet[4:], length)
        assert len(body) == struct.unpack(">L", length)[0] and len(body) % 16 == 0
        assert body[1 : len(body) - body[0]] == payload and body[0] >= 4
    opener = make_opener(cipher, b"", IV, KEY, b"")
    for number, payload in enumerate(PAYLOADS):
        body = body_of(payload, padding_for(1 + len(payload), 16))
        length = struct.pack(">L", len(body))
        nonce = IV[:4] + (counter + number).to_bytes(8, "big")
        packet = length + aead.encrypt(nonce, body, length)
        assert opener.open(number, packet) == (payload, len(packet))


@pytest.mark.parametrize(
    ("cipher", "mac", "digest"),
    [
        (b"aes128-ctr", b"hmac-sha2-256-etm@openssh.com", hashlib.sha256),
        (b"aes256-ctr", b"hmac-sha2-512-etm@openssh.com", hashlib.sha512),
    ],
)
def test_encrypt_then_mac_both_ways(cipher: bytes, mac: bytes, digest: object) -> None:
    """-etm: the length in clear, the rest AES-CTR (one stream for the connection), and the MAC
    over sequence number, length and ciphertext."""
    size = 16 if b"128" in cipher else 32
    mac_key = MAC_KEY[: 32 if digest is hashlib.sha256 else 64]
    sealer = make_sealer(cipher, mac, IV, KEY, MAC_KEY)
    decrypt = Cipher(algorithms.AES(KEY[:size]), modes.CTR(IV)).decryptor()
    for sequence, payload in enumerate(PAYLOADS):
        packet = sealer.seal(sequence, payload)
        (length,) = struct.unpack(">L", packet[:4])
        assert length % 16 == 0
        tag = hmac.digest(mac_key, struct.pack(">L", sequence) + packet[: 4 + length], digest)  # type: ignore[arg-type]
        assert packet[4 + length :] == tag
        body = decrypt.update(packet[4 : 4 + length])
        assert body[1 : length - body[0]] == payload
    opener = make_opener(cipher, mac, IV, KEY, MAC_KEY)
    encrypt = Cipher(algorithms.AES(KEY[:size]), modes.CTR(IV)).encryptor()
    for sequence, payload in enumerate(PAYLOADS):
        body = body_of(payload, padding_for(1 + len(payload), 16))
        clear = struct.pack(">L", len(body)) + encrypt.update(body)
        packet = clear + hmac.digest(mac_key, struct.pack(">L", sequence) + clear, digest)  # type: ignore[arg-type]
        assert opener.open(sequence, packet[:-1]) is None
        assert opener.open(sequence, packet) == (payload, len(packet))


def test_encrypt_and_mac_both_ways() -> None:
    """RFC 4253's encrypt-and-MAC: the whole packet encrypted, the MAC over the plaintext."""
    mac = b"hmac-sha2-256"
    sealer = make_sealer(b"aes128-ctr", mac, IV, KEY, MAC_KEY)
    decrypt = Cipher(algorithms.AES(KEY[:16]), modes.CTR(IV)).decryptor()
    for sequence, payload in enumerate(PAYLOADS):
        packet = sealer.seal(sequence, payload)
        clear = decrypt.update(packet[:-32])
        (length,) = struct.unpack(">L", clear[:4])
        assert (4 + length) % 16 == 0 and clear[5 : 4 + length - clear[4]] == payload
        expected = hmac.digest(MAC_KEY[:32], struct.pack(">L", sequence) + clear, "sha256")
        assert packet[-32:] == expected
    opener = make_opener(b"aes128-ctr", mac, IV, KEY, MAC_KEY)
    encrypt = Cipher(algorithms.AES(KEY[:16]), modes.CTR(IV)).encryptor()
    for sequence, payload in enumerate(PAYLOADS):
        pad = padding_for(5 + len(payload), 16)
        clear = struct.pack(">L", 1 + len(payload) + pad) + body_of(payload, pad)
        tag = hmac.digest(MAC_KEY[:32], struct.pack(">L", sequence) + clear, "sha256")
        packet = encrypt.update(clear) + tag
        assert opener.open(sequence, packet[:10]) is None  # the first block is kept
        assert opener.open(sequence, packet) == (payload, len(packet))


ALGORITHMS = [
    (CHACHA, b""),
    (b"aes128-gcm@openssh.com", b""),
    (b"aes256-gcm@openssh.com", b""),
    (b"aes128-ctr", b"hmac-sha2-256-etm@openssh.com"),
    (b"aes256-ctr", b"hmac-sha2-512-etm@openssh.com"),
    (b"aes128-ctr", b"hmac-sha2-256"),
]


@pytest.mark.parametrize(("cipher", "mac"), ALGORITHMS, ids=[c + m for c, m in ALGORITHMS])
@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_is_refused(cipher: bytes, mac: bytes, position: int, bit: int) -> None:
    """Flipping any bit of a packet makes ``open`` raise (bad MAC, tag or length), never
    return a payload."""
    packet = bytearray(make_sealer(cipher, mac, IV, KEY, MAC_KEY).seal(5, b"\x5e" + bytes(100)))
    packet[position % len(packet)] ^= 1 << bit
    with pytest.raises(PacketError) as error:
        result = make_opener(cipher, mac, IV, KEY, MAC_KEY).open(5, bytes(packet))
        if result is None:  # a length made longer: the rest never comes, or comes wrong
            make_opener(cipher, mac, IV, KEY, MAC_KEY).open(5, bytes(packet) + bytes(2**20 + 64))
    assert error.value.code in (2, 5)


@pytest.mark.parametrize(("cipher", "mac"), ALGORITHMS, ids=[c + m for c, m in ALGORITHMS])
def test_wrong_sequence_number_is_refused(cipher: bytes, mac: bytes) -> None:
    """A packet authenticated as number 5 does not open as number 6 (except under AES-GCM,
    whose nonce counts packets by itself and is unaffected by the sequence number)."""
    packet = make_sealer(cipher, mac, IV, KEY, MAC_KEY).seal(5, b"\x5e" + bytes(100))
    opener = make_opener(cipher, mac, IV, KEY, MAC_KEY)
    if b"gcm" in cipher:
        assert opener.open(6, packet) is not None
        return
    with pytest.raises(PacketError) as error:
        opener.open(6, packet)
    assert error.value.code in (2, 5)


@pytest.mark.parametrize(("cipher", "mac"), ALGORITHMS, ids=[c + m for c, m in ALGORITHMS])
@given(payload=st.binary(min_size=1, max_size=300))
def test_round_trip_and_padding(cipher: bytes, mac: bytes, payload: bytes) -> None:
    """Every payload comes back unchanged after a sealer and an opener with the same keys."""
    sealer = make_sealer(cipher, mac, IV, KEY, MAC_KEY)
    opener = make_opener(cipher, mac, IV, KEY, MAC_KEY)
    for sequence in (0, 1):
        packet = sealer.seal(sequence, payload)
        assert opener.open(sequence, packet) == (payload, len(packet))


def test_libsodium_primitives_are_found() -> None:
    """PyNaCl's libsodium gives chacha20-poly1305@openssh.com its one-call primitives (the
    per-packet cost of cryptography's contexts is what they avoid)."""
    from gateway.sftp.chacha_sodium import SODIUM

    assert SODIUM is not None


@pytest.mark.parametrize(
    "payload", [*PAYLOADS, b"\x5e" + os.urandom(8192)], ids=["1", "28", "32k", "8k"]
)
def test_chacha20_poly1305_without_libsodium(
    payload: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where libsodium lacks the primitives (and for packets of 16 KiB or more, where OpenSSL
    is faster), cryptography's give byte-identical packets, and each side opens the other's."""
    import gateway.sftp.ciphers as ciphers

    with_sodium = make_sealer(CHACHA, b"", b"", KEY, b"")
    without = make_sealer(CHACHA, b"", b"", KEY, b"")
    for sealer in (with_sodium, without):
        sealer._padding.take = lambda n: bytes(n)  # type: ignore[attr-defined]
    sealed = with_sodium.seal(9, payload)
    monkeypatch.setattr(ciphers, "SODIUM", None)
    assert without.seal(9, payload) == sealed
    assert make_opener(CHACHA, b"", b"", KEY, b"").open(9, sealed) == (payload, len(sealed))
    bad = bytearray(sealed)
    bad[len(bad) // 2] ^= 0x10
    with pytest.raises(PacketError):
        make_opener(CHACHA, b"", b"", KEY, b"").open(9, bytes(bad))
