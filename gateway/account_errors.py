"""The errors of the account store: one hierarchy under :class:`AccountError`.

Every message is meant for the user (``str()`` of the error); none reveals a
password or a root capability.
"""

from __future__ import annotations

__all__ = [
    "AccountError",
    "AccountExists",
    "AccountFileError",
    "InvalidAccount",
    "InvalidAccountName",
    "InvalidPassword",
    "InvalidSSHKey",
    "NoSuchAccount",
]


class AccountError(Exception):
    """Something about accounts went wrong; ``str()`` is a message for the user."""


class NoSuchAccount(AccountError, KeyError):
    """The named account does not exist."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no account named {name!r}")

    def __str__(self) -> str:
        return str(self.args[0])


class AccountExists(AccountError):
    """An account with that name already exists."""

    def __init__(self, name: str) -> None:
        super().__init__(f"an account named {name!r} already exists")


class InvalidAccountName(AccountError, ValueError):
    """The name is not a valid account name."""


class InvalidPassword(AccountError, ValueError):
    """The password cannot be used (empty or too long)."""


class InvalidSSHKey(AccountError, ValueError):
    """An authorized_keys line could not be parsed or is not acceptable."""


class InvalidAccount(AccountError, ValueError):
    """The account as a whole is not valid (no way to log in, bad root capability...)."""


class AccountFileError(AccountError):
    """The accounts file cannot be read, parsed or written."""
