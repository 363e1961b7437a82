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
    threads, never in the caller's, and reads back byte for byte."""
    grid = make_grid(3)
    threads = RecordingThreads()
    data = pattern(5 * SEG + 7)
    uploader = ImmutableUploader(grid, SECRETS, PARAMS, convergent=convergent, threads=threads)
    cap = run(uploader.upload_bytes(data))
    assert isinstance(cap, ImmutableReadCap)
    assert read(grid, cap) == data
    encodes = 5  # the full segments; the 7-byte tail is encoded in place
    hashing = 1 if convergent else 0  # one run of up to 8 segments
    assert len(threads.idents) == encodes + hashing + (1 if convergent else 0)
    assert threading.get_ident() not in threads.idents


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
        """A source that loses its tail between the two passes (the rewind between them is
        its only seek to 0)."""

        def __init__(self, data: bytes):
            self._io = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self._io.read(n)

        def tell(self) -> int:
            return self._io.tell()

        def seek(self, offset: int, whence: int = 0) -> int:
            if whence == 0 and offset == 0:
                self._io = io.BytesIO(self._io.getvalue()[: 2 * SEG])
            return self._io.seek(offset, whence)

    uploader = ImmutableUploader(grid, SECRETS, PARAMS, threads=RecordingThreads())
    with pytest.raises(ValueError, match="changed size"):
        run(uploader.upload(Shrinking(pattern(4 * SEG))))  # type: ignore[arg-type]
    for c in grid:
        assert not c.backend._incoming  # every allocation was aborted
        assert not list(c.backend.storage_indexes())  # and nothing was stored
