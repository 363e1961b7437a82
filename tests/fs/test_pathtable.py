"""The overlay's tables answer what lies in and under a directory as a walk of the whole
table would (gateway.fs.pathtable), after any sequence of changes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.fs.paths import Path
from gateway.fs.pathtable import PathTable

_names = st.sampled_from(["a", "b", "c"])
_paths = st.lists(_names, min_size=1, max_size=4).map(tuple)
_dirs = st.lists(_names, min_size=0, max_size=3).map(tuple)
_ops = st.lists(
    st.tuples(st.sampled_from(["set", "del", "pop", "pop-missing", "clear"]), _paths),
    max_size=60,
)


def _walked_under(table: dict[Path, int], directory: Path) -> set[Path]:
    depth = len(directory)
    return {p for p in table if len(p) > depth and p[:depth] == directory}


@settings(max_examples=300, deadline=None)
@given(ops=_ops, probes=st.lists(_dirs, min_size=1, max_size=8))
def test_the_index_agrees_with_a_walk(ops: list[tuple[str, Path]], probes: list[Path]) -> None:
    """Whatever was set, deleted, popped or cleared: has_under, children and at_or_under
    give what walking every key gives, and the table holds what a dict would."""
    table: PathTable[int] = PathTable()
    model: dict[Path, int] = {}
    for i, (op, path) in enumerate(ops):
        if op == "set":
            table[path] = model[path] = i
        elif op in ("del", "pop") and path in model:
            if op == "del":
                del table[path]
            else:
                assert table.pop(path) == model[path]
            del model[path]
        elif op == "pop-missing":
            assert table.pop(path, None) == model.pop(path, None)
        elif op == "clear":
            table.clear()
            model.clear()
    assert dict(table) == model
    for directory in probes:
        under = _walked_under(model, directory)
        assert table.has_under(directory) == bool(under)
        assert set(table.children(directory)) == {p for p in under if len(p) == len(directory) + 1}
        expected = under | ({directory} if directory in model else set())
        assert set(table.at_or_under(directory)) == expected
        assert len(table.at_or_under(directory)) == len(expected)


def test_other_ways_of_changing_it_are_refused() -> None:
    """update, setdefault and popitem would bypass the index: they raise."""
    table: PathTable[int] = PathTable([(("a", "b"), 1)])
    for change in (
        lambda: table.update({("c",): 2}),
        lambda: table.setdefault(("c",), 2),
        table.popitem,
    ):
        with pytest.raises(TypeError):
            change()
    assert dict(table) == {("a", "b"): 1}
    with pytest.raises(KeyError):
        table.pop(("zz",))
