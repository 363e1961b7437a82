"""What a CLI argument names: a path under an account's root, a path under a directory
capability, or a bare capability.

Forms (see ``docs/cli.rst``):

- ``GG:<kind>:…`` — a capability; a directory capability may be followed by
  ``/path`` inside it.
- ``ACCOUNT:/path`` (or ``ACCOUNT:path``) — a path under that account's root.
- ``/path`` or ``path`` — a path under the default account's root: the one
  given with ``--account``, else the only account there is.
"""

from __future__ import annotations

from attrs import field, frozen

from gateway.accounts import AccountError, AccountStore, validate_name
from gateway.objects.caps import (
    PREFIX,
    Capability,
    DirectoryReadCap,
    DirectoryWriteCap,
    parse,
)


class BadTarget(ValueError):
    """An argument does not name anything usable; the message says why."""


@frozen
class Target:
    """A resolved argument: a path in a tree (``root`` set), or a bare file capability."""

    root: str | None = field(repr=False)
    """Capability string of the tree's root directory (an account's root or a given dircap)."""
    path: str = "/"
    """Absolute path inside ``root``."""
    cap: Capability | None = field(default=None, repr=False)
    """A file (or verify) capability given on its own; ``root`` is then None."""
    read_only: bool = False
    label: str = "the capability"
    """How messages name the target (never the capability itself)."""

    @property
    def in_tree(self) -> bool:
        """Whether this is a path under a root directory."""
        return self.root is not None


def _is_cap(text: str) -> bool:
    return text.startswith(f"{PREFIX}:") and not text[len(PREFIX) + 1 :].startswith("/")


def resolve(text: str, accounts: AccountStore, account: str | None) -> Target:
    """Resolve one argument; raise BadTarget (or BadCapability) when it names nothing usable."""
    if not text:
        raise BadTarget("an empty argument names nothing")
    if _is_cap(text):
        cap_text, slash, rest = text.partition("/")
        cap = parse(cap_text)
        if isinstance(cap, DirectoryWriteCap | DirectoryReadCap):
            return Target(cap_text, "/" + rest, read_only=cap.read_only, label="/" + rest)
        if slash:
            raise BadTarget("a file capability has no paths under it")
        return Target(None, "/", cap=cap)
    name, colon, path = text.partition(":")
    if colon and "/" not in name:
        try:
            validate_name(name)
        except AccountError:
            raise BadTarget(f"{name!r} is not an account name (ACCOUNT:/path)") from None
        account = name
    else:
        path = text
    account = account or _only_account(accounts)
    try:
        found = accounts.get(account)
    except AccountError as e:
        raise BadTarget(str(e)) from None
    path = path if path.startswith("/") else "/" + path
    return Target(found.root_cap, path, read_only=found.read_only, label=f"{account}:{path}")


def _only_account(accounts: AccountStore) -> str:
    names = [a.name for a in accounts.list()]
    if len(names) == 1:
        return names[0]
    if not names:
        raise BadTarget("this gateway has no accounts; give a capability or add an account")
    raise BadTarget(
        f"this gateway has {len(names)} accounts; name one (--account NAME or ACCOUNT:/path)"
    )
