"""Where shares go: the permuted ring and the servers-of-happiness measure.

Happiness is Tahoe-LAFS's definition: the size of a maximum matching between
servers and the shares they hold (each server counted at most once, each share
at most once). When happiness ≥ ``happy`` ≥ ``k``, any ``k`` of those matched
servers together hold ``k`` distinct shares, so the file survives the loss of all
other servers.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

from gateway.grid.interfaces import IStorageClient
from gateway.objects.crypto import ring_position

S = TypeVar("S", bound=Hashable)


def permuted_ring(servers: Iterable[IStorageClient], storage_index: bytes) -> list[IStorageClient]:
    """The servers in the order this storage index prefers them (BLAKE2b of index and id)."""
    return sorted(servers, key=lambda s: ring_position(storage_index, s.server_id))


def happiness(holders: Mapping[S, Iterable[int]]) -> int:
    """The size of a maximum server↔share matching (augmenting paths; n ≤ 256 keeps it cheap)."""
    owner: dict[int, S] = {}

    def augment(server: S, seen: set[int]) -> bool:
        for share in holders[server]:
            if share in seen:
                continue
            seen.add(share)
            if share not in owner or augment(owner[share], seen):
                owner[share] = server
                return True
        return False

    return sum(1 for server in holders if augment(server, set()))


def spread(holdings: Sequence[tuple[S, Sequence[int]]]) -> list[tuple[S, int]]:
    """Order (server, share) pairs so the first pass takes one share from each server.

    ``holdings`` is in ring order; the result lists every server's first share,
    then every server's second share, and so on.
    """
    out: list[tuple[S, int]] = []
    depth = max((len(shares) for _, shares in holdings), default=0)
    for level in range(depth):
        out.extend((server, shares[level]) for server, shares in holdings if level < len(shares))
    return out
