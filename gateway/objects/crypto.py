"""Every key, secret and hash the object layer derives, from PyNaCl (libsodium) primitives only.

Each derived value uses BLAKE2b with its own personalization tag (``PERSON_*``),
so no two derivations can collide even on equal inputs. Multi-part inputs are
length-prefixed before hashing. Segment encryption is XChaCha20-Poly1305.

BLAKE2b itself comes from :mod:`hashlib` (the same function as libsodium's
``crypto_generichash_blake2b_salt_personal``, byte for byte, but about ten times
cheaper per call than PyNaCl's wrapper, which matters for the many small
derivations of every directory operation). Derivations from a write or read key
are cached: the same directory is published again and again.
"""

from __future__ import annotations

import functools
import hashlib
import struct

import nacl.bindings
import nacl.exceptions
import nacl.utils
from attrs import field, frozen

from gateway.objects.errors import CorruptObject

KEY_SIZE = 32
"""Bytes in every symmetric key and secret this layer makes."""

STORAGE_INDEX_SIZE = 16
"""Bytes in a storage index (the wire carries it as 26 base32 characters)."""

HASH_SIZE = 32
"""Bytes in every Merkle tree node and committed hash."""

AEAD_TAG_SIZE: int = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES

PERSON_PLAINTEXT = b"gg:imm:plain"
PERSON_CONVERGENT = b"gg:imm:converge"
PERSON_IMM_SI = b"gg:imm:si"
PERSON_IMM_DATA_KEY = b"gg:imm:datakey"
PERSON_MUT_READ_KEY = b"gg:mut:readkey"
PERSON_MUT_SI = b"gg:mut:si"
PERSON_MUT_DATA_KEY = b"gg:mut:datakey"
PERSON_MUT_WE_MASTER = b"gg:mut:we-master"
PERSON_WRITE_ENABLER = b"gg:mut:we"
PERSON_DIR_WRITE_KEY = b"gg:dir:writekey"
PERSON_LEASE_RENEW = b"gg:lease:renew"
PERSON_LEASE_CANCEL = b"gg:lease:cancel"
PERSON_UPLOAD = b"gg:upload"
PERSON_RING = b"gg:ring"
PERSON_MERKLE_PAD = b"gg:merkle:pad"
PERSON_BLOCK_LEAF = b"gg:imm:blockleaf"
PERSON_BLOCK_NODE = b"gg:imm:blocknode"
PERSON_SHARE_LEAF = b"gg:imm:shareleaf"
PERSON_SHARE_NODE = b"gg:imm:sharenode"
PERSON_UEB = b"gg:imm:ueb"
PERSON_MUT_BLOCK_LEAF = b"gg:mut:blockleaf"
PERSON_MUT_BLOCK_NODE = b"gg:mut:blocknode"
PERSON_MUT_SHARE_LEAF = b"gg:mut:shareleaf"
PERSON_MUT_SHARE_NODE = b"gg:mut:sharenode"


def blake2b_hash(
    data: bytes, person: bytes, key: bytes = b"", salt: bytes = b"", size: int = HASH_SIZE
) -> bytes:
    """BLAKE2b of ``data`` under a personalization tag (and optional key and salt), raw bytes."""
    return hashlib.blake2b(data, digest_size=size, key=key, salt=salt, person=person).digest()


def streaming_hasher(person: bytes, key: bytes = b"") -> hashlib.blake2b:
    """An incremental BLAKE2b (``update``/``digest``) under a personalization tag."""
    return hashlib.blake2b(digest_size=HASH_SIZE, key=key, person=person)


#: Distinct keys whose derivations are remembered (a directory tree's worth).
DERIVATION_CACHE = 4096


def length_prefixed(*parts: bytes) -> bytes:
    """Concatenate ``parts`` unambiguously: each is preceded by its length (4 bytes, big-endian)."""
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def random_key() -> bytes:
    """A fresh random 32-byte key (for non-convergent uploads and per-version salts)."""
    return nacl.utils.random(KEY_SIZE)


# --- immutable objects -------------------------------------------------------


def convergent_key(
    convergence_secret: bytes, k: int, n: int, segment_size: int, plaintext_hash: bytes
) -> bytes:
    """The read key of an immutable file: same secret, parameters and plaintext give the same key.

    The encoding parameters are hashed in, so the same file uploaded with different
    parameters gets a different key and storage index (and does not collide with
    shares that another layout would misread).
    """
    params = struct.pack(">HHI", k, n, segment_size)
    return blake2b_hash(
        length_prefixed(params, plaintext_hash),
        person=PERSON_CONVERGENT,
        key=blake2b_hash(convergence_secret, person=PERSON_CONVERGENT),
    )


@functools.lru_cache(maxsize=DERIVATION_CACHE)
def immutable_storage_index(read_key: bytes) -> bytes:
    """The storage index of an immutable file: a one-way function of its read key."""
    return blake2b_hash(read_key, person=PERSON_IMM_SI, size=STORAGE_INDEX_SIZE)


@functools.lru_cache(maxsize=DERIVATION_CACHE)
def immutable_data_key(read_key: bytes) -> bytes:
    """The XChaCha20-Poly1305 key that encrypts an immutable file's segments."""
    return blake2b_hash(read_key, person=PERSON_IMM_DATA_KEY)


# --- mutable objects ---------------------------------------------------------


@functools.lru_cache(maxsize=DERIVATION_CACHE)
def mutable_read_key(signing_seed: bytes) -> bytes:
    """A mutable object's read key, derived from the Ed25519 seed held by its write cap."""
    return blake2b_hash(signing_seed, person=PERSON_MUT_READ_KEY)


@functools.lru_cache(maxsize=DERIVATION_CACHE)
def mutable_storage_index(read_key: bytes) -> bytes:
    """A mutable object's storage index: a one-way function of its read key."""
    return blake2b_hash(read_key, person=PERSON_MUT_SI, size=STORAGE_INDEX_SIZE)


def mutable_data_key(read_key: bytes, version_salt: bytes) -> bytes:
    """The segment key of one version of a mutable object (a fresh salt per version)."""
    return blake2b_hash(version_salt, person=PERSON_MUT_DATA_KEY, key=read_key)


@functools.lru_cache(maxsize=DERIVATION_CACHE)
def write_enabler_master(signing_seed: bytes) -> bytes:
    """The secret from which per-server write enablers derive; only writers can compute it."""
    return blake2b_hash(signing_seed, person=PERSON_MUT_WE_MASTER)


def write_enabler(master: bytes, server_id: bytes, storage_index: bytes) -> bytes:
    """The write enabler one server stores for one mutable slot (differs per server)."""
    return blake2b_hash(
        length_prefixed(server_id, storage_index), person=PERSON_WRITE_ENABLER, key=master
    )


@functools.lru_cache(maxsize=DERIVATION_CACHE)
def directory_write_key(signing_seed: bytes) -> bytes:
    """The key that encrypts child write caps in a directory (only write-cap holders have it)."""
    return blake2b_hash(signing_seed, person=PERSON_DIR_WRITE_KEY)


# --- per-server secrets ------------------------------------------------------


@frozen
class GatewaySecrets:
    """The long-lived secrets of one gateway: convergence and lease secrets (never printed)."""

    convergence: bytes = field(repr=False)
    lease: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> GatewaySecrets:
        """Fresh random secrets for a new gateway."""
        return cls(convergence=random_key(), lease=random_key())

    def renew_secret(self, server_id: bytes, storage_index: bytes) -> bytes:
        """The lease renewal secret for one storage index on one server."""
        return _per_server(self.lease, PERSON_LEASE_RENEW, server_id, storage_index)

    def cancel_secret(self, server_id: bytes, storage_index: bytes) -> bytes:
        """The lease cancellation secret for one storage index on one server."""
        return _per_server(self.lease, PERSON_LEASE_CANCEL, server_id, storage_index)

    def upload_secret(self, server_id: bytes, storage_index: bytes) -> bytes:
        """The upload secret for an immutable allocation.

        Deterministic, so a gateway resuming an interrupted upload after a restart
        presents the same secret and the server's allocation is idempotent.
        """
        return _per_server(self.lease, PERSON_UPLOAD, server_id, storage_index)


def _per_server(secret: bytes, person: bytes, server_id: bytes, storage_index: bytes) -> bytes:
    return blake2b_hash(length_prefixed(server_id, storage_index), person=person, key=secret)


def ring_position(storage_index: bytes, server_id: bytes) -> bytes:
    """A server's place on the permuted ring of one storage index (sort ascending)."""
    return blake2b_hash(length_prefixed(storage_index, server_id), person=PERSON_RING)


# --- segment encryption ------------------------------------------------------


def _segment_nonce_and_ad(segment_number: int, num_segments: int) -> tuple[bytes, bytes]:
    nonce = struct.pack(">16xQ", segment_number)
    return nonce, struct.pack(">QQ", segment_number, num_segments)


def encrypt_segment(key: bytes, segment_number: int, num_segments: int, plaintext: bytes) -> bytes:
    """Encrypt and authenticate one segment; its number and the segment count are bound in.

    The nonce is the segment number: a key encrypts exactly one object version,
    so (key, nonce) pairs never repeat with different plaintexts.
    """
    nonce, ad = _segment_nonce_and_ad(segment_number, num_segments)
    return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key)


def decrypt_segment(key: bytes, segment_number: int, num_segments: int, ciphertext: bytes) -> bytes:
    """Decrypt one segment, raising CorruptObject when authentication fails."""
    nonce, ad = _segment_nonce_and_ad(segment_number, num_segments)
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, ad, nonce, key)
    except nacl.exceptions.CryptoError:
        raise CorruptObject(
            f"segment {segment_number} failed authentication after its shares verified"
        ) from None
