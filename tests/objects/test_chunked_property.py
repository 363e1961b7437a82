"""Property: any sequence of writes (small ones stored as patches), appends, truncations and
extensions, stored as chunk tree updates, reads back as the model file (from the store that
wrote it and from a fresh one), at a cost bounded by what changed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.objects.caps import ChunkedCap, ImmutableCap
from tests.objects.chunked_support import CHUNK, FANOUT, make_store, read_all, update_stored
from tests.objects.grid import run

OPS = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 30 * CHUNK), st.integers(1, 3 * CHUNK)),
    # small writes: patches laid over extents, overlapping, then folded in
    st.tuples(st.just("write"), st.integers(0, 30 * CHUNK), st.integers(1, 300)),
    st.tuples(st.just("append"), st.integers(1, 3 * CHUNK), st.just(0)),
    st.tuples(st.just("truncate"), st.integers(0, 30 * CHUNK), st.just(0)),
    st.tuples(st.just("extend"), st.integers(1, 4 * CHUNK), st.just(0)),
)


def _height(store: object, cap: ImmutableCap) -> int:
    if not isinstance(cap, ChunkedCap):
        return 0
    return run(store.nodes.load(cap, store.servers)).height + 1  # type: ignore[attr-defined]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 12 * CHUNK), st.lists(OPS, min_size=1, max_size=12), st.integers(0, 255))
def test_updates_match_a_model_file(
    initial: int, ops: list[tuple[str, int, int]], fill: int
) -> None:
    """Reads equal the model after every update; each update stores at most the changed
    bytes rounded out to whole chunks, plus the small extents the tail rule joins."""
    store, _ = make_store()
    model = bytearray((i * 7 + fill) % 251 for i in range(initial))
    cap, _, _ = update_stored(store, None, bytes(model), [(0, len(model))])
    for n, (op, a, b) in enumerate(ops):
        changed: list[tuple[int, int]] = []
        old = len(model)
        if op == "write":
            offset = min(a, old)
            piece = bytes((n * 31 + i) % 256 for i in range(b))
            model[offset : offset + b] = piece
            changed = [(offset, offset + b)]
        elif op == "append":
            model += bytes((n + i) % 256 for i in range(a))
        elif op == "truncate":
            del model[min(a, old) :]
        else:
            model += bytes(a)
        cap, stored, nodes = update_stored(store, cap, bytes(model), changed)
        assert cap.size == len(model)
        assert read_all(store, cap) == bytes(model)
        touched = sum(e - s for s, e in changed) + max(0, len(model) - old)
        # Whole extents around each changed range, the cut extent, and the small tail
        # extents (each longer than all after it: together less than two chunks).
        bound = touched + 2 * CHUNK * (len(changed) + 1) + 2 * CHUNK
        if len(model) <= CHUNK:
            bound = max(bound, len(model))
        assert stored <= bound
        # One node per level on each changed path and on the tail's (a tail longer than a
        # leaf node's span needs one more leaf per FANOUT extents).
        paths = len(changed) + 2 + (len(model) - min(old, len(model))) // (FANOUT * CHUNK)
        assert nodes <= paths * _height(store, cap)
    fresh, _ = make_store(store.servers)  # nothing cached: every node decoded from the grid
    assert read_all(fresh, cap) == bytes(model)
    offset = len(model) // 3
    assert run(store.reader(cap).read(offset, 2 * CHUNK)) == bytes(
        model[offset : offset + 2 * CHUNK]
    )
    assert _height(store, cap) <= 4
