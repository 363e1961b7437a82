"""Errors of the filesystem layer, each meaning one thing a client can be told.

Frontends map these to their wire codes in one place (the SFTP adapter maps
them to SSH_FX_* status codes). Messages are for the user and never contain a
capability or any other secret.
"""

from __future__ import annotations


class FSError(Exception):
    """Base of filesystem errors; the message is shown to the client."""


class NoSuchFile(FSError):
    """The path (or a directory on the way to it) does not exist."""


class PermissionDenied(FSError):
    """Read-only account, read-only capability, or a no-write entry."""


class FileExists(FSError):
    """The target name is taken (exclusive create, mkdir, rename without overwrite)."""


class NotADirectory(FSError):
    """A path component that should be a directory is a file."""


class IsADirectory(FSError):
    """A file operation on a directory."""


class SymlinkLoop(FSError):
    """Too many symbolic links were followed resolving a path (a loop, most likely)."""


class DirectoryNotEmpty(FSError):
    """rmdir of a directory that still has entries."""


class InvalidName(FSError):
    """A name that is not valid UTF-8, too long, or otherwise unusable."""


class InvalidArgument(FSError):
    """A request that cannot apply to its target (readlink of a file, a move into itself)."""


class NoSpace(FSError):
    """The staging quota or the gateway's disk is full."""


class FileTooLarge(FSError):
    """A write or truncate past the largest file the gateway can stage."""


class NotSupported(FSError):
    """An operation this filesystem cannot honour (e.g. hard links)."""


class GridUnavailable(FSError):
    """The grid could not be reached or could not serve the object right now."""
