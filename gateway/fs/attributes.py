"""What stat says: a grid entry's or a local file's attributes, with permissions
approximated from capabilities.

The grid has capabilities, not owners or mode bits it enforces. A read-only
account, a read-only directory, a read-only capability or a no-write entry
shows no ``w`` bits; otherwise the mode a client set (or a default) is shown.

An entry's attributes are kept with the entry they were made for (by identity: an
``Entry`` is immutable, and a directory node hands out the same one while its record
is unchanged), so listing a large directory again makes only the changed entries'.
"""

from __future__ import annotations

from gateway.fs.interfaces import FileAttributes
from gateway.objects.caps import (
    ChunkedCap,
    DirectoryReadCap,
    ImmutableReadCap,
    LiteralCap,
    MutableReadCap,
)
from gateway.objects.dirformat import Entry


def no_write_bits(mode: int) -> int:
    """``mode`` without any ``w`` bit."""
    return mode & ~0o222


#: Attributes kept (see the module docstring); all are dropped when there are more.
KEEP_ATTRIBUTES = 8192

_made: dict[tuple[int, bool], tuple[Entry, FileAttributes]] = {}


def entry_attributes(entry: Entry, read_only: bool) -> FileAttributes:
    """A directory entry's attributes; ``read_only`` when the session or the directory
    cannot change it."""
    key = (id(entry), read_only)
    known = _made.get(key)
    if known is not None and known[0] is entry:  # (held here, so its id is not reused)
        return known[1]
    attributes = _entry_attributes(entry, read_only)
    if len(_made) >= KEEP_ATTRIBUTES:
        _made.clear()
    _made[key] = (entry, attributes)
    return attributes


def _entry_attributes(entry: Entry, read_only: bool) -> FileAttributes:
    meta = entry.metadata
    if entry.kind == "symlink":
        size, mode = len((meta.symlink or "").encode()), 0o777
    elif entry.kind == "dir":
        size, mode = 0, meta.mode if meta.mode is not None else 0o755
    else:
        size = meta.size if meta.size is not None else _cap_size(entry.cap)
        mode = meta.mode if meta.mode is not None else 0o644
    writable = not (
        read_only or meta.no_write or isinstance(entry.cap, MutableReadCap | DirectoryReadCap)
    )
    if entry.kind != "symlink" and not writable:
        mode = no_write_bits(mode)
    return FileAttributes(entry.kind, size, mode, meta.mtime, meta.mtime, meta.ctime)


def root_attributes(read_only: bool) -> FileAttributes:
    """The account's root directory."""
    return FileAttributes("dir", 0, 0o555 if read_only else 0o755, 0.0, 0.0, 0.0)


def read_only_view(attrs: FileAttributes) -> FileAttributes:
    """Attributes as a read-only session sees them."""
    return FileAttributes(
        attrs.kind, attrs.size, no_write_bits(attrs.mode), attrs.mtime, attrs.atime, attrs.ctime
    )


def _cap_size(cap: object) -> int:
    if isinstance(cap, LiteralCap | ImmutableReadCap | ChunkedCap):
        return cap.size
    return 0
