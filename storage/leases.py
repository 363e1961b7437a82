"""Lease records: who asked this server to keep a storage index, and until when.

A lease is identified by its renew secret. The server never keeps the secrets
themselves, only salted BLAKE2b digests of them, so a copy of the store does not
let anyone renew (or, one day, cancel) leases. Renewing sets the expiry to
``now + 31 days``; a renew secret never seen before adds a new lease.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from attrs import evolve, frozen

#: Seconds added to "now" when a lease is added or renewed (31 days, as in Tahoe-LAFS).
RENEWAL_PERIOD = 31 * 24 * 60 * 60


def secret_digest(secret: bytes, purpose: bytes) -> bytes:
    """Return the digest under which a secret of the given purpose is stored."""
    return hashlib.blake2b(secret, digest_size=32, person=purpose[:16]).digest()


def renew_digest(renew_secret: bytes) -> bytes:
    """Digest stored in place of a lease renew secret."""
    return secret_digest(renew_secret, b"lease-renew")


def cancel_digest(cancel_secret: bytes) -> bytes:
    """Digest stored in place of a lease cancel secret."""
    return secret_digest(cancel_secret, b"lease-cancel")


def write_enabler_digest(write_enabler: bytes) -> bytes:
    """Digest stored in place of a mutable slot's write enabler."""
    return secret_digest(write_enabler, b"write-enabler")


@frozen
class Lease:
    """One lease on a storage index: digests of its secrets and its expiry (POSIX seconds)."""

    renew_digest: bytes
    cancel_digest: bytes
    expiration: int

    def has_expired(self, now: float) -> bool:
        """Whether the lease ran out at or before ``now``."""
        return self.expiration <= now


def new_lease(renew_secret: bytes, cancel_secret: bytes, now: float) -> Lease:
    """A lease for the given secrets running for one renewal period from ``now``."""
    return Lease(
        renew_digest=renew_digest(renew_secret),
        cancel_digest=cancel_digest(cancel_secret),
        expiration=int(now) + RENEWAL_PERIOD,
    )


RENEWAL_GRANULARITY = 60 * 60
"""A renewal that would extend a lease by less than this leaves it as stored (servers then
skip a durable metadata write; a lease ends at most this much before 31 days after the
latest renewal)."""


def add_or_renew(
    leases: Iterable[Lease],
    renew_secret: bytes,
    cancel_secret: bytes,
    now: float,
    granularity: float = 0.0,
) -> tuple[Lease, ...]:
    """Return ``leases`` with the one matching ``renew_secret`` renewed, or a new one added.

    Renewal never shortens a lease, and extends it only by ``granularity`` or more.
    """
    fresh = new_lease(renew_secret, cancel_secret, now)
    result: list[Lease] = []
    found = False
    for lease in leases:
        if not found and hmac.compare_digest(lease.renew_digest, fresh.renew_digest):
            found = True
            if fresh.expiration - lease.expiration >= max(granularity, 1e-9):
                lease = evolve(lease, expiration=fresh.expiration)
        result.append(lease)
    if not found:
        result.append(fresh)
    return tuple(result)


def all_expired(leases: Iterable[Lease], now: float) -> bool:
    """Whether there is at least one lease and every one of them has run out."""
    leases = tuple(leases)
    return bool(leases) and all(lease.has_expired(now) for lease in leases)
