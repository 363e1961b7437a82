"""What a listing keeps between OPENDIRs: an entry's attributes and its packed READDIR form,
by the identity of the (immutable) objects they were made from, bounded, and never stale."""

from __future__ import annotations

import time

from gateway.fs import attributes
from gateway.fs.attributes import entry_attributes
from gateway.fs.interfaces import FileAttributes
from gateway.objects.caps import LiteralCap
from gateway.objects.dirformat import Entry, EntryMetadata
from gateway.sftp import listing
from gateway.sftp.listing import packed_entry

NOW = 1_800_000_000.0


def _entry(name: str, mode: int | None = None, mtime: float = NOW - 60) -> Entry:
    return Entry(
        name,
        LiteralCap(b"abc"),
        EntryMetadata(kind="file", mtime=mtime, ctime=mtime, mode=mode, size=3),
    )


def test_an_entrys_attributes_are_made_once_and_follow_read_only() -> None:
    """The same entry gives the same attributes object; a read-only view has its own (no
    ``w`` bits); an equal but new entry (a changed record) gets attributes of its own."""
    entry = _entry("a", mode=0o644)
    first = entry_attributes(entry, False)
    assert entry_attributes(entry, False) is first and first.mode == 0o644
    read_only = entry_attributes(entry, True)
    assert read_only.mode == 0o444 and entry_attributes(entry, True) is read_only
    changed = _entry("a", mode=0o600)
    assert entry_attributes(changed, False).mode == 0o600


def test_kept_attributes_are_bounded() -> None:
    """Past KEEP_ATTRIBUTES entries, what was kept is dropped, not grown."""
    for i in range(attributes.KEEP_ATTRIBUTES + 10):
        entry_attributes(_entry(f"e{i}"), False)
    assert len(attributes._made) <= attributes.KEEP_ATTRIBUTES


def test_a_packed_entry_is_packed_once_per_user_and_date_form() -> None:
    """The same attributes give the same packed bytes object; another account (owner
    column, uid) or a time far enough on that the date shows the year packs anew."""
    attrs = FileAttributes("file", 3, 0o644, NOW - 60, NOW - 60)
    first = packed_entry("a.txt", attrs, "alice", 1000, 1000, NOW)
    assert packed_entry("a.txt", attrs, "alice", 1000, 1000, NOW + 1) is first
    assert b"alice" in first and b"bob" in packed_entry("a.txt", attrs, "bob", 1001, 1001, NOW)
    later = NOW + 200 * 86400  # over six months: ls shows the year, not the time
    year = time.strftime("%Y", time.localtime(NOW - 60)).encode()
    assert year in packed_entry("a.txt", attrs, "alice", 1000, 1000, later)
    assert year not in first
    other = FileAttributes("file", 3, 0o644, NOW - 60, NOW - 60)  # equal, not the same
    assert packed_entry("a.txt", other, "alice", 1000, 1000, NOW) == first
    for i in range(listing.KEEP_PACKED + 10):
        packed_entry(f"e{i}", attrs, "alice", 1000, 1000, NOW)
    assert len(listing._packed) <= listing.KEEP_PACKED
