"""``gateway account …`` wiring, and the first account of the default node."""

from __future__ import annotations

import argparse
import secrets
import shlex
import sys
from typing import IO, TextIO, cast

from gateway.accounts import AccountStore, accounts_path
from gateway.cli import account_commands
from gateway.cli.program import program_name
from gateway.nodedir import NodeDir
from gateway.objects.caps import DirectoryWriteCap, MutableWriteCap


def new_root_cap() -> str:
    """A fresh directory capability; the running node creates the directory at first use."""
    return DirectoryWriteCap(MutableWriteCap.generate()).to_string()


def create_first_account(nd: NodeDir, user: str) -> list[str]:
    """Add one password account with a new root; return lines showing the password once."""
    password = secrets.token_urlsafe(12)
    AccountStore(accounts_path(nd.root)).add(user, root_cap=new_root_cap(), password=password)
    return [
        f"Created SFTP account {user!r}. Its password, shown only this once "
        "(the node keeps only an Argon2id hash):",
        f"    {password}",
        f"Change it with: {program_name()} account passwd {shlex.quote(str(nd.root))} {user}",
    ]


def cmd_account(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Run ``gateway account add|remove|list|passwd``."""
    stdout, stderr = cast(TextIO, out), cast(TextIO, err)
    if args.account_command == "add":
        return account_commands.account_add(
            args, stdin=sys.stdin, stdout=stdout, stderr=stderr, make_root_cap=new_root_cap
        )
    if args.account_command == "remove":
        return account_commands.account_remove(args, stdin=sys.stdin, stdout=stdout, stderr=stderr)
    if args.account_command == "passwd":
        return account_commands.account_passwd(args, stdin=sys.stdin, stdout=stdout, stderr=stderr)
    return account_commands.account_list(args, stdout=stdout, stderr=stderr)
