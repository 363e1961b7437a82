"""Kept copies of uploaded files: read back locally, bounded, and always the first to go
when staging needs room."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.fs.errors import NoSpace
from gateway.fs.kept import KeptCopies
from gateway.fs.staging import StagedFile, StagingArea


def _staged(area: StagingArea, data: bytes) -> StagedFile:
    staged = area.create()
    staged.write(0, data)
    return staged


def _read(kept: KeptCopies, cap: str) -> bytes | None:
    reader = kept.reader(cap)
    if reader is None:
        return None
    try:
        return asyncio.run(reader.read(0, 1 << 20))
    finally:
        reader.close()


def _files(area: StagingArea) -> list[Path]:
    return sorted(area.directory.glob("*.staged"))


def test_a_kept_copy_reads_back_and_holds_no_descriptor(tmp_path: Path) -> None:
    """The staged file of an uploaded file stays on disk, still counted against the quota,
    and its capability reads it; nothing else is kept."""
    area = StagingArea(tmp_path, 10_000, spare_files=0)
    kept = KeptCopies(5_000)
    staged = _staged(area, b"a" * 1000)
    kept.keep("cap-a", staged)
    assert staged.discarded  # its descriptor is closed
    assert _read(kept, "cap-a") == b"a" * 1000
    assert _read(kept, "cap-b") is None
    assert area.used == kept.used == 1000
    assert len(_files(area)) == 1


def test_least_recently_read_copies_go_past_the_limit(tmp_path: Path) -> None:
    """Past ``limit`` bytes the copy read least recently is deleted and its bytes given
    back; a file larger than the limit is not kept at all."""
    area = StagingArea(tmp_path, 10_000, spare_files=0)
    kept = KeptCopies(2_500)
    for name in "abc":
        kept.keep(f"cap-{name}", _staged(area, name.encode() * 1000))
    assert _read(kept, "cap-a") is None  # a went when c came
    assert _read(kept, "cap-b") == b"b" * 1000  # read: now the most recent
    kept.keep("cap-d", _staged(area, b"d" * 1000))
    assert _read(kept, "cap-c") is None
    assert _read(kept, "cap-b") == b"b" * 1000
    kept.keep("cap-big", _staged(area, b"x" * 3000))
    assert _read(kept, "cap-big") is None
    assert area.used == kept.used == 2000
    assert len(_files(area)) == 2


def test_files_being_written_take_the_room_of_kept_copies(tmp_path: Path) -> None:
    """A write that would pass the staging quota deletes kept copies first, and is refused
    only when that is not enough."""
    area = StagingArea(tmp_path, 3_000, spare_files=0)
    kept = KeptCopies(3_000)
    area.make_room = kept.make_room
    kept.keep("cap-a", _staged(area, b"a" * 1000))
    kept.keep("cap-b", _staged(area, b"b" * 1000))
    writing = _staged(area, b"w" * 1500)  # needs a's room
    assert _read(kept, "cap-a") is None
    assert _read(kept, "cap-b") == b"b" * 1000
    with pytest.raises(NoSpace):
        writing.write(1500, b"w" * 2000)  # more than b's room frees
    assert _read(kept, "cap-b") is None
    assert area.used == 1500 and kept.used == 0


def test_no_copies_with_a_limit_of_zero_and_none_after_clear(tmp_path: Path) -> None:
    """``keep_uploaded = 0`` deletes staged files after their upload, as before; clearing
    (the gateway stopping) deletes every copy."""
    area = StagingArea(tmp_path, 10_000, spare_files=0)
    none = KeptCopies(0)
    none.keep("cap-a", _staged(area, b"a" * 10))
    assert _read(none, "cap-a") is None and area.used == 0 and _files(area) == []
    kept = KeptCopies(5_000)
    kept.keep("cap-a", _staged(area, b"a" * 10))
    kept.keep("cap-b", _staged(area, b"b" * 10))
    kept.clear()
    assert kept.used == area.used == 0 and _files(area) == []
