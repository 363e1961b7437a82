"""``gateway account add|remove|list|passwd``: manage a node's SFTP accounts.

Each command is a function of the parsed arguments and the streams it may use,
returning the exit status; errors are printed as one ``gateway: <message>``
line on stderr with status 1. `add_account_parsers` declares the arguments
these functions expect.
"""

from __future__ import annotations

import argparse
import getpass as _getpass
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from gateway.accounts import (
    AccountError,
    AccountExists,
    AccountStore,
    AuthorizedKey,
    InvalidPassword,
    InvalidSSHKey,
    accounts_path,
    validate_name,
)

__all__ = [
    "account_add",
    "account_list",
    "account_passwd",
    "account_remove",
    "add_account_parsers",
]

GetPass = Callable[[str], str]


class _Usage(Exception):
    """A command-line mistake, reported like an account error."""


def add_account_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``add``, ``remove``, ``list`` and ``passwd`` under an ``account`` command."""

    def common(p: argparse.ArgumentParser, with_name: bool = True) -> None:
        p.add_argument("node_dir", metavar="DIR", help="the node directory")
        if with_name:
            p.add_argument("name", metavar="NAME", help="the account name")

    add = subparsers.add_parser("add", help="create an account with a new root directory")
    common(add)
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (one line)"
    )
    add.add_argument(
        "--ssh-key",
        metavar="FILE",
        action="append",
        default=[],
        help="authorize the public keys in FILE (authorized_keys format; repeatable)",
    )
    add.add_argument("--read-only", action="store_true", help="the account may change nothing")
    add.add_argument(
        "--rename-overwrites",
        action="store_true",
        help="plain SFTP rename replaces an existing file (for sshfs/WebEx)",
    )
    common(subparsers.add_parser("remove", help="delete an account (not its files)"))
    common(subparsers.add_parser("list", help="list accounts and their options"), with_name=False)
    passwd = subparsers.add_parser("passwd", help="set an account's password")
    common(passwd)
    passwd.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (one line)"
    )


def _store(args: argparse.Namespace) -> AccountStore:
    return AccountStore(accounts_path(args.node_dir))


def _fail(stderr: TextIO, message: str) -> int:
    stderr.write(f"gateway: {message}\n")
    stderr.flush()
    return 1


def _read_password(args: argparse.Namespace, stdin: TextIO, getpass: GetPass) -> str:
    """The new password from stdin (--password-stdin) or typed twice at a terminal."""
    if args.password_stdin:
        line = stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
        if not password:
            raise InvalidPassword("no password on stdin")
        return password
    if not stdin.isatty():
        raise _Usage("stdin is not a terminal: give the password with --password-stdin")
    password = getpass("New password: ")
    if not password:
        raise InvalidPassword("the password must not be empty")
    if getpass("Retype new password: ") != password:
        raise InvalidPassword("the passwords do not match")
    return password


def _read_keys(files: list[str]) -> list[AuthorizedKey]:
    keys: list[AuthorizedKey] = []
    for name in files:
        try:
            text = Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            raise InvalidSSHKey(f"cannot read SSH key file {name}: {reason}") from None
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                try:
                    keys.append(AuthorizedKey.parse(line))
                except InvalidSSHKey as e:
                    raise InvalidSSHKey(f"{name}, line {number}: {e}") from None
        if not keys:
            raise InvalidSSHKey(f"no public key in {name}")
    return keys


def account_add(
    args: argparse.Namespace,
    *,
    stdin: TextIO,
    stdout: TextIO,
    stderr: TextIO,
    make_root_cap: Callable[[], str],
    getpass: GetPass = _getpass.getpass,
) -> int:
    """Create an account whose root is a new directory made by ``make_root_cap``.

    Asks for a password unless SSH keys are given without ``--password-stdin``.
    """
    try:
        validate_name(args.name)
        keys = _read_keys(args.ssh_key)
        password = None
        if args.password_stdin or not keys:
            password = _read_password(args, stdin, getpass)
        store = _store(args)
        if args.name in store:
            raise AccountExists(args.name)
        store.add(
            args.name,
            root_cap=make_root_cap(),
            password=password,
            ssh_keys=keys,
            read_only=args.read_only,
            rename_overwrites=args.rename_overwrites,
        )
    except (AccountError, _Usage) as e:
        return _fail(stderr, str(e))
    stdout.write(f"account {args.name!r} created\n")
    return 0


def account_remove(
    args: argparse.Namespace, *, stdin: TextIO, stdout: TextIO, stderr: TextIO
) -> int:
    """Delete an account; its files stay in the grid."""
    try:
        _store(args).remove(args.name)
    except AccountError as e:
        return _fail(stderr, str(e))
    stdout.write(f"account {args.name!r} removed\n")
    return 0


def account_passwd(
    args: argparse.Namespace,
    *,
    stdin: TextIO,
    stdout: TextIO,
    stderr: TextIO,
    getpass: GetPass = _getpass.getpass,
) -> int:
    """Set an account's password."""
    try:
        store = _store(args)
        store.get(args.name)  # fail before asking for a password
        store.set_password(args.name, _read_password(args, stdin, getpass))
    except (AccountError, _Usage) as e:
        return _fail(stderr, str(e))
    stdout.write(f"password of {args.name!r} changed\n")
    return 0


def account_list(args: argparse.Namespace, *, stdout: TextIO, stderr: TextIO) -> int:
    """Print one line per account: name, login methods and options (no secrets)."""
    try:
        summaries = _store(args).list()
    except AccountError as e:
        return _fail(stderr, str(e))
    for s in summaries:
        methods = (["password"] if s.has_password else []) + [
            f"key {fp}" for fp in s.key_fingerprints
        ]
        flags = (("read-only", s.read_only), ("rename-overwrites", s.rename_overwrites))
        options = [flag for flag, on in flags if on]
        line = f"{s.name}\t{', '.join(methods)}"
        stdout.write(f"{line}\t{' '.join(options)}".rstrip() + "\n")
    return 0
