"""Directory changes as data: what the write-back journal keeps and a publish re-applies.

A change is applied twice. First *strictly*, to the contents this gateway
knows, when a client asks for it: a taken name raises ChildExists, a missing
one NoSuchChild, exactly as the client must be told. The change is then
journaled in its *resolved* form, which also names the child it acted on.
Later a background publish applies it again, *leniently*, to the contents it
reads from the grid, where another writer may have changed things meanwhile. A
lenient apply never fails and never undoes another writer's work:

- an exclusive link (``mkdir``, ``symlink``) whose name another writer took in
  the meantime is linked as ``name (conflict N)`` instead: both survive;
- an unlink, rename or metadata change acts only if the name still links the
  same child (same read cap, or same symlink target) as when it was decided,
  and is dropped otherwise (someone else removed or replaced it);
- a rename onto a name another writer took meanwhile, when the client did not
  ask to overwrite, lands on a conflict name too.

Applying a journaled change again to contents that already hold it changes
nothing, so a change replayed after a crash (published, but not yet marked
done) is harmless.

Written through (:mod:`gateway.objects.writethrough`, no write-back), a change
is applied strictly only, to the contents just read from the grid, and
published before the client is answered.
"""

from __future__ import annotations

from typing import Any

from attrs import evolve, frozen

from gateway.objects.dirformat import (
    ChildExists,
    CorruptDirectory,
    NoSuchChild,
    Record,
    exists_message,
    pack_contents,
    shown_name,
    unpack_contents,
)

#: Which child an entry links: its read cap, or its symlink target (one of both is None).
Identity = tuple[str | None, str | None]

MutableRecords = dict[str, Record]


def identity(record: Record) -> Identity:
    """The child a record links, independent of its metadata."""
    return (record.read_cap, record.metadata.symlink)


def conflict_name(records: MutableRecords, name: str) -> str:
    """A free name for an entry whose own name another writer took: ``name (conflict N)``."""
    number = 1
    while f"{name} (conflict {number})" in records:
        number += 1
    return f"{name} (conflict {number})"


@frozen
class Create:
    """A directory made by this gateway: the object is published (empty, or with the
    entries the changes after this one link) before any directory that links it is.

    Written through, it is the directory's first publish, made once, never retried.
    """

    @property
    def names(self) -> tuple[str, ...]:
        """The names applying it may set or remove: none."""
        return ()

    def apply_strict(self, records: MutableRecords) -> tuple[Record | None, Create]:
        """Nothing to check: the directory is new."""
        return None, self

    def apply_lenient(self, records: MutableRecords) -> None:
        """Nothing to apply."""

    def landed(self, records: MutableRecords, result: Record | None) -> bool:
        """Never: a creation is attempted once."""
        return False

    def to_cbor(self) -> dict[str, Any]:
        """The journal's form."""
        return {"op": "create"}


@frozen
class Link:
    """Link entries by name: replacing what is there, or (``exclusive``) only into free names."""

    entries: tuple[tuple[str, Record], ...]
    exclusive: bool

    @property
    def names(self) -> tuple[str, ...]:
        """The names applying it may set or remove."""
        return tuple(name for name, _ in self.entries)

    def apply_strict(self, records: MutableRecords) -> tuple[Record | None, Link]:
        """ChildExists, changing nothing, when exclusive and a name is taken."""
        if self.exclusive:
            taken = sorted(name for name, _ in self.entries if name in records)
            if taken:
                raise ChildExists(exists_message(taken))
        records.update(self.entries)
        return None, self

    def landed(self, records: MutableRecords, result: Record | None) -> bool:
        """Whether an earlier attempt, reported lost, linked every entry after all."""
        return all(records.get(name) == record for name, record in self.entries)

    def apply_lenient(self, records: MutableRecords) -> None:
        """Link; an exclusive link whose name now holds another child gets a conflict name."""
        for name, record in self.entries:
            existing = records.get(name)
            if self.exclusive and existing is not None and identity(existing) != identity(record):
                name = conflict_name(records, name)
            records[name] = record

    def to_cbor(self) -> dict[str, Any]:
        """The journal's form (records packed as a directory's contents are)."""
        return {"op": "link", "entries": pack_contents(dict(self.entries)), "x": self.exclusive}


@frozen
class Unlink:
    """Remove the entry ``name`` (that links ``child``, once decided).

    An unlink decided in advance (``child`` given: a move's removal from its source)
    removes the entry only while it links that child: another writer who removed or
    replaced it meanwhile keeps their change, and the unlink is done.
    """

    name: str
    child: Identity | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The names applying it may set or remove."""
        return (self.name,)

    def apply_strict(self, records: MutableRecords) -> tuple[Record | None, Unlink]:
        """NoSuchChild when the name is free; returns the removed record (None when an
        unlink decided in advance finds another child, or none)."""
        record = records.get(self.name)
        if self.child is not None:
            if record is None or identity(record) != self.child:
                return None, self
        elif record is None:
            raise NoSuchChild(f"there is no entry named {shown_name(self.name)}")
        del records[self.name]
        return record, evolve(self, child=identity(record))

    def landed(self, records: MutableRecords, result: Record | None) -> bool:
        """Whether an earlier attempt, reported lost, removed the entry after all."""
        return result is not None and self.name not in records

    def apply_lenient(self, records: MutableRecords) -> None:
        """Remove the entry if it still links the same child."""
        record = records.get(self.name)
        if record is not None and (self.child is None or identity(record) == self.child):
            del records[self.name]

    def to_cbor(self) -> dict[str, Any]:
        """The journal's form."""
        return {"op": "unlink", "name": self.name, "child": _child(self.child)}


@frozen
class Rename:
    """Rename ``old`` to ``new`` within one directory."""

    old: str
    new: str
    overwrite: bool
    child: Identity | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The names applying it may set or remove."""
        return (self.old, self.new)

    def apply_strict(self, records: MutableRecords) -> tuple[Record | None, Rename]:
        """NoSuchChild / ChildExists as a rename must report them; returns the moved record."""
        record = records.get(self.old)
        if record is None:
            raise NoSuchChild(f"there is no entry named {shown_name(self.old)}")
        if not self.overwrite and self.new in records and self.new != self.old:
            raise ChildExists(exists_message([self.new]))
        del records[self.old]
        records[self.new] = record
        return record, evolve(self, child=identity(record))

    def landed(self, records: MutableRecords, result: Record | None) -> bool:
        """Whether an earlier attempt, reported lost, moved the entry after all."""
        return result is not None and self.old not in records and records.get(self.new) == result

    def apply_lenient(self, records: MutableRecords) -> None:
        """Move the entry if ``old`` still links the same child; keep what another writer put
        at ``new`` unless overwriting was asked for."""
        record = records.get(self.old)
        if record is None or (self.child is not None and identity(record) != self.child):
            return
        del records[self.old]
        new = self.new
        existing = records.get(new)
        if not self.overwrite and existing is not None and identity(existing) != identity(record):
            new = conflict_name(records, new)
        records[new] = record

    def to_cbor(self) -> dict[str, Any]:
        """The journal's form."""
        return {
            "op": "rename",
            "old": self.old,
            "new": self.new,
            "overwrite": self.overwrite,
            "child": _child(self.child),
        }


@frozen
class SetMetadata:
    """Change fields of an entry's metadata (``mode``, ``mtime``, ``size``, ``no_write``)."""

    name: str
    changes: tuple[tuple[str, Any], ...]
    child: Identity | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The names applying it may set or remove."""
        return (self.name,)

    def apply_strict(self, records: MutableRecords) -> tuple[Record | None, SetMetadata]:
        """NoSuchChild when the name is free; returns the changed record."""
        record = records.get(self.name)
        if record is None:
            raise NoSuchChild(f"there is no entry named {shown_name(self.name)}")
        records[self.name] = changed = self._changed(record)
        return changed, evolve(self, child=identity(record))

    def landed(self, records: MutableRecords, result: Record | None) -> bool:
        """Never: setting the same fields again changes nothing."""
        return False

    def apply_lenient(self, records: MutableRecords) -> None:
        """Change the entry if it still links the same child."""
        record = records.get(self.name)
        if record is not None and (self.child is None or identity(record) == self.child):
            records[self.name] = self._changed(record)

    def _changed(self, record: Record) -> Record:
        return evolve(record, metadata=evolve(record.metadata, **dict(self.changes)))

    def to_cbor(self) -> dict[str, Any]:
        """The journal's form."""
        return {
            "op": "meta",
            "name": self.name,
            "changes": dict(self.changes),
            "child": _child(self.child),
        }


Change = Create | Link | Unlink | Rename | SetMetadata


def _child(child: Identity | None) -> list[str | None] | None:
    return None if child is None else [child[0], child[1]]


def _identity(value: Any) -> Identity | None:
    if value is None:
        return None
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(part is None or isinstance(part, str) for part in value)
    ):
        return (value[0], value[1])
    raise CorruptDirectory("a journaled directory change names its child wrongly")


def change_from_cbor(data: Any) -> Change:
    """A change from its journal form (CorruptDirectory when it is not one)."""
    if not isinstance(data, dict):
        raise CorruptDirectory("a journaled directory change is not a map")
    op = data.get("op")
    try:
        if op == "create":
            return Create()
        if op == "link":
            entries = unpack_contents(data["entries"])
            return Link(tuple(entries.items()), bool(data["x"]))
        if op == "unlink":
            return Unlink(str(data["name"]), _identity(data.get("child")))
        if op == "rename":
            return Rename(
                str(data["old"]),
                str(data["new"]),
                bool(data["overwrite"]),
                _identity(data.get("child")),
            )
        if op == "meta":
            changes = data["changes"]
            if not isinstance(changes, dict):
                raise TypeError
            return SetMetadata(
                str(data["name"]), tuple(sorted(changes.items())), _identity(data.get("child"))
            )
    except (KeyError, TypeError) as e:
        raise CorruptDirectory(f"a journaled directory change is incomplete ({e})") from None
    raise CorruptDirectory(f"unknown journaled directory change {op!r}")


class Undo:
    """Changes applied strictly in place, and what their names held before, so that a
    commit refused part way (or whose journal cannot be written) leaves every view as it
    was: a change costs what it touches, not a copy of the whole directory."""

    def __init__(self) -> None:
        self._before: list[tuple[MutableRecords, str, Record | None]] = []

    def apply(self, change: Change, records: MutableRecords) -> tuple[Record | None, Change]:
        """``change.apply_strict(records)``, remembering what the names it may set or
        remove held (every change type says which, :attr:`Link.names`)."""
        self._before.extend((records, name, records.get(name)) for name in change.names)
        return change.apply_strict(records)

    def replaced(self) -> list[str]:
        """The read caps of the directories whose entries the changes applied so far
        replaced or removed (a name that now holds another record, or none)."""
        return [
            record.read_cap
            for records, name, record in self._before
            if record is not None and record.read_cap and records.get(name) is not record
        ]

    def revert(self) -> None:
        """Put back what every change applied so far replaced, latest first."""
        for records, name, record in reversed(self._before):
            if record is None:
                records.pop(name, None)
            else:
                records[name] = record
        self._before.clear()


def apply_lenient(changes: list[Change], records: MutableRecords) -> MutableRecords:
    """``records`` with every change applied leniently, in order (changed in place)."""
    for change in changes:
        change.apply_lenient(records)
    return records
