"""A dict keyed by path that knows, for every directory, what lies in it and under it.

The overlay's tables (files open for writing, files waiting for the grid, the
generations linked lately) are asked on every rename, remove and listing what
lies at or under a path. Walking a whole table for that made each of those
requests cost as many steps as files were in flight: after a ``cp -r`` of a few
hundred files, every ``mv`` and ``rmdir`` walked them all, several times over.
A :class:`PathTable` answers in steps of the path's depth, or of the answer's size.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from gateway.fs.paths import Path

V = TypeVar("V")

_MISSING: Any = object()


class PathTable(dict[Path, V]):
    """``dict[Path, V]`` with :meth:`has_under`, :meth:`children` and :meth:`at_or_under`.

    Only ``[key] = value``, ``del``, ``pop`` and ``clear`` change it (the other ways
    of changing a dict raise TypeError, so the index cannot go stale)."""

    def __init__(self, items: Iterable[tuple[Path, V]] = ()) -> None:
        super().__init__()
        #: Directory -> how many keys lie strictly under it (at any depth); only non-zero.
        self._under: dict[Path, int] = {}
        #: Directory -> the keys directly in it, in the order they came.
        self._children: dict[Path, dict[Path, None]] = {}
        for key, value in items:
            self[key] = value

    def __setitem__(self, key: Path, value: V) -> None:
        if key not in self:
            self._added(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: Path) -> None:
        super().__delitem__(key)
        self._removed(key)

    def pop(self, key: Path, default: Any = _MISSING) -> Any:
        """As ``dict.pop``."""
        if key in self:
            value = super().pop(key)
            self._removed(key)
            return value
        if default is _MISSING:
            raise KeyError(key)
        return default

    def clear(self) -> None:
        """As ``dict.clear``."""
        super().clear()
        self._under.clear()
        self._children.clear()

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a PathTable changes only by [key] = value, del, pop and clear")

    update = setdefault = popitem = __ior__ = _refuse

    # -- looking ---------------------------------------------------------------------

    def has_under(self, directory: Path) -> bool:
        """Whether any key lies inside ``directory`` (at any depth)."""
        return directory in self._under

    def children(self, directory: Path) -> list[Path]:
        """The keys directly inside ``directory``."""
        return list(self._children.get(directory, ()))

    def at_or_under(self, directory: Path) -> list[Path]:
        """``directory`` if it is a key, then every key inside it."""
        found = [directory] if directory in self else []
        if directory in self._under:
            depth = len(directory)
            found += [p for p in self if len(p) > depth and p[:depth] == directory]
        return found

    # -- the index ---------------------------------------------------------------------

    def _added(self, key: Path) -> None:
        under = self._under
        for depth in range(len(key)):
            prefix = key[:depth]
            under[prefix] = under.get(prefix, 0) + 1
        self._children.setdefault(key[:-1], {})[key] = None

    def _removed(self, key: Path) -> None:
        under = self._under
        for depth in range(len(key)):
            prefix = key[:depth]
            left = under[prefix] - 1
            if left:
                under[prefix] = left
            else:
                del under[prefix]
        siblings = self._children[key[:-1]]
        del siblings[key]
        if not siblings:
            del self._children[key[:-1]]
