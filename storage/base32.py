"""Lowercase unpadded base32: how Tahoe-LAFS writes storage indexes, swissnums and secrets.

The one encoder and decoder of that text form in the project; the storage
server, the HTTP wire format and the gateway's capabilities all use it. Python's
base32 is written in Python (several microseconds for a key), and the same
storage indexes and capabilities are encoded again and again (every share
path, every directory entry made or parsed): recent results are kept.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re

_SYMBOLS = re.compile(r"[a-z2-7]*")

#: Texts and byte strings whose conversion is kept (each a key or an index: ~150 bytes).
CACHED = 8192


def b2a(data: bytes) -> str:
    """``data`` as lowercase base32 without padding."""
    return _b2a(data if type(data) is bytes else bytes(data))


@functools.lru_cache(maxsize=CACHED)
def _b2a(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def a2b(text: str) -> bytes:
    """The bytes of lowercase unpadded base32 ``text``.

    Raises ``ValueError`` (saying why) for other symbols, an impossible length, or
    a text that is not the canonical encoding of its bytes (damaged or truncated).
    """
    return _a2b(text if type(text) is str else str(text))


@functools.lru_cache(maxsize=CACHED)
def _a2b(text: str) -> bytes:
    if not _SYMBOLS.fullmatch(text):
        raise ValueError("not valid base32 (only a-z and 2-7 are allowed)")
    try:
        data = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except binascii.Error:
        raise ValueError("not valid base32 (wrong length)") from None
    if b2a(data) != text:
        raise ValueError("not canonical base32 (damaged or truncated)")
    return data
