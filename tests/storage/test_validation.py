"""Malformed requests are InvalidRequest with a clear message that never repeats a secret."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from storage.errors import InvalidRequest, NotAuthorized, StorageError
from storage.interfaces import ReadVector, WriteVector
from storage.interfaces import TestVector as Check
from storage.interfaces import TestWriteVectors as Vectors
from storage.server import StorageServer
from tests.storage.values import CANCEL, RENEW, SI, UPLOAD, UPLOAD2, WE, WE2

Call = Callable[[StorageServer], Any]

BAD_CALLS: dict[str, tuple[Call, str]] = {
    "short storage index": (
        lambda s: s.list_immutable(b"\x01" * 15),
        "storage index must be exactly 16 bytes",
    ),
    "text storage index": (
        lambda s: s.list_mutable("a" * 16),
        "storage index must be exactly 16 bytes",
    ),
    "share number 256": (
        lambda s: s.allocate_buckets(SI, frozenset({256}), 1, UPLOAD, RENEW, CANCEL),
        "share numbers must be integers from 0 to 255",
    ),
    "negative share number": (
        lambda s: s.read_immutable(SI, -1, 0, 1),
        "share numbers must be integers from 0 to 255",
    ),
    "zero allocated size": (
        lambda s: s.allocate_buckets(SI, frozenset({0}), 0, UPLOAD, RENEW, CANCEL),
        "allocated size must be an integer of at least 1",
    ),
    "negative offset": (
        lambda s: s.write_immutable(SI, 0, UPLOAD, -1, b"x"),
        "offset must be an integer of at least 0",
    ),
    "negative length": (
        lambda s: s.read_mutable(SI, 0, 0, -5),
        "length must be an integer of at least 0",
    ),
    "short lease secret": (
        lambda s: s.add_or_renew_lease(SI, b"secret-renew", CANCEL),
        "lease renew secret must be exactly 32 bytes",
    ),
    "empty upload secret": (
        lambda s: s.abort_immutable(SI, 0, b""),
        "upload secret must be 1 to 64 bytes",
    ),
    "negative write vector offset": (
        lambda s: s.read_test_write(
            SI, WE, RENEW, CANCEL, {0: Vectors(write=(WriteVector(-1, b"x"),))}, ()
        ),
        "write vector offset must be an integer of at least 0",
    ),
    "negative test size": (
        lambda s: s.read_test_write(SI, WE, RENEW, CANCEL, {0: Vectors((Check(0, -1, b""),))}, ()),
        "test vector size must be an integer of at least 0",
    ),
    "negative new length": (
        lambda s: s.read_test_write(SI, WE, RENEW, CANCEL, {0: Vectors(new_length=-1)}, ()),
        "new length must be an integer of at least 0",
    ),
    "bad mutable share number": (
        lambda s: s.read_test_write(SI, WE, RENEW, CANCEL, {300: Vectors()}, ()),
        "share numbers must be integers from 0 to 255",
    ),
    "negative read vector": (
        lambda s: s.read_test_write(SI, WE, RENEW, CANCEL, {}, (ReadVector(-1, 1),)),
        "read vector offset must be an integer of at least 0",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_invalid_requests(server: StorageServer, case: str) -> None:
    """Each malformed call raises InvalidRequest saying what is wrong."""
    call, message = BAD_CALLS[case]
    with pytest.raises(InvalidRequest, match=message):
        call(server)


def test_messages_never_contain_secrets(server: StorageServer) -> None:
    """Errors caused by wrong secrets do not repeat any secret."""
    server.allocate_buckets(SI, frozenset({0}), 4, UPLOAD, RENEW, CANCEL)
    slot = b"\x09" * 16
    server.read_test_write(slot, WE, RENEW, CANCEL, {0: Vectors()}, ())
    errors: list[StorageError] = []
    for call in (
        lambda: server.write_immutable(SI, 0, UPLOAD2, 0, b"x"),
        lambda: server.abort_immutable(SI, 0, UPLOAD2),
        lambda: server.read_test_write(slot, WE2, RENEW, CANCEL, {}, ()),
    ):
        with pytest.raises(StorageError) as info:
            call()
        errors.append(info.value)
    assert isinstance(errors[2], NotAuthorized)
    for error in errors:
        text = str(error).encode()
        for secret in (UPLOAD, UPLOAD2, WE, WE2, RENEW, CANCEL):
            assert secret not in text
