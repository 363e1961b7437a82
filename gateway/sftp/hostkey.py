"""The gateway's SSH host key: an Ed25519 key in OpenSSH format, optionally passphrase-protected."""

from __future__ import annotations

import os
import stat
import tempfile
from contextlib import suppress
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.conch.ssh import keys
from twisted.conch.ssh.keys import Key


class HostKeyError(Exception):
    """The host key cannot be loaded or written; ``str()`` is a message for the user."""


def _passphrase_bytes(passphrase: str | bytes | None) -> bytes | None:
    return passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase


def load_host_key(path: str | os.PathLike[str], passphrase: str | bytes | None = None) -> Key:
    """Load an Ed25519 private host key in OpenSSH format, decrypting it if needed.

    Like sshd, refuse a key file that others may read.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as e:
        raise HostKeyError(f"cannot read host key {path}: {e.strerror}") from None
    if stat.S_IMODE(mode) & 0o077:
        raise HostKeyError(
            f"host key {path} is accessible by others (mode {stat.S_IMODE(mode):o}); chmod 600 it"
        )
    try:
        key = Key.fromString(data, passphrase=_passphrase_bytes(passphrase))
    except keys.EncryptedKeyError:
        raise HostKeyError(f"host key {path} is encrypted: a passphrase is needed") from None
    except (keys.BadKeyError, ValueError) as e:
        reason = "wrong passphrase or damaged key" if passphrase else str(e)
        raise HostKeyError(f"cannot load host key {path}: {reason}") from None
    if key.isPublic() or key.type() != "Ed25519":
        raise HostKeyError(f"host key {path} is not an Ed25519 private key")
    return key


def _write_new_file(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """Write ``data`` durably to ``path`` (temp file, fsync, link or rename, dir fsync)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists: never clobber a host key
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _new_key(passphrase: str | bytes | None) -> tuple[bytes, bytes]:
    """A new Ed25519 key: (private key in OpenSSH format, ``authorized_keys``-style line)."""
    private = Ed25519PrivateKey.generate()
    secret = _passphrase_bytes(passphrase)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(secret) if secret else serialization.NoEncryption()
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return pem, public + b"\n"


def generate_host_key(
    path: str | os.PathLike[str], *, passphrase: str | bytes | None = None
) -> None:
    """Create a new Ed25519 host key at ``path`` (mode 0600) and ``path.pub`` beside it.

    Refuses to replace an existing key. With ``passphrase``, the private key
    is encrypted (OpenSSH bcrypt-pbkdf + AES-256).
    """
    path = Path(path)
    pem, public = _new_key(passphrase)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_new_file(path, pem, 0o600, replace=False)
        _write_new_file(path.with_name(path.name + ".pub"), public, 0o644, replace=True)
    except FileExistsError:
        raise HostKeyError(f"host key {path} already exists") from None
    except OSError as e:
        raise HostKeyError(f"cannot write host key {path}: {e.strerror}") from None


def replace_host_key(path: str | os.PathLike[str], *, passphrase: str | bytes | None = None) -> Key:
    """Replace the host key at ``path`` (and ``path.pub``) by a new one; return its public key.

    The old key is gone once this returns (each file is replaced atomically and
    durably). With ``passphrase`` the new key is encrypted, as the old one was.
    """
    path = Path(path)
    pem, public = _new_key(passphrase)
    try:
        _write_new_file(path, pem, 0o600, replace=True)
        _write_new_file(path.with_name(path.name + ".pub"), public, 0o644, replace=True)
    except OSError as e:
        raise HostKeyError(f"cannot write host key {path}: {e.strerror}") from None
    return Key.fromString(public)


def fingerprint(key: Key) -> str:
    """A host key's SHA256 fingerprint as OpenSSH prints it (``SHA256:…``, no padding)."""
    digest = key.fingerprint(keys.FingerprintFormats.SHA256_BASE64)
    return f"SHA256:{digest.rstrip('=')}"
