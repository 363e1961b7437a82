"""Contract tests of immutable shares, run against every backend through StorageServer."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from storage.errors import (
    ConflictingWrite,
    NoSuchShare,
    NoSuchUpload,
    NotAuthorized,
    RangeNotSatisfiable,
)
from storage.interfaces import ByteRange, IStorageServer, WriteResult
from storage.server import MAX_CORRUPTION_REPORTS, MAX_REASON_LENGTH, StorageServer
from tests.storage.conftest import START, fresh_backend
from tests.storage.values import CANCEL, RENEW, SI, SI2, UPLOAD, UPLOAD2


def allocate(server: StorageServer, shares: set[int], size: int, secret: bytes = UPLOAD) -> None:
    """Allocate shares of ``size`` bytes under SI."""
    server.allocate_buckets(SI, frozenset(shares), size, secret, RENEW, CANCEL)


def upload(server: StorageServer, share: int, data: bytes, secret: bytes = UPLOAD) -> None:
    """Allocate and completely write one share under SI."""
    allocate(server, {share}, len(data), secret)
    assert server.write_immutable(SI, share, secret, 0, data).finished


def test_provides_interface(server: StorageServer) -> None:
    """StorageServer provides IStorageServer over every backend."""
    assert verifyObject(IStorageServer, server)


def test_allocate_reports_allocated(server: StorageServer) -> None:
    """A fresh allocation opens every requested share and has none already."""
    result = server.allocate_buckets(SI, frozenset({0, 3}), 10, UPLOAD, RENEW, CANCEL)
    assert result.allocated == {0, 3}
    assert result.already_have == frozenset()


def test_allocate_is_idempotent(server: StorageServer) -> None:
    """Repeating an allocation with the same upload secret gives the same answer."""
    first = server.allocate_buckets(SI, frozenset({0, 1}), 10, UPLOAD, RENEW, CANCEL)
    server.write_immutable(SI, 0, UPLOAD, 0, b"abc")
    second = server.allocate_buckets(SI, frozenset({0, 1}), 10, UPLOAD, RENEW, CANCEL)
    assert first == second
    # The bytes written before the repeat are still there.
    assert server.write_immutable(SI, 0, UPLOAD, 3, b"defghij").finished
    assert server.read_immutable(SI, 0, 0, 10) == b"abcdefghij"


def test_allocate_other_secret_leaves_uploads_alone(server: StorageServer) -> None:
    """A different upload secret gets new shares only; another client's upload is untouched."""
    allocate(server, {0}, 4)
    server.write_immutable(SI, 0, UPLOAD, 0, b"ab")
    result = server.allocate_buckets(SI, frozenset({0, 1}), 4, UPLOAD2, RENEW, CANCEL)
    assert result.allocated == {1}
    with pytest.raises(NotAuthorized):
        server.write_immutable(SI, 0, UPLOAD2, 2, b"cd")
    assert server.write_immutable(SI, 0, UPLOAD, 2, b"cd").finished
    assert server.read_immutable(SI, 0, 0, 4) == b"abcd"


def test_allocate_reports_complete_shares(server: StorageServer) -> None:
    """Complete shares are reported in already_have (all of them) and not reallocated."""
    upload(server, 2, b"data")
    upload(server, 5, b"more")
    result = server.allocate_buckets(SI, frozenset({2, 3}), 4, UPLOAD2, RENEW, CANCEL)
    assert result.already_have == {2, 5}
    assert result.allocated == {3}


def test_share_invisible_until_complete(server: StorageServer) -> None:
    """A share is listed and readable only once every byte is written."""
    allocate(server, {1}, 6)
    assert server.write_immutable(SI, 1, UPLOAD, 0, b"abc") == WriteResult(
        finished=False, required=(ByteRange(3, 6),)
    )
    assert server.list_immutable(SI) == frozenset()
    with pytest.raises(NoSuchShare):
        server.read_immutable(SI, 1, 0, 3)
    assert server.write_immutable(SI, 1, UPLOAD, 3, b"def") == WriteResult(finished=True)
    assert server.list_immutable(SI) == {1}
    assert server.read_immutable(SI, 1, 0, 6) == b"abcdef"


def test_write_out_of_order_reports_missing_ranges(server: StorageServer) -> None:
    """Writes may come in any order; required lists every missing range."""
    allocate(server, {0}, 10)
    result = server.write_immutable(SI, 0, UPLOAD, 4, b"xy")
    assert result.required == (ByteRange(0, 4), ByteRange(6, 10))
    result = server.write_immutable(SI, 0, UPLOAD, 8, b"zz")
    assert result.required == (ByteRange(0, 4), ByteRange(6, 8))
    server.write_immutable(SI, 0, UPLOAD, 6, b"..")
    assert server.write_immutable(SI, 0, UPLOAD, 0, b"0123").finished
    assert server.read_immutable(SI, 0, 0, 10) == b"0123xy..zz"


def test_overlapping_same_bytes_accepted(server: StorageServer) -> None:
    """Rewriting already-written bytes with the same bytes is fine."""
    allocate(server, {0}, 6)
    server.write_immutable(SI, 0, UPLOAD, 0, b"abcd")
    assert server.write_immutable(SI, 0, UPLOAD, 2, b"cdef").finished


def test_overlapping_different_bytes_conflict(server: StorageServer) -> None:
    """Rewriting already-written bytes differently is a ConflictingWrite, and changes nothing."""
    allocate(server, {0}, 6)
    server.write_immutable(SI, 0, UPLOAD, 0, b"abcd")
    with pytest.raises(ConflictingWrite):
        server.write_immutable(SI, 0, UPLOAD, 2, b"XXef")
    assert server.write_immutable(SI, 0, UPLOAD, 4, b"ef").finished
    assert server.read_immutable(SI, 0, 0, 6) == b"abcdef"


def test_write_out_of_range(server: StorageServer) -> None:
    """Writes past the allocated size are refused."""
    allocate(server, {0}, 4)
    with pytest.raises(RangeNotSatisfiable):
        server.write_immutable(SI, 0, UPLOAD, 2, b"abc")
    with pytest.raises(RangeNotSatisfiable):
        server.write_immutable(SI, 0, UPLOAD, 5, b"")


def test_write_wrong_secret(server: StorageServer) -> None:
    """A write with another upload secret is NotAuthorized."""
    allocate(server, {0}, 4)
    with pytest.raises(NotAuthorized):
        server.write_immutable(SI, 0, UPLOAD2, 0, b"abcd")


def test_write_without_allocation(server: StorageServer) -> None:
    """Writing a share that was never allocated, or is complete, is NoSuchUpload."""
    with pytest.raises(NoSuchUpload):
        server.write_immutable(SI, 0, UPLOAD, 0, b"a")
    upload(server, 1, b"done")
    with pytest.raises(NoSuchUpload):
        server.write_immutable(SI, 1, UPLOAD, 0, b"d")


def test_abort(server: StorageServer) -> None:
    """Aborting discards the upload; the share can then be allocated afresh."""
    allocate(server, {0}, 4)
    server.write_immutable(SI, 0, UPLOAD, 0, b"ab")
    server.abort_immutable(SI, 0, UPLOAD)
    with pytest.raises(NoSuchUpload):
        server.write_immutable(SI, 0, UPLOAD, 2, b"cd")
    assert server.list_immutable(SI) == frozenset()
    upload(server, 0, b"WXYZ", UPLOAD2)
    assert server.read_immutable(SI, 0, 0, 4) == b"WXYZ"


def test_abort_wrong_or_no_upload(server: StorageServer) -> None:
    """Aborting with the wrong secret, nothing allocated, or a complete share is NoSuchUpload."""
    with pytest.raises(NoSuchUpload):
        server.abort_immutable(SI, 0, UPLOAD)
    allocate(server, {0}, 4)
    with pytest.raises(NoSuchUpload):
        server.abort_immutable(SI, 0, UPLOAD2)
    upload(server, 1, b"full")
    with pytest.raises(NoSuchUpload):
        server.abort_immutable(SI, 1, UPLOAD)
    assert server.list_immutable(SI) == {1}


def test_read_clamped(server: StorageServer) -> None:
    """Reads past the end return what exists, or nothing."""
    upload(server, 0, b"0123456789")
    assert server.read_immutable(SI, 0, 7, 100) == b"789"
    assert server.read_immutable(SI, 0, 20, 5) == b""
    assert server.read_immutable(SI, 0, 0, 2**62) == b"0123456789"


def test_read_missing(server: StorageServer) -> None:
    """Reading an unknown share or index is NoSuchShare; listing an unknown index is empty."""
    upload(server, 0, b"x")
    with pytest.raises(NoSuchShare):
        server.read_immutable(SI, 1, 0, 1)
    with pytest.raises(NoSuchShare):
        server.read_immutable(SI2, 0, 0, 1)
    assert server.list_immutable(SI2) == frozenset()


def test_corruption_advice_recorded(server: StorageServer, clock: Clock) -> None:
    """An advisory is recorded for operators and the share is left as it was."""
    upload(server, 3, b"bits")
    server.advise_corrupt_immutable(SI, 3, "block hash mismatch")
    [report] = server.corruption_reports
    assert (report.storage_index, report.share_number, report.reason) == (
        SI,
        3,
        "block hash mismatch",
    )
    assert report.time == START
    assert server.read_immutable(SI, 3, 0, 4) == b"bits"


def test_corruption_reports_bounded(server: StorageServer) -> None:
    """Only the most recent advisories are kept in memory, and long reasons are cut."""
    upload(server, 0, b"x")
    for i in range(MAX_CORRUPTION_REPORTS + 5):
        server.advise_corrupt_immutable(SI, 0, str(i) * (MAX_REASON_LENGTH if i == 0 else 1))
    assert len(server.corruption_reports) == MAX_CORRUPTION_REPORTS
    assert server.corruption_reports[-1].reason == str(MAX_CORRUPTION_REPORTS + 4)


def test_long_reason_cut(server: StorageServer) -> None:
    """An advisory's reason is kept up to a bounded length."""
    upload(server, 0, b"x")
    server.advise_corrupt_immutable(SI, 0, "y" * (MAX_REASON_LENGTH * 2))
    assert len(server.corruption_reports[0].reason) == MAX_REASON_LENGTH


def test_corruption_advice_unknown_share(server: StorageServer) -> None:
    """Advising about a share that is not here is NoSuchShare."""
    with pytest.raises(NoSuchShare):
        server.advise_corrupt_immutable(SI, 0, "bad")


def test_idle_uploads_discarded(server: StorageServer, clock: Clock) -> None:
    """Uploads that receive nothing for the idle time are discarded; active ones stay."""
    allocate(server, {0, 1}, 4)
    clock.advance(100)
    server.write_immutable(SI, 1, UPLOAD, 0, b"a")
    assert server.abort_idle_uploads(100) == 1
    with pytest.raises(NoSuchUpload):
        server.write_immutable(SI, 0, UPLOAD, 0, b"a")
    assert server.write_immutable(SI, 1, UPLOAD, 1, b"bcd").finished


@st.composite
def chunked_upload(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, int]]]:
    """Share data and a list of (begin, end) chunks covering it, possibly overlapping, shuffled."""
    data = draw(st.binary(min_size=1, max_size=300))
    cuts = sorted(
        draw(st.sets(st.integers(1, len(data) - 1), max_size=12)) if len(data) > 1 else []
    )
    bounds = [0, *cuts, len(data)]
    chunks = list(zip(bounds, bounds[1:], strict=False))
    extra = draw(
        st.lists(
            st.tuples(st.integers(0, len(data) - 1), st.integers(1, 50)).map(
                lambda t: (t[0], min(len(data), t[0] + t[1]))
            ),
            max_size=4,
        )
    )
    return data, draw(st.permutations(chunks + extra))


@pytest.mark.parametrize("kind", ["memory", "disk"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=chunked_upload())
def test_any_write_order(kind: str, case: tuple[bytes, list[tuple[int, int]]]) -> None:
    """Any chunking and order of writes gives back the data; completion comes with the last byte."""
    data, chunks = case
    for backend in fresh_backend(kind):
        server = StorageServer(backend, Clock())
        server.allocate_buckets(SI, frozenset({7}), len(data), UPLOAD, RENEW, CANCEL)
        covered: set[int] = set()
        for begin, end in chunks:
            result = server.write_immutable(SI, 7, UPLOAD, begin, data[begin:end])
            covered |= set(range(begin, end))
            assert result.finished == (len(covered) == len(data))
            missing = {i for r in result.required for i in range(r.begin, r.end)}
            assert missing == set(range(len(data))) - covered
            if result.finished:
                break
            assert server.list_immutable(SI) == frozenset()
        assert server.list_immutable(SI) == {7}
        assert server.read_immutable(SI, 7, 0, len(data)) == data


def test_an_allocation_lists_the_index_once(
    server: StorageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Allocating (new shares, or shares already there) and listing the shares read the
    index's shares once each: on disk every listing is a directory read."""
    calls: list[bytes] = []
    backend_class = type(server.backend)
    listed = backend_class.list_shares

    def counting(backend: object, storage_index: bytes) -> frozenset[int]:
        calls.append(storage_index)
        return listed(backend, storage_index)  # type: ignore[arg-type]

    monkeypatch.setattr(backend_class, "list_shares", counting)
    server.allocate_buckets(SI, frozenset({0}), 4, UPLOAD, RENEW, CANCEL)
    assert calls == [SI]
    upload(server, 0, b"data")
    del calls[:]
    result = server.allocate_buckets(SI, frozenset({0, 1}), 4, UPLOAD, RENEW, CANCEL)
    assert result.already_have == {0} and result.allocated == {1}
    assert calls == [SI]
    del calls[:]
    assert server.list_immutable(SI) == {0}
    assert calls == [SI]
