"""The primitives of ``chacha20-poly1305@openssh.com`` from libsodium, called through ctypes.

OpenSSH's construction uses the original ChaCha20 (a 64-bit nonce, the packet's
sequence number, and a 64-bit block counter) twice per packet and Poly1305 once.
Built from ``cryptography`` that is two new cipher contexts and a Poly1305 object
per packet, about 50 µs: more than the rest of a small SFTP request's handling.
libsodium has each as one call (``crypto_stream_chacha20_xor_ic``,
``crypto_onetimeauth_poly1305``), a few µs for a small packet (for large ones
OpenSSL's vectorised code is faster: see ``SODIUM_BELOW`` in
:mod:`gateway.sftp.ciphers`). PyNaCl, a
dependency already, ships libsodium but does not bind these two, so they are
called through ctypes: from PyNaCl's own copy (initialised when ``nacl.bindings``
is imported), else from the system's ``libsodium``. :data:`SODIUM` is None when
neither has them; :mod:`gateway.sftp.ciphers` then uses ``cryptography``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hmac

import nacl.bindings  # imported for its sodium_init(), and to find its library

__all__ = ["SODIUM", "Sodium"]

_uchar_p = ctypes.c_char_p
_ull = ctypes.c_ulonglong


class Sodium:
    """ChaCha20 (64-bit nonce) and Poly1305 from one libsodium library."""

    def __init__(self, lib: ctypes.CDLL):
        xor = lib.crypto_stream_chacha20_xor_ic
        xor.argtypes = [ctypes.c_void_p, _uchar_p, _ull, _uchar_p, ctypes.c_uint64, _uchar_p]
        xor.restype = ctypes.c_int
        tag = lib.crypto_onetimeauth_poly1305
        tag.argtypes = [ctypes.c_void_p, _uchar_p, _ull, _uchar_p]
        tag.restype = ctypes.c_int
        self._xor = xor
        self._tag = tag

    def xor(self, key: bytes, nonce: bytes, counter: int, data: bytes) -> bytes:
        """``data`` XOR the keystream of ``key`` and the 8-byte ``nonce`` from block
        ``counter`` on."""
        out = ctypes.create_string_buffer(len(data))
        self._xor(out, data, len(data), nonce, counter, key)
        return out.raw

    def tag(self, key: bytes, message: bytes) -> bytes:
        """The Poly1305 tag of ``message`` under the one-time ``key`` (32 bytes)."""
        out = ctypes.create_string_buffer(16)
        self._tag(out, message, len(message), key)
        return out.raw

    def verify(self, key: bytes, message: bytes, tag: bytes) -> bool:
        """Whether ``tag`` is ``message``'s Poly1305 tag (compared in constant time)."""
        return hmac.compare_digest(self.tag(key, message), tag)


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
            sodium = Sodium(ctypes.CDLL(path))
        except (OSError, AttributeError):
            continue
        if _works(sodium):
            return sodium
    return None


def _works(sodium: Sodium) -> bool:
    """The first keystream block of ChaCha20 (RFC 7539 test vector 2.3.2's key and counter
    0, 64-bit nonce of zeros: draft-agl-tls-chacha20poly1305 test vector 1)."""
    block = sodium.xor(bytes(32), bytes(8), 0, bytes(16))
    return block == bytes.fromhex("76b8e0ada0f13d90405d6ae55386bd28")


SODIUM: Sodium | None = _load()
"""libsodium's primitives, or None when no loadable libsodium has them."""
