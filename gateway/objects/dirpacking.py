"""A directory's contents packed again from the last packing: only the entries that
changed are encoded, and the rest of the bytes are copied as they lie.

Every publish of a directory (every fsync of a file in it) packs its whole table.
:func:`~gateway.objects.dirformat.pack_contents` takes each entry's kept encoding
(:meth:`~gateway.objects.dirformat.Record.encoded_as`), but still visits every
entry's record: at 2,000 entries that walk over objects scattered in memory cost
about 1.5 ms of a gateway's fsync. A :class:`Packer` remembers the table it packed
last, in order, and where each entry's bytes end. When the new table has the same
names, or the same names and more after them (files made since), it finds the records
that are not the same objects (in C, by identity: no record is visited), encodes those,
and copies the unchanged runs of bytes between them. Anything else (an entry removed or
renamed, names reordered) packs the whole table. Either way the bytes are exactly
:func:`~gateway.objects.dirformat.pack_contents`' (a property test keeps them so).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import accumulate, compress
from operator import is_not

from attrs import define, field

from gateway.objects.dirformat import Record, contents_head

SPLICE_SHARE = 8
"""Repack whole when more than one entry in this many changed (copying then buys little)."""


@define(eq=False)
class _Packed:
    """A table as last packed: its names and records in order, each entry's end in
    ``data``, and ``data`` itself (the head and the entries)."""

    names: list[str]
    records: list[Record]
    lengths: list[int]
    ends: list[int]
    data: bytes

    @classmethod
    def of(
        cls, names: list[str], records: list[Record], lengths: list[int], head: int, data: bytes
    ) -> _Packed:
        """The table packed as ``data``: ``head`` bytes, then entries of ``lengths``."""
        return cls(names, records, lengths, list(accumulate(lengths, initial=head))[1:], data)


_EMPTY = _Packed([], [], [], [], b"")
"""No table: packing against it encodes every entry."""


@define(eq=False)
class Packer:
    """Packs one directory's successive tables, each from the one before (see the module)."""

    _last: _Packed = field(default=_EMPTY, repr=False)
    spliced: int = 0
    """Tables packed from the one before (the rest were packed whole)."""

    def pack(self, records: Mapping[str, Record]) -> bytes:
        """The contents holding ``records``: ``pack_contents(records)``'s bytes."""
        names = list(records)
        values = list(records.values())
        last = self._last
        changed = _changed(last, names, values)
        if changed is None:
            last, changed = _EMPTY, []  # packed whole
        elif last is not _EMPTY:
            self.spliced += 1
        head = contents_head(len(names))
        parts: list[bytes | memoryview] = [head]
        lengths = last.lengths.copy()
        view = memoryview(last.data)
        start = last.ends[0] - last.lengths[0] if last.names else len(last.data)
        for i in changed:
            parts.append(view[start : last.ends[i] - last.lengths[i]])
            encoded = values[i].encoded_as(names[i])
            parts.append(encoded)
            lengths[i] = len(encoded)
            start = last.ends[i]
        parts.append(view[start:])
        for i in range(len(last.names), len(names)):
            encoded = values[i].encoded_as(names[i])
            parts.append(encoded)
            lengths.append(len(encoded))
        data = b"".join(parts)
        self._last = _Packed.of(names, values, lengths, len(head), data)
        return data


def _changed(last: _Packed, names: list[str], values: list[Record]) -> list[int] | None:
    """Where the new table's records are not ``last``'s, when it only changed records or
    added names at its end and few enough changed; else None (pack it whole)."""
    kept = len(last.names)
    if len(names) < kept or names[:kept] != last.names:
        return None  # (names the same objects compare without being read)
    changed = list(compress(range(kept), map(is_not, values[:kept], last.records)))
    return None if len(changed) > max(1, kept // SPLICE_SHARE) else changed
