"""The object layer's exceptions: one hierarchy, messages written for a user to read.

Messages never contain secrets: no keys, no capability strings, no lease or
write-enabler secrets. Storage indexes (which are public) may appear.
"""

from __future__ import annotations


class ObjectError(Exception):
    """Base of every error the object layer raises."""


class BadCapability(ObjectError, ValueError):
    """A string is not a capability this gateway understands, or it is damaged."""


class CorruptShare(ObjectError):
    """A share's bytes do not match the hashes its capability commits to."""


class CorruptObject(ObjectError):
    """An object decoded from verified shares is still inconsistent (a bug or a forged cap)."""


class NotEnoughShares(ObjectError):
    """Too few intact shares could be found on the grid to rebuild the object."""


class SharesKeptChanging(NotEnoughShares):
    """A mutable object's shares were replaced by other writers during every attempt to read it.

    Not a lack of shares but contention: trying again after a pause can succeed.
    """


class UploadUnhappy(ObjectError):
    """Shares could not be placed on enough distinct servers (servers-of-happiness not met)."""


class UncoordinatedWriteError(ObjectError):
    """Another writer changed a mutable object between our read and our write."""


class NotWritable(ObjectError):
    """A write was attempted through a read-only capability."""
