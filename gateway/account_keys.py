"""Accounts' SSH keys: one OpenSSH ``authorized_keys`` line, parsed and checked.

Key types: Ed25519, ECDSA, RSA of at least :data:`MIN_RSA_BITS` bits and the
FIDO ``sk-`` variants. The only options accepted are the restrictions an
SFTP-only server applies anyway; a line with any other option is refused rather
than silently not enforced (see :mod:`gateway.accounts` for the file format).
"""

from __future__ import annotations

from collections.abc import Iterator

from attrs import field, frozen
from twisted.conch.ssh.keys import BadKeyError, FingerprintFormats, Key

from gateway.account_errors import InvalidSSHKey

__all__ = ["MIN_RSA_BITS", "AuthorizedKey", "key_fingerprint"]

MIN_RSA_BITS = 2048

_SAFE_OPTIONS = frozenset(
    {
        "restrict",
        "no-pty",
        "no-port-forwarding",
        "no-agent-forwarding",
        "no-x11-forwarding",
        "no-user-rc",
    }
)
_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)


def _split_options(line: str) -> tuple[str, str]:
    """Split an authorized_keys line into (options, rest), honouring double quotes."""
    in_quotes = False
    for i, c in enumerate(line):
        if c == '"':
            in_quotes = not in_quotes
        elif c in " \t" and not in_quotes:
            return line[:i], line[i:].strip()
    raise InvalidSSHKey("authorized_keys line has options but no key")


def _option_names(options: str) -> Iterator[str]:
    in_quotes = False
    start = 0
    for i, c in enumerate(options + ","):
        if c == '"':
            in_quotes = not in_quotes
        elif c == "," and not in_quotes:
            yield options[start:i].split("=", 1)[0].strip().lower()
            start = i + 1


@frozen
class AuthorizedKey:
    """One OpenSSH ``authorized_keys`` line: options, public key and comment."""

    options: str
    key_type: str
    blob: bytes = field(repr=False)
    comment: str

    @classmethod
    def parse(cls, line: str) -> AuthorizedKey:
        """Parse one line; raise `InvalidSSHKey` with a readable reason."""
        line = line.strip()
        if not line or line.startswith("#"):
            raise InvalidSSHKey("empty authorized_keys line")
        options = ""
        if line.split(None, 1)[0] not in _KEY_TYPES:
            options, line = _split_options(line)
            unsupported = sorted(set(_option_names(options)) - _SAFE_OPTIONS)
            if unsupported:
                raise InvalidSSHKey(
                    f"authorized_keys option {unsupported[0]!r} is not supported"
                    " (only restrict, no-pty, no-port-forwarding, no-agent-forwarding,"
                    " no-X11-forwarding and no-user-rc are accepted)"
                )
        parts = line.split(None, 2)
        if len(parts) < 2 or parts[0] not in _KEY_TYPES:
            kind = parts[0] if parts else ""
            raise InvalidSSHKey(f"unsupported or missing SSH key type {kind[:40]!r}")
        try:
            key = Key.fromString(" ".join(parts[:2]).encode("ascii"))
        except (BadKeyError, ValueError, UnicodeEncodeError) as e:
            raise InvalidSSHKey(f"cannot parse {parts[0]} public key: {e}") from None
        if not key.isPublic() or key.sshType().decode("ascii") != parts[0]:
            raise InvalidSSHKey(f"the key data does not match its type {parts[0]!r}")
        if key.type() == "RSA" and key.size() < MIN_RSA_BITS:
            raise InvalidSSHKey(f"RSA keys must have at least {MIN_RSA_BITS} bits")
        return cls(
            options=options,
            key_type=parts[0],
            blob=key.blob(),
            comment=parts[2] if len(parts) > 2 else "",
        )

    def public_key(self) -> Key:
        """The key as a Conch `Key`."""
        return Key.fromString(self.blob)

    @property
    def fingerprint(self) -> str:
        """The key's SHA256 fingerprint as OpenSSH prints it."""
        return key_fingerprint(self.public_key())

    def to_line(self) -> str:
        """The ``authorized_keys`` line this was parsed from (normalized whitespace)."""
        key_part = self.public_key().toString("openssh").decode("ascii")
        return " ".join(p for p in (self.options, key_part, self.comment) if p)


def key_fingerprint(key: Key) -> str:
    """A key's SHA256 fingerprint as OpenSSH prints it (``SHA256:`` and unpadded base64)."""
    fp = key.fingerprint(FingerprintFormats.SHA256_BASE64)
    return f"SHA256:{fp.rstrip('=')}"
