"""Fixed test values: storage indexes and secrets."""

from __future__ import annotations

SI = b"\x01" * 16
SI2 = b"\x02" * 16
UPLOAD = b"upload-secret-1"
UPLOAD2 = b"upload-secret-2"
RENEW = b"r" * 32
RENEW2 = b"R" * 32
CANCEL = b"c" * 32
WE = b"w" * 32
WE2 = b"W" * 32
