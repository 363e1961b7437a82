"""Sparse staging: a file opened without TRUNC stages only what is written over its grid
version, and its upload stores only what changed (issue #16).

The store under the volume records what each :meth:`update_file` was asked to store, so the
tests can say what a change cost; the contents are always checked byte for byte.
"""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from gateway.fs import staging as staging_module
from gateway.fs.interfaces import OpenFlags, SetAttributes
from gateway.fs.sparse import Ranges, changed_ranges, merged_read
from gateway.fs.writing import WriteHandle
from gateway.intents.log import IN_PLACE_BELOW
from gateway.objects.caps import ImmutableCap
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.immutable_format import EncodingParams
from gateway.objects.store import ObjectStore
from tests.fs.support import READ_WRITE, VolumeHarness, drive, recorded
from tests.objects.grid import make_grid

SIZE = 300_000
DATA = os.urandom(SIZE)


class RecordingStore(ObjectStore):
    """The real object store on an in-memory grid (chunk trees of 16 KiB chunks, 4 to a
    node), noting what each update was asked to store."""

    def __init__(self, clock: Clock) -> None:
        grid = make_grid(1)
        super().__init__(
            lambda: grid,
            GatewaySecrets(convergence=b"c" * 32, lease=b"l" * 32),
            EncodingParams(k=1, happy=1, n=1),
            clock,
            # Small chunks and nodes: the test files are trees of several levels.
            chunk_size=16 << 10,
            fanout=4,
        )
        self.updates: list[list[tuple[int, int]]] = []
        self.zeros: list[list[tuple[int, int]]] = []
        self.read_bytes = 0
        self.whole_uploads = 0

    async def update_file(
        self,
        base: ImmutableCap | None,
        size: int,
        changed: Sequence[tuple[int, int]],
        read: Callable[[int, int], Awaitable[bytes]],
        progress: Callable[[int], None] | None = None,
        zeros: Sequence[tuple[int, int]] = (),
        ordered: bool = False,
        overlay: bool = False,
    ) -> ImmutableCap:
        """Note the changed ranges and the zeros, then store."""
        self.updates.append(list(changed))
        self.zeros.append(list(zeros))

        async def counted(offset: int, length: int) -> bytes:
            data = await read(offset, length)
            self.read_bytes += len(data)
            return data

        return await super().update_file(
            base, size, changed, counted, progress, zeros, ordered, overlay
        )

    async def upload(self, source):  # type: ignore[no-untyped-def]
        """Note a whole-file upload, then store."""
        self.whole_uploads += 1
        return await super().upload(source)


def harness(
    tmp_path: Path, in_place_below: float = IN_PLACE_BELOW
) -> tuple[VolumeHarness, RecordingStore]:
    """A volume over a recording store, with ``/f.bin`` (DATA) in the grid (the journal's
    ``in_place_below`` as given)."""
    clock = Clock()
    store = RecordingStore(clock)
    gw = VolumeHarness(tmp_path, store, in_place_below)
    store.clock = gw.clock
    gw.write("/f.bin", DATA)
    gw.upload_everything()
    store.updates.clear()
    store.zeros.clear()
    return gw, store


def open_rw(gw: VolumeHarness, path: str = "/f.bin") -> WriteHandle:
    """OPEN for reading and writing, without TRUNC."""
    handle = gw.run(gw.fs.open(path, READ_WRITE, SetAttributes()))
    assert isinstance(handle, WriteHandle)
    return handle


# -- Ranges and merged reads ------------------------------------------------------------


def test_ranges_merge_touching_and_overlapping_ranges() -> None:
    """Adding ranges keeps them sorted and disjoint; the count of new bytes is exact."""
    ranges = Ranges()
    assert ranges.add(10, 20) == 10
    assert ranges.add(30, 40) == 10
    assert ranges.add(20, 30) == 10  # fills the gap: one range
    assert list(ranges) == [(10, 40)]
    assert ranges.add(5, 15) == 5
    assert ranges.add(12, 18) == 0
    assert list(ranges) == [(5, 40)] and ranges.covered == 35
    assert ranges.within(6, 40) and not ranges.within(4, 6)
    assert ranges.covered_in(0, 10) == 5


def test_ranges_cut_drops_what_lies_past_the_size() -> None:
    """Cutting at a size drops whole ranges past it and shortens the one across it."""
    ranges = Ranges([(0, 10), (20, 30), (40, 50)])
    assert ranges.cut(25) == 5 + 10
    assert list(ranges) == [(0, 10), (20, 25)]
    assert list(ranges.pieces(5, 30)) == [
        (5, 10, True),
        (10, 20, False),
        (20, 25, True),
        (25, 30, False),
    ]


@given(
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 60)), max_size=30), st.integers(0, 260)
)
def test_ranges_agree_with_a_set_of_offsets(adds: list[tuple[int, int]], cut: int) -> None:
    """Any adds and a cut hold exactly the offsets a plain set would."""
    ranges, model = Ranges(), set()
    for start, length in adds:
        new = ranges.add(start, start + length)
        assert new == len(set(range(start, start + length)) - model)
        model |= set(range(start, start + length))
    assert ranges.covered == len(model)
    ranges.cut(cut)
    model = {x for x in model if x < cut}
    assert {x for s, e in ranges for x in range(s, e)} == model
    starts = [s for s, _ in ranges]
    ends = [e for _, e in ranges]
    assert all(e < s for e, s in zip(ends, starts[1:], strict=False))  # disjoint, not touching


def test_merged_reads_take_changes_then_the_base_then_zeros() -> None:
    """Written ranges come from the staged bytes, the rest from the base below the limit,
    zeros above it (a truncated and re-extended file)."""
    staged = bytearray(100)
    staged[10:20] = b"S" * 10

    async def base(offset: int, length: int) -> bytes:
        return (b"B" * 50)[offset : offset + length]

    read = merged_read(
        0,
        100,
        size=80,
        changed=Ranges([(10, 20)]),
        staged=lambda o, n: bytes(staged[o : o + n]),
        base=base,
        limit=40,
    )
    result = drive(read, None)  # type: ignore[arg-type]
    assert result == b"B" * 10 + b"S" * 10 + b"B" * 20 + bytes(40)
    assert changed_ranges(Ranges([(10, 20)]), 40, 80) == [(10, 20), (40, 80)]


# -- the volume --------------------------------------------------------------------------


def test_opening_for_writing_copies_nothing(tmp_path: Path) -> None:
    """OPEN without TRUNC stages no byte; reads come from the grid version."""
    gw, _ = harness(tmp_path)
    handle = open_rw(gw)
    assert handle.state.staged.written.covered == 0
    assert gw.volume.staging.used == 0
    assert gw.run(handle.read(1000, 5000)) == DATA[1000:6000]
    assert gw.stat("/f.bin").size == SIZE
    gw.run(handle.close())


def test_a_change_stages_and_stores_only_what_changed(tmp_path: Path) -> None:
    """A 4 KiB write stages 4 KiB; CLOSE journals it; the upload stores that range only."""
    gw, store = harness(tmp_path)
    handle = open_rw(gw)
    gw.run(handle.write(150_000, b"x" * 4096))
    assert handle.state.staged.written.covered == 4096
    assert gw.volume.staging.used == 4096
    assert (
        gw.run(handle.read(149_000, 6000))
        == DATA[149_000:150_000] + b"x" * 4096 + DATA[154_096:155_000]
    )
    gw.run(handle.close())
    (pending,) = gw.queue.status()["pending"]
    assert pending["changed"] == 4096 and pending["size"] == SIZE
    expected = DATA[:150_000] + b"x" * 4096 + DATA[154_096:]
    assert gw.read("/f.bin") == expected  # from staging over the grid, while pending
    gw.upload_everything()
    assert store.updates == [[(150_000, 154_096)]]
    assert gw.read("/f.bin") == expected


def test_appends_store_the_appended_bytes(tmp_path: Path) -> None:
    """``>>`` opens with APPEND: the change is the bytes past the old end."""
    gw, store = harness(tmp_path)
    handle = gw.run(gw.fs.open("/f.bin", OpenFlags(write=True, append=True), SetAttributes()))
    gw.run(handle.write(0, b"line\n"))
    gw.run(handle.close())
    gw.upload_everything()
    assert store.updates == [[(SIZE, SIZE + 5)]]
    assert gw.read("/f.bin") == DATA + b"line\n"


def test_truncating_then_growing_reads_zeros_where_the_base_was_cut(tmp_path: Path) -> None:
    """A truncate hides the base past it for good: growing the file again reads zeros."""
    gw, store = harness(tmp_path)
    handle = open_rw(gw)
    gw.run(handle.setattr(SetAttributes(size=1000)))
    gw.run(handle.setattr(SetAttributes(size=3000)))
    gw.run(handle.write(2000, b"y" * 10))
    expected = DATA[:1000] + bytes(1000) + b"y" * 10 + bytes(990)
    assert gw.run(handle.read(0, 5000)) == expected
    gw.run(handle.close())
    gw.upload_everything()
    assert store.updates == [[(1000, 3000)]]
    assert gw.read("/f.bin") == expected


CHUNK = 16 << 10
NEW = OpenFlags(read=True, write=True, create=True, truncate=True)


def test_a_sparse_new_file_stores_its_holes_without_reading_them(tmp_path: Path) -> None:
    """A new file grown by a truncate and written in two places (an image file made with
    ``truncate -s``, then written): its upload reads the two extents written and stores
    the holes as one zero extent shared by all of them; it reads back exactly."""
    gw, store = harness(tmp_path)
    size = 64 * CHUNK + 100
    handle = gw.run(gw.fs.open("/image.img", NEW, SetAttributes()))
    gw.run(handle.setattr(SetAttributes(size=size)))
    gw.run(handle.write(5 * CHUNK + 7, b"superblock"))
    gw.run(handle.write(size - 10, b"last bytes"))
    gw.run(handle.close())
    expected = bytearray(size)
    expected[5 * CHUNK + 7 : 5 * CHUNK + 17] = b"superblock"
    expected[size - 10 :] = b"last bytes"
    store.read_bytes = 0
    gw.upload_everything()
    assert store.zeros == [[(0, 5 * CHUNK + 7), (5 * CHUNK + 17, size - 10)]]
    assert store.read_bytes == CHUNK + 100, "only the two extents written were read"
    assert gw.read("/image.img") == bytes(expected)


def test_a_file_truncated_and_grown_stores_the_growth_without_reading_it(
    tmp_path: Path,
) -> None:
    """Growing a file in the grid by many chunks (``truncate -s`` of an existing image)
    reads none of the new zeros and stores the file as its base plus zeros."""
    gw, store = harness(tmp_path)
    handle = open_rw(gw)
    grown = SIZE + 40 * CHUNK
    gw.run(handle.setattr(SetAttributes(size=grown)))
    gw.run(handle.close())
    store.read_bytes = 0
    gw.upload_everything()
    assert store.zeros == [[(SIZE, grown)]]
    # the base's last, partial extent is stored again with its first zeros; no other read
    assert store.read_bytes <= 2 * CHUNK
    assert gw.read("/f.bin") == DATA + bytes(40 * CHUNK)


new_file_operations = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 12 * CHUNK), st.integers(1, 3 * CHUNK)),
        st.tuples(st.just("truncate"), st.integers(0, 16 * CHUNK), st.just(0)),
    ),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(new_file_operations, st.booleans())
def test_any_new_sparse_file_reads_back_as_written(tmp_path_factory, ops, crash) -> None:  # type: ignore[no-untyped-def]
    """A new file made of writes at any offsets and truncates down and up (holes anywhere,
    zeros written on purpose too), closed, maybe through a kill -9 before its upload:
    once uploaded it reads back byte for byte as a model file says."""
    gw, _ = harness(tmp_path_factory.mktemp("new"))
    model = bytearray()
    handle = gw.run(gw.fs.open("/new.bin", NEW, SetAttributes()))
    for op, a, b in ops:
        if op == "write":
            data = bytes([a % 3]) * b  # zeros now and then: written, not holes
            gw.run(handle.write(a, data))
            if a > len(model):
                model.extend(bytes(a - len(model)))
            model[a : a + b] = data
        else:
            gw.run(handle.setattr(SetAttributes(size=a)))
            model = model[:a] + bytearray(max(0, a - len(model)))
    gw.run(handle.close())
    if crash:
        gw.crash()
    gw.upload_everything()
    assert gw.read("/new.bin") == bytes(model)


def test_each_fsync_stores_what_changed_since_the_last(tmp_path: Path) -> None:
    """The first fsync stores its change; the second only the change made after the first."""
    gw, store = harness(tmp_path)
    handle = open_rw(gw)
    gw.run(handle.write(1000, b"a" * 100))
    gw.run_waiting(handle.fsync())
    gw.run(handle.write(200_000, b"b" * 100))
    gw.run_waiting(handle.fsync())
    assert store.updates == [[(1000, 1100)], [(200_000, 200_100)]]
    expected = bytearray(DATA)
    expected[1000:1100] = b"a" * 100
    expected[200_000:200_100] = b"b" * 100
    assert gw.read("/f.bin") == bytes(expected)  # (read by another handle)
    gw.run(handle.write(5, b"c"))
    gw.run(handle.close())
    gw.upload_everything()
    assert store.updates[-1] == [(5, 6)]
    expected[5:6] = b"c"
    assert gw.read("/f.bin") == bytes(expected)


def test_reopening_a_file_still_uploading_copies_only_its_changes(tmp_path: Path) -> None:
    """A second OPEN of a file whose change waits for its upload stages that change again
    (never the grid version under it), and its own; the first version is not stored at
    all (the second, journaled, replaces it), and the second stores both changes."""
    gw, store = harness(tmp_path)
    first = open_rw(gw)
    gw.run(first.write(10, b"1" * 10))
    gw.run(first.close())
    second = open_rw(gw)
    assert second.state.staged.written.covered == 10
    gw.run(second.write(100_000, b"2" * 10))
    gw.run(second.close())
    gw.upload_everything()
    expected = bytearray(DATA)
    expected[10:20] = b"1" * 10
    expected[100_000:100_010] = b"2" * 10
    assert gw.read("/f.bin") == bytes(expected)
    assert store.updates == [[(10, 20), (100_000, 100_010)]]


@pytest.mark.parametrize("changed", [4096, 100_000], ids=["in the record", "in staging"])
def test_a_change_closed_before_a_crash_is_stored_after_it(tmp_path: Path, changed: int) -> None:
    """kill -9 after CLOSE: the restarted gateway stores the change over the same version,
    whether the changed bytes travelled in the journal record or in the staged file."""
    gw, store = harness(tmp_path)
    handle = open_rw(gw)
    gw.run(handle.write(50_000, b"z" * changed))
    gw.run(handle.close())
    gw.crash()
    expected = DATA[:50_000] + b"z" * changed + DATA[50_000 + changed :]
    assert gw.read("/f.bin") == expected  # pending again, from staging over the grid
    gw.upload_everything()
    assert store.updates == [[(50_000, 50_000 + changed)]]
    assert gw.read("/f.bin") == expected
    assert gw.volume.staging.used == 0


@pytest.mark.parametrize("in_memory", [True, False], ids=["in-memory", "on-disk"])
def test_a_small_change_closes_without_an_fsync_of_the_staged_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_memory: bool
) -> None:
    """A small change to a large file (an append to a log, a page of an image) travels in
    its journal record, so its CLOSE fsyncs the journal only, not the staged file; after a
    crash that lost the staged file (in memory), or its unflushed bytes (on disk, where
    staging in memory is off), the record rebuilds them."""
    gw, store = harness(tmp_path)
    if not in_memory:
        gw.volume.staging.memory_bytes = 0
    monkeypatch.setattr(staging_module, "PRESYNC_BYTES", 1)  # SIZE would be presynced
    gw.fs._writers._threads = gw.threads  # a thread runner, as a running gateway has
    handle = open_rw(gw)
    staged = handle.state.staged
    assert staged is not None
    fsynced = recorded(monkeypatch, "fsync")
    gw.run(handle.write(SIZE, b"appended" * 512))  # 4 KiB at the end
    gw.threads.run_all()
    gw.run(handle.close())
    gw.threads.run_all()
    assert staged.fd not in fsynced
    assert staged.in_memory == in_memory and staged.path.exists() != in_memory
    if not in_memory:
        with open(staged.path, "r+b") as f:  # what a power cut may leave of unflushed pages
            f.seek(SIZE)
            f.write(bytes(4096))
    gw.crash()
    expected = DATA + b"appended" * 512
    assert gw.read("/f.bin") == expected
    gw.upload_everything()
    assert store.updates == [[(SIZE, SIZE + 4096)]]
    assert gw.read("/f.bin") == expected


# -- any sequence of operations against a model ------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, SIZE + 20_000), st.integers(1, 70_000)),
        st.tuples(st.just("append"), st.integers(1, 5000), st.just(0)),
        st.tuples(st.just("truncate"), st.integers(0, SIZE + 50_000), st.just(0)),
        st.tuples(st.just("fsync"), st.just(0), st.just(0)),
        st.tuples(st.just("close"), st.just(0), st.just(0)),
        st.tuples(st.just("crash"), st.just(0), st.just(0)),
        st.tuples(st.just("upload"), st.just(0), st.just(0)),
    ),
    max_size=12,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations)
def test_any_sequence_of_changes_and_crashes_matches_a_model(tmp_path_factory, ops) -> None:  # type: ignore[no-untyped-def]
    """Writes, appends, truncates, fsyncs, closes, uploads and kill -9 in any order: the file
    always reads as the model says, and after a crash it is exactly the last acknowledged
    state (the last fsync or CLOSE), never a mix."""
    run_model(harness(tmp_path_factory.mktemp("model"))[0], ops)


def run_model(gw: VolumeHarness, ops: list[tuple[str, int, int]]) -> None:
    """Run ``ops`` on ``/f.bin`` (DATA) against a model of the file, checking every step."""
    acknowledged = bytearray(DATA)
    current = bytearray(DATA)
    handle: WriteHandle | None = None
    for op, a, b in ops:
        if op in ("write", "append", "truncate") and handle is None:
            handle = open_rw(gw)
        if op == "write":
            assert handle is not None
            data = bytes([len(current) % 251]) * b
            gw.run(handle.write(a, data))
            if a > len(current):
                current.extend(bytes(a - len(current)))
            current[a : a + b] = data
        elif op == "append":
            assert handle is not None
            gw.run(handle.write(len(current), b"A" * a))
            current.extend(b"A" * a)
        elif op == "truncate":
            assert handle is not None
            gw.run(handle.setattr(SetAttributes(size=a)))
            current = current[:a] + bytearray(max(0, a - len(current)))
        elif op == "fsync" and handle is not None:
            gw.run_waiting(handle.fsync())
            acknowledged = bytearray(current)
        elif op == "close" and handle is not None:
            gw.run(handle.close())
            handle = None
            acknowledged = bytearray(current)
        elif op == "crash":
            gw.crash()
            handle = None
            current = bytearray(acknowledged)
        elif op == "upload":
            gw.upload_everything()
        if handle is not None:
            assert gw.run(handle.read(0, 1 << 30)) == bytes(current)
        else:
            assert gw.read("/f.bin") == bytes(current)
    if handle is not None:
        gw.run(handle.close())
    gw.upload_everything()
    assert gw.read("/f.bin") == bytes(current)
    assert gw.volume.staging.used == 0


def test_spare_staged_files_stay_while_a_file_is_open_and_go_after_its_close(
    tmp_path: Path,
) -> None:
    """An fsync's snapshot takes a spare staged file, and the queue is idle again after its
    upload: the spares stay while the file is still open for writing (not dropped and made
    again at every fsync), and are gone once it is closed and uploaded."""
    gw, _ = harness(tmp_path)
    staging = gw.volume.staging
    staging.files.spare_files = 4
    staging.memory_bytes = 0  # snapshots on disk (a small one is in memory otherwise)
    gw.fs._writers._threads = gw.threads  # a thread runner, as a running gateway has
    handle = open_rw(gw)
    for i in range(3):
        gw.run(handle.write(i * 20_000, b"v%d" % i))
        gw.run_waiting(handle.fsync())
        gw.threads.run_all()
        assert gw.queue.idle and staging.spares > 0
    gw.run(handle.close())
    gw.upload_everything()
    assert staging.spares == 0
    assert [p for p in staging.directory.iterdir() if p.suffix == ".staged"] == []


def test_fsyncs_in_a_loop_keep_few_readers_of_old_versions(tmp_path: Path) -> None:
    """Each fsync makes a new version the base; the reader of the old one (and its cached
    segments) is dropped, so a database fsyncing in a loop holds a bounded cache."""
    gw, _ = harness(tmp_path)
    handle = open_rw(gw)
    contents = gw.volume.contents
    bases = []
    for i in range(12):
        gw.run(handle.read(i * 20_000, 100))  # the base is read (and its reader cached)
        gw.run(handle.write(i * 20_000, b"v%d" % i))
        gw.run_waiting(handle.fsync())
        bases.append(handle.state.base)
    kept = {cap for cap, _ in contents._readers}  # (a reader for reads, one for uploads)
    assert len(kept) <= 2  # (the current base's, at most one more)
    assert all(b is not None and b.cap not in kept for b in bases[:-1])
    gw.run(handle.close())


def test_a_dropped_reader_of_an_old_version_is_freed_at_once(tmp_path: Path) -> None:
    """The reader of a base an fsync left behind (with the segments its extents' readers
    keep) is freed as soon as it leaves the cache, not at the garbage collector's next full
    collection: nothing refers to it in a cycle."""
    gw, _ = harness(tmp_path)
    handle = open_rw(gw)
    contents = gw.volume.contents
    dropped: list[weakref.ref[object]] = []
    gc.disable()  # what a cycle would keep alive stays alive meanwhile
    try:
        for i in range(6):
            gw.run(handle.read(i * 20_000, 100))  # the base's reader is made and cached
            dropped.extend(weakref.ref(reader) for reader in contents._readers.values())
            gw.run(handle.write(i * 20_000, b"v%d" % i))
            gw.run_waiting(handle.fsync())
        alive = {id(r) for r in contents._readers.values()}
        assert dropped and all(r() is None for r in dropped if id(r()) not in alive), [
            r() for r in dropped
        ]
    finally:
        gc.enable()
    gw.run(handle.close())
