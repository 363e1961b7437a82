"""The primitives of ``chacha20-poly1305@openssh.com`` from libsodium, called through cffi.

OpenSSH's construction uses the original ChaCha20 (a 64-bit nonce, the packet's
sequence number, and a 64-bit block counter) twice per packet and Poly1305 once.
Built from ``cryptography`` that is two new cipher contexts and a Poly1305 object
per packet, about 50 µs: more than the rest of a small SFTP request's handling.
libsodium has each as one call (``crypto_stream_chacha20_xor_ic``,
``crypto_onetimeauth_poly1305``), a few µs for a small packet (for large ones
OpenSSL's vectorised code is faster: see ``SODIUM_BELOW`` in
:mod:`gateway.sftp.ciphers`). PyNaCl, a dependency already, ships libsodium but
does not bind these two, so they are declared here and called through cffi's ABI
mode (cffi is what PyNaCl and ``cryptography`` bind with): from PyNaCl's own copy
(initialised when ``nacl.bindings`` is imported), else from the system's
``libsodium``. :data:`SODIUM` is None when neither has them;
:mod:`gateway.sftp.ciphers` then uses ``cryptography``.

Each call writes into a :class:`Scratch` its caller owns (one per direction of a
connection) and returns a copy of the bytes written: a new C buffer per call (or,
as this module did before, ``ctypes`` and its ``create_string_buffer``) cost three
times the call itself, about 2 µs of the 3 to 4 a small packet's call took.
"""

from __future__ import annotations

import ctypes.util
import hmac
from typing import Any

import cffi
import nacl.bindings  # imported for its sodium_init(), and to find its library

__all__ = ["SODIUM", "Scratch", "Sodium"]

_DECLARATIONS = """
int crypto_stream_chacha20_xor_ic(unsigned char *c, const unsigned char *m,
    unsigned long long mlen, const unsigned char *n, uint64_t ic, const unsigned char *k);
int crypto_onetimeauth_poly1305(unsigned char *out, const unsigned char *in,
    unsigned long long inlen, const unsigned char *k);
"""

_ffi = cffi.FFI()
_ffi.cdef(_DECLARATIONS)


class Scratch:
    """Where one user of :class:`Sodium` (one direction of one connection, used from one
    thread) has its output written; grows to the longest output asked for."""

    def __init__(self, size: int = 2048) -> None:
        self._allocate(size)

    def _allocate(self, size: int) -> None:
        self._buffer = bytearray(size)
        self._view = memoryview(self._buffer)
        self.pointer: Any = _ffi.from_buffer(self._buffer)

    def reserve(self, size: int) -> None:
        """Make room for ``size`` bytes of output."""
        if size > len(self._buffer):
            self._allocate(max(size, 2 * len(self._buffer)))

    def take(self, size: int) -> bytes:
        """A copy of the first ``size`` bytes written."""
        return self._view[:size].tobytes()


class Sodium:
    """ChaCha20 (64-bit nonce) and Poly1305 from one libsodium library."""

    def __init__(self, library: Any):
        self._xor = library.crypto_stream_chacha20_xor_ic
        self._tag = library.crypto_onetimeauth_poly1305

    def xor(self, scratch: Scratch, key: bytes, nonce: bytes, counter: int, data: bytes) -> bytes:
        """``data`` XOR the keystream of ``key`` and the 8-byte ``nonce`` from block
        ``counter`` on."""
        size = len(data)
        scratch.reserve(size)
        self._xor(scratch.pointer, data, size, nonce, counter, key)
        return scratch.take(size)

    def tag(self, scratch: Scratch, key: bytes, message: bytes) -> bytes:
        """The Poly1305 tag of ``message`` under the one-time ``key`` (32 bytes)."""
        self._tag(scratch.pointer, message, len(message), key)
        return scratch.take(16)

    def verify(self, scratch: Scratch, key: bytes, message: bytes, tag: bytes) -> bool:
        """Whether ``tag`` is ``message``'s Poly1305 tag (compared in constant time)."""
        return hmac.compare_digest(self.tag(scratch, key, message), tag)


def _load() -> Sodium | None:
    candidates = [getattr(nacl.bindings, "__file__", None)]
    try:
        from nacl import _sodium

        candidates.insert(0, _sodium.__file__)
    except ImportError:  # pragma: no cover - PyNaCl always has it
        pass
    candidates.append(ctypes.util.find_library("sodium"))
    for path in candidates:
        if not path:
            continue
        try:
            sodium = Sodium(_ffi.dlopen(path))
        except (OSError, AttributeError):
            continue
        if _works(sodium):
            return sodium
    return None


def _works(sodium: Sodium) -> bool:
    """The first keystream block of ChaCha20 (RFC 7539 test vector 2.3.2's key and counter
    0, 64-bit nonce of zeros: draft-agl-tls-chacha20poly1305 test vector 1)."""
    block = sodium.xor(Scratch(), bytes(32), bytes(8), 0, bytes(16))
    return block == bytes.fromhex("76b8e0ada0f13d90405d6ae55386bd28")


SODIUM: Sodium | None = _load()
"""libsodium's primitives, or None when no loadable libsodium has them."""
