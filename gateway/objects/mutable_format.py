"""The format of mutable shares: the signed header before each one, and the version it names.

A version is ``(sequence number, salt, UEB hash)``. Its contents are encoded
exactly like an immutable file (see :mod:`gateway.objects.immutable_format`)
under a key derived from the read key and the version's fresh random salt. Each
share is that immutable-format share preceded by a signed header::

    magic "GG-MUT1\\n" (8) | seqnum (u64) | salt (32) | UEB hash (32)
    | k (u16) | n (u16) | segment size (u32) | size (u64) | Ed25519 signature (64)

The signature covers the storage index and every header field before it, so a
server cannot roll a share back to another object's version. Reading is
:mod:`gateway.objects.mutable_read`'s, writing :mod:`gateway.objects.mutable`'s.
"""

from __future__ import annotations

import struct

import nacl.exceptions
import nacl.signing
from attrs import field, frozen

from gateway.objects.caps import MutableReadCap, MutableWriteCap
from gateway.objects.errors import CorruptShare

_HEADER = struct.Struct(">8sQ32s32sHHIQ64s")
MAGIC = b"GG-MUT1\n"
HEADER_SIZE = _HEADER.size
_SIGNED = HEADER_SIZE - 64
_SIG_DOMAIN = b"GG-MUT1-SIG\n"


@frozen
class MutableVersion:
    """One signed version of a mutable object (what a writer tests against)."""

    seqnum: int
    salt: bytes = field(repr=False)
    ueb_hash: bytes
    k: int
    n: int
    segment_size: int
    size: int

    def version_bytes(self) -> bytes:
        """The header bytes a test vector compares (seqnum, salt, UEB hash)."""
        return struct.pack(">Q32s32s", self.seqnum, self.salt, self.ueb_hash)

    def rank(self) -> tuple[int, bytes, bytes]:
        """The order readers prefer versions in: sequence number, then root hash (then salt)."""
        return (self.seqnum, self.ueb_hash, self.salt)


def _signed_part(version: MutableVersion) -> bytes:
    return _HEADER.pack(
        MAGIC,
        version.seqnum,
        version.salt,
        version.ueb_hash,
        version.k,
        version.n,
        version.segment_size,
        version.size,
        b"\0" * 64,
    )[:_SIGNED]


def pack_header(writer: MutableWriteCap, version: MutableVersion) -> bytes:
    """The signed header that starts every share of ``version``."""
    signed = _signed_part(version)
    signature = writer.signing_key.sign(_SIG_DOMAIN + writer.storage_index + signed).signature
    return signed + signature


def parse_header(reader: MutableReadCap, data: bytes) -> MutableVersion:
    """Check a share header's signature against the cap, raising CorruptShare when it fails."""
    if len(data) < HEADER_SIZE:
        raise CorruptShare("the mutable share is too short for its header")
    magic, seqnum, salt, ueb_hash, k, n, segsize, size, signature = _HEADER.unpack(
        data[:HEADER_SIZE]
    )
    if magic != MAGIC:
        raise CorruptShare("the mutable share has an unknown format")
    try:
        nacl.signing.VerifyKey(reader.public_key).verify(
            _SIG_DOMAIN + reader.storage_index + data[:_SIGNED], signature
        )
    except nacl.exceptions.BadSignatureError:
        raise CorruptShare("the mutable share's signature is invalid") from None
    return MutableVersion(seqnum, salt, ueb_hash, k, n, segsize, size)
