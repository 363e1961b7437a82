"""Paths as the filesystem layer sees them: NFC-normalized components under the account root.

``'.'`` and ``'..'`` are resolved textually and never climb above the root,
so no path a client sends can name anything outside its account. Names are
NFC-normalized UTF-8, at most 255 bytes, with no NUL.
"""

from __future__ import annotations

import functools
import unicodedata

from gateway.fs.errors import InvalidName

MAX_NAME_BYTES = 255

Path = tuple[str, ...]


def check_name(name: str) -> str:
    """An NFC-normalized, valid entry name, or InvalidName saying what is wrong."""
    name = unicodedata.normalize("NFC", name)
    if not name or name in (".", ".."):
        raise InvalidName(f"{name!r} cannot be used as a file name")
    if "/" in name or "\0" in name:
        raise InvalidName("a file name cannot contain '/' or NUL")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise InvalidName(f"file name longer than {MAX_NAME_BYTES} bytes")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidName("file name is not valid Unicode") from None
    return name


@functools.lru_cache(maxsize=4096)
def split(path: str) -> Path:
    """The components of ``path`` relative to the account root, '.' and '..' resolved.

    Relative paths are taken from the root (the session's working directory). The paths
    split last are remembered: clients ask about the same few paths again and again (a
    STAT, then an OPEN; sshfs's getattr before every operation).
    """
    parts: list[str] = []
    for component in path.split("/"):
        if component in ("", "."):
            continue
        if component == "..":
            if parts:
                parts.pop()
            continue
        parts.append(check_name(component))
    return tuple(parts)


def join(parts: Path) -> str:
    """The absolute text form of a path."""
    return "/" + "/".join(parts)


def parent_and_name(parts: Path) -> tuple[Path, str]:
    """Split off the last component; the root has none (InvalidName)."""
    if not parts:
        raise InvalidName("the root directory has no name")
    return parts[:-1], parts[-1]
