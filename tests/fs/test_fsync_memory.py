"""An fsync's snapshot of a small change is held in memory, not in a new staged file.

No journal record names such a snapshot and only its upload reads it, so up to
``MEMORY_COPY_BYTES`` of changes are copied into a memfd: an fsync creates and removes
no file in the staging directory. A snapshot that needs a record (a recorded version of
the path is still pending) is in memory while the record can hold its bytes
(``MEMORY_FILE_BYTES``); a larger one is copied to a staged file.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred

from gateway.fs import rangecopy, staging
from gateway.fs.contents import MEMORY_COPY_BYTES
from gateway.fs.interfaces import OpenFlags, SetAttributes
from gateway.fs.kept import KeptCopies
from gateway.fs.sparse import Ranges
from gateway.fs.staging import MEMORY_FILE_BYTES, StagedFile, StagingArea
from tests.fs.support import VolumeHarness

pytestmark = pytest.mark.skipif(
    not hasattr(os, "memfd_create"), reason="this system has no memfd_create"
)

READ_WRITE = OpenFlags(read=True, write=True)
BASE = os.urandom(3 * MEMORY_COPY_BYTES)


def _snapshots(gw: VolumeHarness, monkeypatch: pytest.MonkeyPatch) -> list[tuple[StagedFile, bool]]:
    """Every staged copy the volume's fsyncs take from now on, and whether its path named
    a file when it was made."""
    made: list[tuple[StagedFile, bool]] = []
    real = gw.volume.contents.copy

    async def copy(*args: object, **kwargs: object) -> StagedFile:
        staged = await real(*args, **kwargs)  # type: ignore[arg-type]
        made.append((staged, staged.path.exists()))
        return staged

    monkeypatch.setattr(gw.volume.contents, "copy", copy)
    return made


def _staging_files(gw: VolumeHarness) -> list[str]:
    return sorted(p.name for p in gw.volume.staging.directory.iterdir())


def test_a_small_change_is_fsynced_from_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 4 KiB change to a file in the grid, fsynced: its snapshot is in memory (no file
    appears in or leaves the staging directory), the grid holds the change exactly, and
    the snapshot's bytes go back to the quota once it is stored."""
    gw = VolumeHarness(tmp_path)
    gw.write("/f", BASE)
    gw.upload_everything()
    handle = gw.run(gw.fs.open("/f", READ_WRITE, SetAttributes()))
    gw.run(handle.write(5000, b"x" * 4096))
    before, used = _staging_files(gw), gw.volume.staging.used
    made = _snapshots(gw, monkeypatch)
    gw.run_waiting(handle.fsync())
    [(snapshot, existed)] = made
    assert snapshot.in_memory and not existed
    assert snapshot.discarded
    assert _staging_files(gw) == before
    assert gw.volume.staging.used == used
    other = gw.run(gw.fs.open("/f", OpenFlags(read=True), SetAttributes()))
    assert gw.run(other.read(0, len(BASE))) == BASE[:5000] + b"x" * 4096 + BASE[9096:]
    gw.run(other.close())
    gw.run(handle.close())
    gw.upload_everything()
    assert gw.read("/f") == BASE[:5000] + b"x" * 4096 + BASE[9096:]
    assert gw.volume.staging.used == 0


def test_a_large_change_or_a_large_recorded_version_is_snapshotted_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change larger than ``MEMORY_COPY_BYTES`` is copied to a staged file; so is a
    change of more than ``MEMORY_FILE_BYTES`` over a version whose upload record is still
    pending (the snapshot's record names its staged file). A small one is in memory: its
    record holds its bytes. All reach the grid exactly."""
    gw = VolumeHarness(tmp_path)
    gw.write("/f", BASE)
    gw.upload_everything()
    made = _snapshots(gw, monkeypatch)
    handle = gw.run(gw.fs.open("/f", READ_WRITE, SetAttributes()))
    big = os.urandom(MEMORY_COPY_BYTES + 1)
    gw.run(handle.write(0, big))
    gw.run_waiting(handle.fsync())
    gw.run(handle.close())
    gw.upload_everything()
    gw.write("/g", b"first version")  # closed: recorded, and left pending
    handle = gw.run(gw.fs.open("/g", READ_WRITE, SetAttributes()))
    gw.run(handle.write(0, b"FIRST"))
    gw.run_waiting(handle.fsync())
    gw.run(handle.close())
    gw.upload_everything()
    large = os.urandom(MEMORY_FILE_BYTES + 1)
    gw.write("/h", b"first version")
    handle = gw.run(gw.fs.open("/h", READ_WRITE, SetAttributes()))
    gw.run(handle.write(0, large))
    gw.run_waiting(handle.fsync())
    gw.run(handle.close())
    gw.upload_everything()
    # The big change's snapshot; the open's copy of /g's pending version, /g's snapshot;
    # the open's copy of /h's (made in memory, moved to disk by the large write), /h's
    # snapshot.
    assert [(s.in_memory, existed) for s, existed in made] == [
        (False, True),
        (True, False),
        (True, False),
        (False, False),
        (False, True),
    ]
    assert gw.read("/f") == big + BASE[len(big) :]
    assert gw.read("/g") == b"FIRST version"
    assert gw.read("/h") == large


def test_a_memory_copy_goes_to_disk_with_its_holes(tmp_path: Path) -> None:
    """``move_to_disk`` (a snapshot whose record cannot hold its bytes) writes the memory
    copy's ranges to a staged file, holes kept, the quota unchanged, no memory held."""
    gw = VolumeHarness(tmp_path)
    area = gw.volume.staging
    memory = area.create(memory_limit=1000)
    assert memory.in_memory and not memory.path.exists()
    memory.hold(Ranges([(10, 20), (100, 110)]), 200)
    os.pwrite(memory.fd, b"a" * 10, 10)
    os.pwrite(memory.fd, b"b" * 10, 100)
    used = area.used
    assert area.memory_used == 20
    memory.move_to_disk()
    assert not memory.in_memory and memory.path.exists() and area.memory_used == 0
    assert memory.read(0, 200) == bytes(10) + b"a" * 10 + bytes(80) + b"b" * 10 + bytes(90)
    assert memory.written == Ranges([(10, 20), (100, 110)])
    assert area.used == used
    memory.discard()
    assert area.used == 0 and not memory.path.exists()


def test_a_memory_snapshot_is_kept_in_memory(tmp_path: Path) -> None:
    """A file staged in memory is kept as bytes (no file appears), read back by its
    capability, and its staged file's memory and quota are given back."""
    area = StagingArea(tmp_path, 10_000, spare_files=0)
    kept = KeptCopies(5_000)
    memory = area.create(memory_limit=1000)
    memory.write(0, b"m" * 100)
    kept.keep("cap-m", memory)
    assert memory.discarded and list(tmp_path.iterdir()) == []
    reader = kept.reader("cap-m")
    assert reader is not None and reader.read_now(0, 1000) == b"m" * 100
    assert area.used == kept.used == area.memory_used == 0
    assert kept.memory_used == 100


def test_a_file_opened_over_a_memory_snapshot_copies_it_by_hand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client fsyncs and closes at once (sshfs sends both before either is answered),
    and another opens the file while the snapshot, held in memory, is still uploading:
    the new handle's staged copy of it is made by hand (the kernel copies no range
    between memory and a disk), it holds the change, and the kernel still copies every
    other staged range afterwards."""
    monkeypatch.setattr(rangecopy, "_kernel_copy", hasattr(os, "copy_file_range"))
    gw = VolumeHarness(tmp_path)
    gw.write("/f", BASE)
    gw.upload_everything()
    made = _snapshots(gw, monkeypatch)
    first = gw.run(gw.fs.open("/f", READ_WRITE, SetAttributes()))
    gw.run(first.write(5000, b"x" * 4096))
    synced: list[object] = []
    Deferred.fromCoroutine(first.fsync()).addBoth(synced.append)
    gw.run(first.close())
    assert synced == [] and [s.in_memory for s, _ in made] == [True]
    second = gw.run(gw.fs.open("/f", READ_WRITE, SetAttributes()))
    assert rangecopy._kernel_copy == hasattr(os, "copy_file_range")
    expected = BASE[:5000] + b"x" * 4096 + BASE[9096:]
    assert gw.run(second.read(0, len(BASE))) == expected
    gw.run(second.close())
    gw.upload_everything()
    assert synced == [None]
    assert gw.read("/f") == expected


def _refuse(name: str, flags: int) -> int:
    raise OSError(errno.ENOMEM, "Cannot allocate memory")


@pytest.mark.parametrize("memfd", [None, _refuse], ids=["missing", "refused"])
def test_without_a_memfd_the_snapshot_goes_to_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memfd: object
) -> None:
    """Where the system has no memfd, or refuses one (out of memory or descriptors), an
    fsync's small snapshot is a staged file, and the fsync succeeds."""
    monkeypatch.setattr(staging, "_memfd_create", memfd)
    gw = VolumeHarness(tmp_path)
    gw.write("/f", BASE)
    gw.upload_everything()
    made = _snapshots(gw, monkeypatch)
    handle = gw.run(gw.fs.open("/f", READ_WRITE, SetAttributes()))
    gw.run(handle.write(7, b"z"))
    gw.run_waiting(handle.fsync())
    gw.run(handle.close())
    gw.upload_everything()
    assert [(s.in_memory, existed) for s, existed in made] == [(False, True)]
    assert gw.read("/f") == BASE[:7] + b"z" + BASE[8:]
