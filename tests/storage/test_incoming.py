"""Incomplete uploads: held in memory while small, moved to a file once they are not."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.incoming import IncomingShares

KEY = ("aeaqcaibaeaqcaibaeaqcaibae", 3)
OTHER = ("aeaqcaibaeaqcaibaeaqcaibaf", 0)


def test_a_small_upload_never_touches_the_disk(tmp_path: Path) -> None:
    """Written, read back and taken whole without a file; a gap reads as zeros."""
    incoming = IncomingShares(tmp_path, small=100)
    incoming.create(KEY)
    incoming.write(KEY, 4, b"tail")
    incoming.write(KEY, 0, b"he")
    assert incoming.read(KEY, 0, 8) == b"he\0\0tail"
    assert incoming.held == 8
    assert list(tmp_path.iterdir()) == []
    assert incoming.take(KEY, 10) == b"he\0\0tail\0\0"
    assert incoming.held == 0
    with pytest.raises(FileNotFoundError):
        incoming.read(KEY, 0, 1)


def test_an_upload_that_grows_past_small_moves_to_its_file(tmp_path: Path) -> None:
    """The bytes held so far are written out first; later writes and reads use the file,
    and taking it removes the file."""
    incoming = IncomingShares(tmp_path, small=10)
    incoming.create(KEY)
    incoming.write(KEY, 0, b"01234")
    incoming.write(KEY, 5, b"56789abc")
    assert incoming.held == 0
    assert incoming.path(KEY).read_bytes() == b"0123456789abc"
    incoming.write(KEY, 1, b"X")
    assert incoming.read(KEY, 0, 3) == b"0X2"
    assert incoming.take(KEY, 14) == b"0X23456789abc\0"
    assert not incoming.path(KEY).exists()


def test_memory_is_bounded_across_uploads(tmp_path: Path) -> None:
    """Once the uploads held in memory would pass ``memory`` bytes, the one growing moves to
    its file; the others stay held."""
    incoming = IncomingShares(tmp_path, small=100, memory=150)
    incoming.create(KEY)
    incoming.create(OTHER)
    incoming.write(KEY, 0, b"k" * 100)
    incoming.write(OTHER, 0, b"o" * 60)
    assert incoming.held == 100
    assert incoming.path(OTHER).read_bytes() == b"o" * 60
    assert not incoming.path(KEY).exists()
    incoming.discard(KEY)
    assert incoming.held == 0
    incoming.discard(OTHER)
    assert list(tmp_path.iterdir()) == []


def test_hand_over_writes_out_a_held_upload(tmp_path: Path) -> None:
    """A share completed by renaming its file gets one, even if it was held in memory."""
    incoming = IncomingShares(tmp_path, small=100)
    incoming.create(KEY)
    incoming.write(KEY, 0, b"bytes")
    path = incoming.hand_over(KEY)
    assert path.read_bytes() == b"bytes"
    assert incoming.held == 0
    incoming.create(KEY)  # a new upload of the same share starts empty, in memory
    assert incoming.read(KEY, 0, 10) == b""
    assert path.read_bytes() == b"bytes", "the handed-over file is the caller's"


def test_writing_an_upload_never_started_fails(tmp_path: Path) -> None:
    """No upload, no bytes: the server answers "no such upload" for it."""
    incoming = IncomingShares(tmp_path, small=100)
    with pytest.raises(FileNotFoundError):
        incoming.write(KEY, 0, b"x")
