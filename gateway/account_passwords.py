"""Accounts' passwords: their canonical bytes and their Argon2id hashes.

Passwords are NFC-normalized and UTF-8 encoded before hashing, and hashed with
Argon2id in the libsodium/PHC string format (``nacl.pwhash.argon2id.str``; time
cost 2, 64 MiB, about 50-100 ms to check).
"""

from __future__ import annotations

import unicodedata

import nacl.pwhash

from gateway.account_errors import InvalidPassword

__all__ = ["MAX_PASSWORD_BYTES", "MEMLIMIT", "OPSLIMIT", "hash_password", "password_bytes"]

OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE
MAX_PASSWORD_BYTES = 1024


def password_bytes(password: str | bytes) -> bytes:
    """Canonical bytes of a password: NFC-normalized UTF-8 (raw bytes if not UTF-8)."""
    if isinstance(password, str):
        text = password
    else:
        try:
            text = password.decode("utf-8")
        except UnicodeDecodeError:
            return password
    return unicodedata.normalize("NFC", text).encode("utf-8")


def hash_password(password: str | bytes) -> bytes:
    """Hash a password with Argon2id for storage; raise `InvalidPassword` if unusable."""
    secret = password_bytes(password)
    if not secret:
        raise InvalidPassword("the password must not be empty")
    if len(secret) > MAX_PASSWORD_BYTES:
        raise InvalidPassword(f"the password must be at most {MAX_PASSWORD_BYTES} bytes long")
    return nacl.pwhash.argon2id.str(secret, opslimit=OPSLIMIT, memlimit=MEMLIMIT)
