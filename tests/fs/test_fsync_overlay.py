"""An fsync of a small change to a large file stores no object: the change rides in the
directory entry's cap (``GG:PTREE``, gateway.objects.overlay), and the last writer's CLOSE
stores it in the file's tree (issue #16)."""

from __future__ import annotations

from pathlib import Path

from tests.fs.test_fsync_overlap import _entry_cap
from tests.fs.test_sparse import DATA, harness, open_rw


def _shares_written(store) -> int:  # type: ignore[no-untyped-def]
    return sum(c.count("write_immutable") for c in store.servers)


def test_fsyncs_store_no_object_and_close_folds_the_changes_into_the_tree(
    tmp_path: Path,
) -> None:
    """Three fsyncs of 100 bytes write no immutable share and leave the entry a PTREE cap
    that reads as the file; CLOSE's upload leaves a TREE cap, same bytes."""
    gw, store = harness(tmp_path)
    expected = bytearray(DATA)
    handle = open_rw(gw)
    before = _shares_written(store)
    for n, offset in enumerate((3000, 150_000, 290_000)):
        gw.run(handle.write(offset, bytes([n + 1]) * 100))
        expected[offset : offset + 100] = bytes([n + 1]) * 100
        gw.run_waiting(handle.fsync())
    assert _shares_written(store) == before
    assert _entry_cap(gw).startswith("GG:PTREE:")
    assert gw.read("/f.bin") == bytes(expected)
    gw.run(handle.close())
    gw.upload_everything()
    assert _entry_cap(gw).startswith("GG:TREE:")
    assert _shares_written(store) > before
    assert gw.read("/f.bin") == bytes(expected)


def test_a_file_closed_unchanged_after_its_fsync_is_folded(tmp_path: Path) -> None:
    """The write, the fsync, then a CLOSE with nothing new: the upload stores the overlay."""
    gw, _ = harness(tmp_path)
    handle = open_rw(gw)
    gw.run(handle.write(77, b"q" * 10))
    gw.run_waiting(handle.fsync())
    assert _entry_cap(gw).startswith("GG:PTREE:")
    gw.run(handle.close())
    gw.upload_everything()
    assert _entry_cap(gw).startswith("GG:TREE:")
    expected = bytearray(DATA)
    expected[77:87] = b"q" * 10
    assert gw.read("/f.bin") == bytes(expected)


def test_an_fsynced_change_survives_a_crash_and_a_restart(tmp_path: Path) -> None:
    """kill -9 after the fsync answered (the handle never closed): the restarted gateway
    reads the fsynced bytes from the entry's overlay, and a later write over it is kept."""
    gw, _ = harness(tmp_path)
    handle = open_rw(gw)
    gw.run(handle.write(5000, b"k" * 4096))
    gw.run_waiting(handle.fsync())
    gw.crash()
    expected = bytearray(DATA)
    expected[5000:9096] = b"k" * 4096
    assert gw.read("/f.bin") == bytes(expected)
    again = open_rw(gw)
    gw.run(again.write(6000, b"m" * 10))
    gw.run(again.close())
    gw.upload_everything()
    expected[6000:6010] = b"m" * 10
    assert gw.read("/f.bin") == bytes(expected)
    assert _entry_cap(gw).startswith("GG:TREE:")
