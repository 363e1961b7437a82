"""Checks of request arguments; each raises InvalidRequest with a message naming what is wrong.

Messages describe the argument, never its value when it is a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from storage.errors import InvalidRequest
from storage.interfaces import ReadVector, TestWriteVectors

STORAGE_INDEX_LENGTH = 16
SECRET_LENGTH = 32
MAX_UPLOAD_SECRET_LENGTH = 64
MAX_SHARE_NUMBER = 255


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def storage_index(value: Any) -> None:
    """A storage index is exactly 16 bytes."""
    if not isinstance(value, bytes) or len(value) != STORAGE_INDEX_LENGTH:
        raise InvalidRequest(f"a storage index must be exactly {STORAGE_INDEX_LENGTH} bytes")


def share_number(value: Any) -> None:
    """A share number is an integer 0..255."""
    if not _is_int(value) or not 0 <= value <= MAX_SHARE_NUMBER:
        raise InvalidRequest(f"share numbers must be integers from 0 to {MAX_SHARE_NUMBER}")


def size(value: Any, what: str, minimum: int = 0) -> None:
    """An offset, length or size is an integer of at least ``minimum``."""
    if not _is_int(value) or value < minimum:
        raise InvalidRequest(f"the {what} must be an integer of at least {minimum}")


def data(value: Any) -> None:
    """Share data are bytes."""
    if not isinstance(value, bytes):
        raise InvalidRequest("share data must be bytes")


def secret(value: Any, what: str) -> None:
    """Lease secrets and write enablers are exactly 32 bytes."""
    if not isinstance(value, bytes) or len(value) != SECRET_LENGTH:
        raise InvalidRequest(f"the {what} must be exactly {SECRET_LENGTH} bytes")


def upload_secret(value: Any) -> None:
    """Upload secrets are opaque, 1 to 64 bytes."""
    if not isinstance(value, bytes) or not 1 <= len(value) <= MAX_UPLOAD_SECRET_LENGTH:
        raise InvalidRequest(f"the upload secret must be 1 to {MAX_UPLOAD_SECRET_LENGTH} bytes")


def test_write_vectors(value: Mapping[int, TestWriteVectors]) -> None:
    """Every share number, test, write and new length of a read-test-write is well formed."""
    if not isinstance(value, Mapping):
        raise InvalidRequest("test-and-write vectors must map share numbers to vectors")
    for number, vectors in value.items():
        share_number(number)
        if not isinstance(vectors, TestWriteVectors):
            raise InvalidRequest(f"the vectors of share {number} are malformed")
        for test in vectors.test:
            size(test.offset, "test vector offset")
            size(test.size, "test vector size")
            data(test.specimen)
        for write in vectors.write:
            size(write.offset, "write vector offset")
            data(write.data)
        if vectors.new_length is not None:
            size(vectors.new_length, "new length")


def read_vector(value: tuple[ReadVector, ...]) -> None:
    """Every read vector has a non-negative offset and size."""
    for vector in value:
        if not isinstance(vector, ReadVector):
            raise InvalidRequest("read vectors are malformed")
        size(vector.offset, "read vector offset")
        size(vector.size, "read vector size")
