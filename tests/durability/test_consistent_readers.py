"""A reader on another gateway sees a file changed in place one version at a time.

Issue #16 asks that a reader (another handle, another gateway) sees one consistent
version at a time while a writer changes a large file in place. Two gateway
processes share one account root on a grid of three storage-node processes. The
writer (paramiko, gateway one) stamps eight regions of a 4 MiB file (a chunk
tree: two regions in each of its four 1 MiB extents) with a version number, then
fsyncs, over and over; the reader (paramiko, gateway two) opens the file again and again
and reads the eight stamps, each with a READ of its own, while the writer runs.
Every open must show the eight stamps of one version, never a mix, and the
versions a reader sees never go back. A handle kept open reads the version it
opened, in all eight regions, after newer versions show to new opens. Once the
writer is done, the reader sees the last version.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paramiko

from tests.durability.cluster import (
    Grid,
    MiB,
    Session,
    grid_gateway,
    put_bytes,
    wait_drained,
    wait_for,
)
from tests.nodes import NodeReaper

SIZE = 4 * MiB
REGIONS = [i * (SIZE // 8) + 1000 for i in range(8)]
STAMP = 4096
MIN_VERSIONS = 20
MIN_SECONDS = 4.0


def stamp(version: int) -> bytes:
    """A 4 KiB block naming ``version``."""
    return (b"v%08d;" % version) * (STAMP // 10) + b"." * (STAMP % 10)


def version_of(block: bytes) -> int:
    """The version a block read at a region names (checked whole: a torn block fails)."""
    version = int(block[1:9])
    assert block == stamp(version), f"a torn stamp: {block[:40]!r}..."
    return version


def versions_seen(f: paramiko.SFTPFile) -> list[int]:
    """The version at each region, each read by a READ request of its own."""
    seen = []
    for offset in REGIONS:
        f.seek(offset)
        seen.append(version_of(f.read(STAMP)))
    return seen


def test_a_reader_on_another_gateway_sees_one_version_at_a_time(
    tmp_path: Path, reaper: NodeReaper, make_grid: Callable[[int], Grid]
) -> None:
    """While one gateway stamps eight regions and fsyncs, again and again, every open on
    the other gateway reads one version in all eight (never going back), a handle kept
    open reads its own version throughout, and new opens read the last version once the
    writer is done."""
    grid = make_grid(3)
    writer_gw = grid_gateway(tmp_path, reaper, grid, "2/3/3", name="writer")
    reader_gw = grid_gateway(
        tmp_path, reaper, grid, "2/3/3", name="reader", root_from=writer_gw.node_dir
    )
    data = bytearray(random.Random(20).randbytes(SIZE))
    for offset in REGIONS:
        data[offset : offset + STAMP] = stamp(0)
    with Session(writer_gw) as sftp:
        put_bytes(sftp, "/image.bin", bytes(data))
    wait_drained(writer_gw)

    acknowledged: list[int] = []
    done = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with Session(writer_gw) as sftp, sftp.open("/image.bin", "r+") as f:
                started = time.monotonic()
                version = 0
                while version < MIN_VERSIONS or time.monotonic() - started < MIN_SECONDS:
                    version += 1
                    for offset in REGIONS:
                        f.seek(offset)
                        f.write(stamp(version))
                    f.flush()
                    sftp._request(paramiko.sftp.CMD_EXTENDED, "fsync@openssh.com", f.handle)
                    acknowledged.append(version)
        except BaseException as e:  # reported by the main thread
            errors.append(e)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    reads: list[int] = []
    with Session(reader_gw) as sftp:

        def read_once() -> int:
            with sftp.open("/image.bin", "rb") as f:
                seen = versions_seen(f)
            assert len(set(seen)) == 1, f"one open read a mix of versions: {seen}"
            assert not reads or seen[0] >= reads[-1], f"went back: {reads[-1]} -> {seen[0]}"
            reads.append(seen[0])
            return seen[0]

        writer.start()
        try:
            with sftp.open("/image.bin", "rb") as held:
                held.seek(REGIONS[0])
                first = version_of(held.read(STAMP))
                wait_for(lambda: read_once() > first, 60, "a newer version on a new open")
                assert versions_seen(held) == [first] * len(REGIONS)
            while not done.is_set():
                read_once()
        finally:
            writer.join(timeout=300)
        assert not errors, errors
        assert acknowledged and reads
        assert max(reads) <= acknowledged[-1]
        assert len(set(reads)) >= 2, f"the reader saw one version only: {set(reads)}"

        def last_version_seen() -> bool:
            with sftp.open("/image.bin", "rb") as f:
                return versions_seen(f) == [acknowledged[-1]] * len(REGIONS)

        wait_for(last_version_seen, 30, "the last version on the reading gateway")
    print(
        f"{len(acknowledged)} versions written; {len(reads)} opens read "
        f"{len(set(reads))} distinct versions, each whole"
    )
