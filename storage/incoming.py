"""Incomplete immutable uploads: small ones held in memory, larger ones in files.

An upload of a share small enough to be completed through the redo log
(``small`` bytes, :data:`storage.disk.LOGGED_SHARE_BYTES`) never needs a file of
its own: its bytes go from the request into the log record. Creating, writing,
reading back and removing a file under ``incoming`` for it cost four opens and an
unlink, more than the log flush that makes it durable (measured on the embedded
grid: about a quarter of an fsync's storage time). So an upload starts in
memory, and moves to its file ("spills") once it grows past ``small`` bytes, or
once all uploads held in memory would pass ``memory`` bytes.

Nothing changes for a crash: an incomplete upload is lost either way (``incoming``
is emptied whenever a backend opens), and a complete share is durable before it
is acknowledged.
"""

from __future__ import annotations

import os
from pathlib import Path

from attrs import define, field

from storage.inplace import FILE_MODE
from storage.redolog import pwrite_all

MEMORY_BYTES = 16 * 1024 * 1024
"""Most bytes of incomplete uploads held in memory at once (then new bytes go to files)."""

_Key = tuple[str, int]


@define(eq=False)
class IncomingShares:
    """The incomplete uploads of one backend, by storage index (base32) and share number."""

    directory: Path
    small: int
    """Uploads up to this many bytes may stay in memory."""
    memory: int = MEMORY_BYTES
    _buffers: dict[_Key, bytearray] = field(factory=dict, init=False)
    _held: int = field(default=0, init=False)
    _files: set[_Key] = field(factory=set, init=False)
    """Uploads in files (the directory is emptied before a backend opens)."""

    @property
    def held(self) -> int:
        """Bytes held in memory now."""
        return self._held

    def path(self, key: _Key) -> Path:
        """Where an upload's file is (flat: no directory to create and remove per upload)."""
        return self.directory / f"{key[0]}.{key[1]}"

    def create(self, key: _Key) -> None:
        """Start an empty upload, replacing any leftover one."""
        self.discard(key)
        self._buffers[key] = bytearray()

    def write(self, key: _Key, offset: int, data: bytes) -> None:
        """Write bytes at an offset (in memory while the upload stays small)."""
        buffer = self._buffers.get(key)
        if buffer is not None:
            end = offset + len(data)
            grow = max(0, end - len(buffer))
            if end <= self.small and self._held + grow <= self.memory:
                if offset > len(buffer):
                    buffer.extend(bytes(offset - len(buffer)))
                buffer[offset:end] = data
                self._held += grow
                return
            self._spill(key)
        if key not in self._files:
            raise FileNotFoundError(f"no incomplete upload {key[0]}.{key[1]}")
        fd = os.open(self.path(key), os.O_WRONLY)
        try:
            pwrite_all(fd, data, offset)
        finally:
            os.close(fd)

    def read(self, key: _Key, offset: int, length: int) -> bytes:
        """Read back bytes written so far."""
        buffer = self._buffers.get(key)
        if buffer is not None:
            return bytes(buffer[offset : offset + length])
        if key not in self._files:
            raise FileNotFoundError(f"no incomplete upload {key[0]}.{key[1]}")
        fd = os.open(self.path(key), os.O_RDONLY)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def take(self, key: _Key, size: int) -> bytes:
        """The ``size`` bytes of a completed small upload (zeros past what was written);
        the upload is gone after."""
        buffer = self._buffers.pop(key, None)
        if buffer is not None:
            self._held -= len(buffer)
            data = bytes(buffer[:size])
        else:
            path = self.path(key)
            with open(path, "rb") as source:
                data = source.read(size)
            path.unlink()
            self._files.discard(key)
        return data + bytes(size - len(data))

    def hand_over(self, key: _Key) -> Path:
        """The upload's file, written out first if it was held in memory; the caller owns
        it from now on (renames it into place, or removes it)."""
        if key in self._buffers:
            self._spill(key)
        self._files.discard(key)
        return self.path(key)

    def discard(self, key: _Key) -> None:
        """Throw an upload away if it exists."""
        buffer = self._buffers.pop(key, None)
        if buffer is not None:
            self._held -= len(buffer)
        elif key in self._files:
            self._files.discard(key)
            self.path(key).unlink(missing_ok=True)

    def _spill(self, key: _Key) -> None:
        buffer = self._buffers.pop(key)
        self._held -= len(buffer)
        fd = os.open(self.path(key), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            pwrite_all(fd, bytes(buffer), 0)
        finally:
            os.close(fd)
        self._files.add(key)
