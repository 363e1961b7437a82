"""Errors the storage core raises; the HTTP adapter maps each to one status code.

Messages are written for an operator or a client developer to read. They never
contain secrets (lease, upload or write-enabler secrets, swissnums).
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error the storage core reports to a caller."""


class InvalidRequest(StorageError):
    """The request is malformed (bad storage index, share number, range, vector). HTTP 400."""


class NotAuthorized(StorageError):
    """A secret (upload secret, write enabler) does not match. HTTP 401."""


class NoSuchShare(StorageError):
    """The storage index or share is not (or not yet completely) stored here. HTTP 404."""


class NoSuchUpload(StorageError):
    """There is no incomplete upload matching the share and upload secret. HTTP 405."""


class ConflictingWrite(StorageError):
    """A write overlaps already-written share data with different bytes. HTTP 409."""


class RangeNotSatisfiable(StorageError):
    """A write's range lies outside the allocated share size. HTTP 416."""


class NoSpace(StorageError):
    """An allocation would cross the reserved space or the maximum share size. HTTP 507."""
