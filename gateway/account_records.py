"""One account as stored: its validated fields, its JSON form, and a secret-free summary.

An account's name, root capability, password hash, SSH keys and options, each
checked as :mod:`gateway.accounts` describes the file format; the root
capability and the password hash are secrets kept out of every ``repr``.
"""

from __future__ import annotations

import re
from typing import Any

from attrs import field, frozen

from gateway.account_errors import (
    AccountError,
    AccountFileError,
    InvalidAccount,
    InvalidAccountName,
)
from gateway.account_keys import AuthorizedKey

__all__ = ["Account", "AccountSummary", "validate_name", "validate_root_cap"]

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid account name, else raise `InvalidAccountName`."""
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None:
        raise InvalidAccountName(
            f"invalid account name {name!r}: use 1 to 64 of the characters A-Z a-z 0-9 . _ -,"
            " not starting with '-' or '.'"
        )
    return name


def validate_root_cap(root_cap: str) -> str:
    """Return ``root_cap`` if it can be an account's root capability, else raise
    `InvalidAccount` (whose message never echoes it)."""
    if (
        not isinstance(root_cap, str)
        or not root_cap
        or len(root_cap) > 4096
        or any(c.isspace() or not c.isprintable() for c in root_cap)
    ):
        # Never echo the value: it is a secret.
        raise InvalidAccount("the root capability must be a non-empty printable string")
    return root_cap


@frozen
class Account:
    """One account; ``root_cap`` and ``password_hash`` are secrets kept out of ``repr``."""

    name: str
    root_cap: str = field(repr=False)
    password_hash: bytes | None = field(default=None, repr=False)
    ssh_keys: tuple[AuthorizedKey, ...] = ()
    read_only: bool = False
    rename_overwrites: bool = False

    @property
    def has_password(self) -> bool:
        """Whether the account can log in with a password."""
        return self.password_hash is not None

    def summary(self) -> AccountSummary:
        """What may be shown about the account without revealing secrets."""
        return AccountSummary(
            name=self.name,
            has_password=self.has_password,
            key_fingerprints=tuple(k.fingerprint for k in self.ssh_keys),
            read_only=self.read_only,
            rename_overwrites=self.rename_overwrites,
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored for this account (without its name)."""
        return {
            "password": None if self.password_hash is None else self.password_hash.decode("ascii"),
            "ssh_keys": [k.to_line() for k in self.ssh_keys],
            "root_cap": self.root_cap,
            "read_only": self.read_only,
            "rename_overwrites": self.rename_overwrites,
        }

    @classmethod
    def from_json(cls, name: str, obj: Any) -> Account:
        """Parse one stored account; raise `AccountError` on anything malformed."""
        validate_name(name)
        if not isinstance(obj, dict):
            raise AccountFileError(f"account {name!r} is not a JSON object")
        password = obj.get("password")
        keys = obj.get("ssh_keys", [])
        read_only = obj.get("read_only", False)
        rename_overwrites = obj.get("rename_overwrites", False)
        if password is not None and not (
            isinstance(password, str) and password.startswith("$argon2id$")
        ):
            raise AccountFileError(f"account {name!r}: password is not an Argon2id hash")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise AccountFileError(f"account {name!r}: ssh_keys is not a list of strings")
        if not isinstance(read_only, bool) or not isinstance(rename_overwrites, bool):
            raise AccountFileError(f"account {name!r}: options must be true or false")
        try:
            parsed_keys = tuple(AuthorizedKey.parse(k) for k in keys)
            root_cap = validate_root_cap(obj.get("root_cap"))  # type: ignore[arg-type]
        except AccountError as e:
            raise AccountFileError(f"account {name!r}: {e}") from None
        account = cls(
            name=name,
            root_cap=root_cap,
            password_hash=None if password is None else password.encode("ascii"),
            ssh_keys=parsed_keys,
            read_only=read_only,
            rename_overwrites=rename_overwrites,
        )
        if not account.has_password and not account.ssh_keys:
            raise AccountFileError(f"account {name!r} has neither a password nor an SSH key")
        return account


@frozen
class AccountSummary:
    """An account's name and options, without secrets (for listings)."""

    name: str
    has_password: bool
    key_fingerprints: tuple[str, ...]
    read_only: bool
    rename_overwrites: bool
