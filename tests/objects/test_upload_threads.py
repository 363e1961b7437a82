"""Uploads encode off the calling thread: the reactor thread keeps serving clients."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import TypeVar

import pytest
from twisted.internet.defer import Deferred, fail, succeed

from gateway.objects import immutable_format as fmt
from gateway.objects.caps import ImmutableReadCap
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.upload import OFFLOAD_AT, ImmutableUploader
from tests.objects.grid import make_grid, run
from tests.objects.test_immutable import pattern, read

T = TypeVar("T")
SEG = OFFLOAD_AT  # segments large enough to be handed to the threads
PARAMS = fmt.EncodingParams(k=2, happy=3, n=3, segment_size=SEG)
SECRETS = GatewaySecrets(convergence=b"c" * 32, lease=b"l" * 32)


class RecordingThreads:
    """Runs each call in a thread of its own (joined at once) and records which thread ran
    it: a Threads for tests without a running reactor."""

    def __init__(self) -> None:
        self.idents: list[int] = []

    def __call__(self, call: Callable[[], T], /) -> Deferred[T]:
        result: list[T] = []
        errors: list[BaseException] = []

        def work() -> None:
            self.idents.append(threading.get_ident())
            try:
                result.append(call())
            except BaseException as e:  # handed back as the Deferred's failure
                errors.append(e)

        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
        return fail(errors[0]) if errors else succeed(result[0])


@pytest.mark.parametrize("convergent", [True, False])
def test_segments_are_hashed_and_encoded_in_the_threads(convergent: bool) -> None:
    """A multi-segment upload reads, hashes and encodes every segment in the encoding
    threads, never in the caller's, and reads back byte for byte. Its shares are written
    whole (at most WHOLE_SHARE_WRITE), so all of its segments are encoded in one call."""
    grid = make_grid(3)
    threads = RecordingThreads()
    data = pattern(5 * SEG + 7)
    uploader = ImmutableUploader(grid, SECRETS, PARAMS, convergent=convergent, threads=threads)
    cap = run(uploader.upload_bytes(data))
    assert isinstance(cap, ImmutableReadCap)
    assert read(grid, cap) == data
    encodes = 1  # every segment, the 7-byte tail too, in one call
    hashing = 1 if convergent else 0  # one run of up to 8 segments (the empty read after it
    assert len(threads.idents) == encodes + hashing  # at the end runs in place)
    assert threading.get_ident() not in threads.idents


@pytest.mark.parametrize("size", [100, OFFLOAD_AT - 1])
def test_a_small_object_is_read_and_encoded_in_place(size: int) -> None:
    """An object smaller than OFFLOAD_AT (a chunk tree's node, a small file) costs less
    to encode than a hand-off to a thread: nothing goes to the threads, and it reads back
    byte for byte."""
    grid = make_grid(3)
    threads = RecordingThreads()
    data = pattern(size, seed=3)
    cap = run(ImmutableUploader(grid, SECRETS, PARAMS, threads=threads).upload_bytes(data))
    assert isinstance(cap, ImmutableReadCap)
    assert read(grid, cap) == data
    assert threads.idents == []


def test_the_same_bytes_get_the_same_cap_with_or_without_threads() -> None:
    """Offloading changes where the work runs, not what is stored: convergent caps match."""
    data = pattern(3 * SEG + 100, seed=9)
    plain = run(ImmutableUploader(make_grid(3), SECRETS, PARAMS).upload_bytes(data))
    threads = RecordingThreads()
    threaded = run(
        ImmutableUploader(make_grid(3), SECRETS, PARAMS, threads=threads).upload_bytes(data)
    )
    assert plain == threaded
    assert threads.idents


def test_a_failure_in_a_thread_fails_the_upload_and_leaves_nothing() -> None:
    """An error raised while encoding in a thread reaches the caller, and what was allocated
    is aborted: no share is left behind."""
    grid = make_grid(3)

    class Shrinking:
        """A source that loses its tail between the two passes (at the rewind to 0 once
        the first pass has read)."""

        def __init__(self, data: bytes):
            self._io = io.BytesIO(data)
            self._read = False

        def read(self, n: int = -1) -> bytes:
            self._read = True
            return self._io.read(n)

        def tell(self) -> int:
            return self._io.tell()

        def seek(self, offset: int, whence: int = 0) -> int:
            if whence == 0 and offset == 0 and self._read:
                self._io = io.BytesIO(self._io.getvalue()[: 2 * SEG])
            return self._io.seek(offset, whence)

    uploader = ImmutableUploader(grid, SECRETS, PARAMS, threads=RecordingThreads())
    with pytest.raises(ValueError, match="changed size"):
        run(uploader.upload(Shrinking(pattern(4 * SEG))))  # type: ignore[arg-type]
    for c in grid:
        assert not c.backend._incoming  # every allocation was aborted
        assert not list(c.backend.storage_indexes())  # and nothing was stored


def test_identical_files_stored_at_once_both_succeed_first_time() -> None:
    """Two uploads of the same bytes at the same time (identical files closed together) both
    succeed at the first attempt with the same cap: the second waits for the first and finds
    its shares, instead of being refused them while they were being written."""
    from twisted.internet.task import Clock

    from gateway.objects.concurrency import start
    from gateway.objects.store import ObjectStore

    clock = Clock()
    grid = make_grid(3, clock=clock, latency=0.01)
    store = ObjectStore(lambda: grid, SECRETS, PARAMS, clock)
    data = pattern(3 * SEG + 5)
    first = start(store.uploader().upload_bytes(data))
    second = start(store.uploader().upload_bytes(data))
    clock.pump([0.01] * 400)
    assert first.called and second.called
    assert first.result == second.result  # type: ignore[attr-defined]
    assert isinstance(first.result, ImmutableReadCap)  # type: ignore[attr-defined]
    cap = first.result  # type: ignore[attr-defined]
    assert run(store.reader(cap).read(0, len(data)), clock) == data


def test_a_shared_failure_reaches_every_waiter_and_is_not_logged_as_unhandled() -> None:
    """A failed Deferred awaited by several (a chunk or tree node being stored or read for
    two readers) gives each the error; once dropped it logs no "Unhandled error" traceback."""
    import gc

    from twisted.internet.defer import Deferred
    from twisted.logger import globalLogPublisher

    from gateway.objects.concurrency import owned, shared, start

    gc.collect()  # earlier tests' dropped failures say so now, not while this one listens
    logged: list[dict[str, object]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        for fire_first in (False, True):  # failing later, or already failed when awaited
            source: Deferred[int] = Deferred()
            if fire_first:
                source.errback(ValueError("the grid said no"))

            async def waiter(first: bool, failing: Deferred[int]) -> int:
                return await (owned if first else shared)(failing)

            owner = start(waiter(True, source))
            other = start(waiter(False, source)) if not fire_first else None
            if not fire_first:
                source.errback(ValueError("the grid said no"))
            for d in (owner, other):
                if d is not None:
                    assert isinstance(d.result.value, ValueError)  # type: ignore[attr-defined]
                    d.addErrback(lambda _: None)
            del source, owner, other
            gc.collect()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    # Only this test's error counts: a cycle left by another test on this worker may still
    # be collected meanwhile, and log its own "Unhandled error in Deferred".
    assert not [e for e in logged if "the grid said no" in str(e.get("log_failure", ""))]


def test_identical_stores_behind_an_ordered_server_sync_one_at_a_time() -> None:
    """Three stores of the same bytes at once on an ordered server, whose ``sync`` takes a
    moment: each that waited syncs while holding the storage index, so none steps in
    meanwhile and every store ends with the same cap (a store syncing before it held the
    index let the third in: two held it, and the second to end failed with a KeyError)."""
    from twisted.internet.task import Clock, deferLater
    from zope.interface import implementer

    from gateway.grid.interfaces import IOrderedStorage
    from gateway.objects.concurrency import start
    from gateway.objects.store import ObjectStore
    from storage.interfaces import WriteResult
    from tests.objects.grid import GridClient

    clock = Clock()

    @implementer(IOrderedStorage)
    class Ordered(GridClient):
        """The in-process server, ordered: its writes durable once answered."""

        async def write_immutable_ordered(
            self, storage_index: bytes, share: int, secret: bytes, offset: int, data: bytes
        ) -> WriteResult:
            return await self.write_immutable(storage_index, share, secret, offset, data)

        async def sync(self) -> None:
            await deferLater(clock, 0.01)

    (plain,) = make_grid(1, clock=clock, latency=0.01)
    server = Ordered(plain.server, plain.server_id, plain.nickname, clock, 0.01)
    params = fmt.EncodingParams(k=1, happy=1, n=1, segment_size=SEG)
    store = ObjectStore(lambda: [server], SECRETS, params, clock)
    data = pattern(SEG + 5)
    stores = [start(store.uploader().upload_bytes(data)) for _ in range(3)]
    clock.pump([0.01] * 400)
    assert all(s.called for s in stores)
    caps = [s.result for s in stores]
    assert isinstance(caps[0], ImmutableReadCap) and caps == [caps[0]] * 3
