"""Contract tests of mutable slots (read-test-write), run against every backend."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from storage.errors import InvalidRequest, NoSpace, NoSuchShare, NotAuthorized
from storage.interfaces import (
    ReadTestWriteResult,
    ReadVector,
    WriteVector,
)
from storage.interfaces import TestVector as Check  # renamed: pytest collects "Test*"
from storage.interfaces import TestWriteVectors as Vectors
from storage.server import MAX_MUTABLE_SHARE_SIZE, StorageServer
from tests.storage.conftest import fresh_backend
from tests.storage.values import CANCEL, RENEW, SI, UPLOAD, WE, WE2


def rtw(
    server: StorageServer,
    vectors: dict[int, Vectors],
    reads: tuple[ReadVector, ...] = (),
    write_enabler: bytes = WE,
) -> ReadTestWriteResult:
    """Run a read-test-write on SI with the usual secrets."""
    return server.read_test_write(SI, write_enabler, RENEW, CANCEL, vectors, reads)


def write(offset: int, data: bytes, new_length: int | None = None) -> Vectors:
    """Vectors with one unconditional write."""
    return Vectors(write=(WriteVector(offset, data),), new_length=new_length)


def test_first_write_creates_slot(server: StorageServer) -> None:
    """The first write creates the shares; they are listed and readable."""
    result = rtw(server, {0: write(0, b"hello"), 3: write(0, b"world")})
    assert result == ReadTestWriteResult(success=True, reads={})
    assert server.list_mutable(SI) == {0, 3}
    assert server.read_mutable(SI, 3, 0, 5) == b"world"
    assert server.list_immutable(SI) == frozenset()


def test_write_enabler_checked(server: StorageServer) -> None:
    """After the first write, a different write enabler is NotAuthorized, even to read."""
    rtw(server, {0: write(0, b"hello")})
    with pytest.raises(NotAuthorized):
        rtw(server, {0: write(0, b"HELLO")}, write_enabler=WE2)
    with pytest.raises(NotAuthorized):
        rtw(server, {}, (ReadVector(0, 5),), write_enabler=WE2)
    assert server.read_mutable(SI, 0, 0, 5) == b"hello"


def test_tests_gate_every_write(server: StorageServer) -> None:
    """If any test fails, no write of any share is applied."""
    rtw(server, {0: write(0, b"aaaa"), 1: write(0, b"bbbb")})
    result = rtw(
        server,
        {
            0: Vectors(test=(Check(0, 4, b"aaaa"),), write=(WriteVector(0, b"A"),)),
            1: Vectors(test=(Check(0, 4, b"XXXX"),), write=(WriteVector(0, b"B"),)),
        },
        (ReadVector(0, 4),),
    )
    assert result == ReadTestWriteResult(success=False, reads={0: [b"aaaa"], 1: [b"bbbb"]})
    assert server.read_mutable(SI, 0, 0, 4) == b"aaaa"
    assert server.read_mutable(SI, 1, 0, 4) == b"bbbb"


def test_reads_taken_before_writes(server: StorageServer) -> None:
    """Reads return the data as it was before this operation's writes, for every share."""
    rtw(server, {0: write(0, b"old!"), 2: write(0, b"two")})
    result = rtw(server, {0: write(0, b"new!")}, (ReadVector(0, 4), ReadVector(1, 2)))
    assert result.reads == {0: [b"old!", b"ld"], 2: [b"two", b"wo"]}
    assert server.read_mutable(SI, 0, 0, 4) == b"new!"


def test_holes_read_as_zeros(server: StorageServer) -> None:
    """Writing past the end fills the gap with zero bytes."""
    rtw(server, {0: write(4, b"xy")})
    assert server.read_mutable(SI, 0, 0, 10) == b"\0\0\0\0xy"


def test_new_length_truncates_and_extends(server: StorageServer) -> None:
    """new_length cuts the share or extends it with zeros, after the writes."""
    rtw(server, {0: write(0, b"0123456789", new_length=4)})
    assert server.read_mutable(SI, 0, 0, 100) == b"0123"
    rtw(server, {0: Vectors(new_length=6)})
    assert server.read_mutable(SI, 0, 0, 100) == b"0123\0\0"


def test_new_length_zero_deletes(server: StorageServer) -> None:
    """new_length 0 deletes the share; deleting the last share forgets the slot."""
    rtw(server, {0: write(0, b"a"), 1: write(0, b"b")})
    rtw(server, {0: Vectors(new_length=0)})
    assert server.list_mutable(SI) == {1}
    with pytest.raises(NoSuchShare):
        server.read_mutable(SI, 0, 0, 1)
    rtw(server, {1: Vectors(new_length=0)})
    assert server.list_mutable(SI) == frozenset()
    # With no share left, a new writer may take the slot with its own write enabler.
    assert rtw(server, {0: write(0, b"c")}, write_enabler=WE2).success


def test_tests_and_reads_clamped(server: StorageServer) -> None:
    """Tests and reads past the end see only the data that exists."""
    rtw(server, {0: write(0, b"12345")})
    result = rtw(
        server,
        {0: Vectors(test=(Check(1, 100, b"2345"),))},
        (ReadVector(1, 4), ReadVector(1, 50), ReadVector(9, 3)),
    )
    assert result == ReadTestWriteResult(success=True, reads={0: [b"2345", b"2345", b""]})


def test_test_against_missing_share(server: StorageServer) -> None:
    """A missing share tests as empty: only an empty specimen matches."""
    assert not rtw(server, {0: Vectors(test=(Check(0, 1, b"x"),))}).success
    assert server.list_mutable(SI) == frozenset()
    assert rtw(server, {0: Vectors(test=(Check(0, 1, b""),))}).success


def test_read_mutable_clamped_and_missing(server: StorageServer) -> None:
    """read_mutable clamps at the end and reports unknown shares."""
    rtw(server, {0: write(0, b"abc")})
    assert server.read_mutable(SI, 0, 1, 99) == b"bc"
    with pytest.raises(NoSuchShare):
        server.read_mutable(SI, 1, 0, 1)


def test_maximum_mutable_size(server: StorageServer) -> None:
    """A share may not grow beyond the advertised maximum mutable share size."""
    with pytest.raises(NoSpace):
        rtw(server, {0: Vectors(new_length=MAX_MUTABLE_SHARE_SIZE + 1)})
    assert server.list_mutable(SI) == frozenset()


def test_mutable_and_immutable_do_not_mix(server: StorageServer) -> None:
    """A storage index holds either immutable shares or a mutable slot."""
    rtw(server, {0: write(0, b"m")})
    with pytest.raises(InvalidRequest):
        server.allocate_buckets(SI, frozenset({1}), 4, UPLOAD, RENEW, CANCEL)
    with pytest.raises(NoSuchShare):
        server.read_immutable(SI, 0, 0, 1)
    rtw(server, {0: Vectors(new_length=0)})
    server.allocate_buckets(SI, frozenset({1}), 1, UPLOAD, RENEW, CANCEL)
    with pytest.raises(InvalidRequest):
        rtw(server, {0: write(0, b"m")})
    server.write_immutable(SI, 1, UPLOAD, 0, b"i")
    with pytest.raises(InvalidRequest):
        rtw(server, {0: write(0, b"m")})
    assert server.list_mutable(SI) == frozenset()


def test_corruption_advice(server: StorageServer) -> None:
    """Mutable corruption advice is recorded; unknown shares are NoSuchShare."""
    rtw(server, {0: write(0, b"abc")})
    server.advise_corrupt_mutable(SI, 0, "signature invalid")
    assert [r.reason for r in server.corruption_reports] == ["signature invalid"]
    with pytest.raises(NoSuchShare):
        server.advise_corrupt_mutable(SI, 1, "x")
    assert server.read_mutable(SI, 0, 0, 3) == b"abc"


# -- a random sequence of operations compared with a simple model ------------------------

offsets = st.integers(0, 40)
share_numbers = st.integers(0, 3)


@st.composite
def operation(draw: st.DrawFn, model: dict[int, bytes]) -> dict[int, Vectors]:
    """Random vectors; tests are drawn to match the model's data about half the time."""
    result = {}
    for n in draw(st.sets(share_numbers, max_size=3)):
        tests = []
        for _ in range(draw(st.integers(0, 2))):
            offset, size = draw(offsets), draw(st.integers(0, 10))
            actual = model.get(n, b"")[offset : offset + size]
            tests.append(Check(offset, size, draw(st.sampled_from([actual, actual + b"!"]))))
        writes = draw(st.lists(st.builds(WriteVector, offsets, st.binary(max_size=12)), max_size=3))
        new_length = draw(st.one_of(st.none(), st.none(), st.integers(0, 50)))
        result[n] = Vectors(tuple(tests), tuple(writes), new_length)
    return result


def apply_model(model: dict[int, bytes], vectors: dict[int, Vectors]) -> bool:
    """What read-test-write should do, written as plainly as possible."""
    for n, v in vectors.items():
        for t in v.test:
            if model.get(n, b"")[t.offset : t.offset + t.size] != t.specimen:
                return False
    for n, v in vectors.items():
        share = bytearray(model.get(n, b""))
        for w in v.write:
            share.extend(bytes(max(0, w.offset - len(share))))
            share[w.offset : w.offset + len(w.data)] = w.data
        if v.new_length is not None:
            share = share[: v.new_length] + bytes(max(0, v.new_length - len(share)))
        if v.new_length == 0:
            model.pop(n, None)
        else:
            model[n] = bytes(share)
    return True


@pytest.mark.parametrize("kind", ["memory", "disk"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), steps=st.integers(1, 8))
def test_matches_model(kind: str, data: st.DataObject, steps: int) -> None:
    """Random read-test-write sequences behave like the simple model."""
    for backend in fresh_backend(kind):
        server = StorageServer(backend, Clock())
        model: dict[int, bytes] = {}
        for _ in range(steps):
            vectors = data.draw(operation(model))
            reads = (ReadVector(0, 100), ReadVector(3, 5))
            before = {n: [d[:100], d[3:8]] for n, d in sorted(model.items())}
            result = rtw(server, vectors, reads)
            assert result.reads == before
            assert result.success == apply_model(model, vectors)
            assert server.list_mutable(SI) == frozenset(model)
            for n, expected in model.items():
                assert server.read_mutable(SI, n, 0, 1000) == expected
