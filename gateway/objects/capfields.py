"""The fields of capability strings: each decoded with an error that names it.

:func:`gateway.objects.caps.parse` reads a capability string field by field with
these. A field's error says which field was wrong and why, never what it held
(a capability is a secret).

The *overlay* of a patched chunk tree (``GG:PTREE:…``, see
:mod:`gateway.objects.overlay`) is the one field that holds file bytes: the
unpadded base64url of the CBOR ``[[offset, bytes], ...]``, its ranges in file
order, none empty, none touching the next, all within the file.
"""

from __future__ import annotations

import base64
import binascii
import functools
from typing import Any

import cbor2

from gateway.objects.errors import BadCapability
from storage import base32

MAX_SHARES = 256

MAX_OVERLAY_BYTES = 64 * 1024
"""The most bytes an overlay may hold (a reader refuses more)."""

MAX_OVERLAY_RANGES = 64
"""The most ranges an overlay may hold (a reader refuses more)."""

Overlay = tuple[tuple[int, bytes], ...]
"""Byte ranges laid over a file: (offset, bytes), in file order, apart."""

_STANDARD = bytes.maketrans(b"-_", b"+/")


def b32decode(text: str, what: str, size: int | None = None) -> bytes:
    """Decode lowercase unpadded base32, raising BadCapability that names ``what`` was wrong."""
    try:
        data = base32.a2b(text)
    except ValueError as e:
        raise BadCapability(f"the {what} is {e}") from None
    if size is not None and len(data) != size:
        raise BadCapability(f"the {what} has {len(data)} bytes where {size} are expected")
    return data


def number(text: str, what: str) -> int:
    """A decimal number field (no sign, no leading zero)."""
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise BadCapability(f"the {what} is not a decimal number")
    if len(text) > 20:
        raise BadCapability(f"the {what} is too large")
    return int(text)


def check_params(k: int, n: int) -> None:
    """Encoding parameters a cap may name."""
    if not 1 <= k <= n <= MAX_SHARES:
        raise BadCapability(f"encoding parameters k={k}, n={n} are not 1 <= k <= n <= 256")


@functools.lru_cache(maxsize=16)
def encode_overlay(overlay: Overlay) -> str:
    """The overlay field of a capability string (the last 16 kept, each up to 64 KiB: a
    version's cap is printed for its upload's record and for its directory entry)."""
    data = cbor2.dumps([[offset, data] for offset, data in overlay])
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@functools.lru_cache(maxsize=16)
def decode_overlay(text: str, size: int) -> Overlay:
    """Parse and check an overlay field for a file of ``size`` bytes."""
    if len(text) > (MAX_OVERLAY_BYTES + 16 * MAX_OVERLAY_RANGES + 16) * 4 // 3:
        raise BadCapability("the overlay is too long")
    if not text.isascii() or "+" in text or "/" in text or "=" in text:
        raise BadCapability("the overlay is not unpadded base64url")
    try:
        padded = text.encode("ascii").translate(_STANDARD) + b"=" * (-len(text) % 4)
        raw = binascii.a2b_base64(padded, strict_mode=True)
        decoded: Any = cbor2.loads(raw)
    except (binascii.Error, ValueError, cbor2.CBORDecodeError):
        raise BadCapability("the overlay is not unpadded base64url of CBOR") from None
    overlay = check_overlay(decoded, size)
    if encode_overlay(overlay) != text:  # one string per cap (no trailing or other bytes)
        raise BadCapability("the overlay is not in its canonical form")
    return overlay


def check_overlay(decoded: Any, size: int) -> Overlay:
    """``decoded`` as an overlay of a file of ``size`` bytes, or BadCapability saying why not."""
    if not isinstance(decoded, list) or not 1 <= len(decoded) <= MAX_OVERLAY_RANGES:
        raise BadCapability(f"the overlay is not a list of 1 to {MAX_OVERLAY_RANGES} ranges")
    overlay: list[tuple[int, bytes]] = []
    end, total = -1, 0
    for item in decoded:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or type(item[0]) is not int
            or not isinstance(item[1], bytes)
            or not item[1]
        ):
            raise BadCapability("an overlay range is not [offset, bytes]")
        offset, data = item
        if offset <= end or offset + len(data) > size:
            raise BadCapability("the overlay's ranges are not apart, in order, within the file")
        end, total = offset + len(data), total + len(data)
        overlay.append((offset, data))
    if total > MAX_OVERLAY_BYTES:
        raise BadCapability(f"the overlay holds more than {MAX_OVERLAY_BYTES} bytes")
    return tuple(overlay)
