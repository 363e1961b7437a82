"""The plaintext of extents stored last: a change that starts from them reads no shares, the
bytes read are the stored ones, and what is kept stays within its bound."""

from __future__ import annotations

import random

import pytest

from gateway.objects.caps import ImmutableCap, ImmutableReadCap
from gateway.objects.extent_cache import ExtentCache, KeptExtent
from gateway.objects.store import ObjectStore
from tests.objects.chunked_support import (
    CHUNK,
    FANOUT,
    clear,
    make_store,
    pattern,
    read_all,
    requested_indexes,
    update,
)
from tests.objects.grid import run


def update_over(
    store: ObjectStore, base: ImmutableCap, contents: bytes, changed: tuple[int, int]
) -> ImmutableCap:
    """A new version as the gateway stores one: the changed bytes from ``contents``, the
    rest read from the base version through the store (as a change's merge reads it)."""
    reader = store.reader(base)

    async def read(offset: int, length: int) -> bytes:
        data = bytearray(await reader.read(offset, length))
        print("READ", type(reader).__name__, offset, length, getattr(reader, "_readers", None))
        start, stop = max(offset, changed[0]), min(offset + length, changed[1])
        if start < stop:
            data[start - offset : stop - offset] = contents[start:stop]
        return bytes(data)

    return run(store.update_file(base, len(contents), [changed], read))


def cap(size: int, seed: int) -> ImmutableReadCap:
    """An extent's capability (nothing stored)."""
    rng = random.Random(seed)
    return ImmutableReadCap(rng.randbytes(16), rng.randbytes(32), 1, 1, size)


def test_kept_bytes_stay_within_the_capacity_least_recently_used_going_first() -> None:
    """Extents past the capacity push out the one used longest ago; a used one stays."""
    cache = ExtentCache(capacity=3 * 100)
    caps = [cap(100, i) for i in range(4)]
    for i in range(3):
        cache.put(caps[i], bytes([i]) * 100)
    assert cache.get(caps[0]) == bytes(100)  # now the most recently used
    cache.put(caps[3], b"\x03" * 100)
    assert cache.kept_bytes == 300
    assert cache.get(caps[1]) is None
    assert [cache.get(c) is not None for c in (caps[0], caps[2], caps[3])] == [True] * 3


def test_plaintext_that_is_not_the_extent_is_not_kept() -> None:
    """Bytes of another length than the capability names, or more than the capacity, are
    refused (a kept extent is exactly what reading it would return)."""
    cache = ExtentCache(capacity=50)
    cache.put(cap(10, 1), b"short")
    cache.put(cap(60, 2), bytes(60))
    assert cache.kept_bytes == 0
    assert cache.get(cap(10, 1)) is None and cache.get(cap(60, 2)) is None


def test_a_kept_extent_reads_like_the_file() -> None:
    """Any range, clamped at the end; negative ranges refused."""
    reader = KeptExtent(b"0123456789")
    assert reader.size == 10
    assert run(reader.read(0, 10)) == b"0123456789"
    assert run(reader.read(3, 4)) == b"3456"
    assert run(reader.read(8, 100)) == b"89"
    assert run(reader.read(10, 5)) == b""
    with pytest.raises(ValueError):
        run(reader.read(-1, 5))


def test_a_change_to_an_extent_just_stored_reads_no_shares() -> None:
    """fsync after fsync in the same extents (a database's pages): the base of each change is
    the plaintext the one before stored, so no share of it is read; the versions read back
    from the grid (the cache emptied) are the exact contents."""
    store, grid = make_store()
    contents = bytearray(pattern(FANOUT * CHUNK * 3))
    cap0 = update(store, None, bytes(contents), [(0, len(contents))])
    versions = [(cap0, bytes(contents))]
    rng = random.Random(5)
    hits = store.recent_extents.hits
    for _ in range(10):
        offset = rng.choice([0, CHUNK * 5 + 100, len(contents) - 50])
        contents[offset : offset + 40] = rng.randbytes(40)
        clear(grid)
        new = update_over(store, versions[-1][0], bytes(contents), (offset, offset + 40))
        assert not requested_indexes(grid), "a change read shares of an extent just stored"
        versions.append((new, bytes(contents)))
    assert store.recent_extents.hits > hits
    store.recent_extents = ExtentCache(0)
    for version, expected in versions:
        assert read_all(store, version) == expected


def test_a_change_to_an_extent_not_kept_reads_it_from_the_grid() -> None:
    """With nothing kept, the base extent is fetched (and the result is the same)."""
    store, grid = make_store()
    contents = bytearray(pattern(FANOUT * CHUNK))
    base = update(store, None, bytes(contents), [(0, len(contents))])
    store.recent_extents = ExtentCache(0)
    contents[CHUNK + 7 : CHUNK + 9] = b"xy"
    clear(grid)
    new = update_over(store, base, bytes(contents), (CHUNK + 7, CHUNK + 9))
    assert requested_indexes(grid)
    assert read_all(store, new) == bytes(contents)
