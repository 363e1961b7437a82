"""Tests for the account store (``gateway.accounts``) and the ``gateway account`` commands."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.accounts import (
    Account,
    AccountExists,
    AccountFileError,
    AccountStore,
    AuthorizedKey,
    InvalidAccount,
    InvalidAccountName,
    InvalidPassword,
    InvalidSSHKey,
    NoSuchAccount,
    accounts_path,
)
from gateway.cli.account_commands import (
    account_add,
    account_list,
    account_passwd,
    account_remove,
    add_account_parsers,
)

ROOT_CAP = "URI:DIR2:secretsecretsecret:publicpart"


def public_line(comment: str = "") -> str:
    """A fresh Ed25519 public key as an authorized_keys line."""
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    line = key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    return f"{line} {comment}".strip()


KEY_LINES = [public_line(f"user{i}@host") for i in range(4)]

names = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9._-]{0,63}\Z")
caps = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=200
)


@pytest.fixture
def store(tmp_path: Path) -> AccountStore:
    """An empty store in a temporary node directory."""
    return AccountStore(accounts_path(tmp_path))


def fresh_store(tmp_path: Path) -> AccountStore:
    """A new store object over the node directory's accounts file."""
    return AccountStore(accounts_path(tmp_path))


# --- names and formats ----------------------------------------------------------


@given(
    name=names,
    cap=caps,
    keys=st.lists(st.sampled_from(KEY_LINES), min_size=1, unique=True),
    read_only=st.booleans(),
    rename_overwrites=st.booleans(),
)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50)
def test_round_trip(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    cap: str,
    keys: list[str],
    read_only: bool,
    rename_overwrites: bool,
) -> None:
    """An added account reads back identically from a new store over the same file."""
    path = accounts_path(tmp_path_factory.mktemp("node"))
    added = AccountStore(path).add(
        name,
        root_cap=cap,
        ssh_keys=keys,
        read_only=read_only,
        rename_overwrites=rename_overwrites,
    )
    again = AccountStore(path).get(name)
    assert again == added
    assert [k.to_line() for k in again.ssh_keys] == keys
    (summary,) = AccountStore(path).list()
    assert (summary.name, summary.read_only, summary.rename_overwrites) == (
        name,
        read_only,
        rename_overwrites,
    )
    assert summary.has_password is False
    assert len(summary.key_fingerprints) == len(keys)


@given(name=st.text(max_size=80))
def test_invalid_names_are_refused(name: str) -> None:
    """Names outside the documented alphabet, empty, too long or starting with - or . fail."""
    assume(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}", name) is None)
    store = AccountStore("/nonexistent/private/accounts.json")
    with pytest.raises(InvalidAccountName, match="invalid account name"):
        store.add(name, root_cap=ROOT_CAP, ssh_keys=KEY_LINES[:1])


@pytest.mark.parametrize("name", ["-x", ".hidden", "", "a" * 65, "a b", "é", "a/b"])
def test_specific_invalid_names(store: AccountStore, name: str) -> None:
    """Typical bad names are refused with a readable message."""
    with pytest.raises(InvalidAccountName):
        store.add(name, root_cap=ROOT_CAP, ssh_keys=KEY_LINES[:1])


def test_account_needs_a_way_to_log_in(store: AccountStore) -> None:
    """An account without password and keys is refused."""
    with pytest.raises(InvalidAccount, match="password, an SSH key"):
        store.add("alice", root_cap=ROOT_CAP)


@pytest.mark.parametrize("cap", ["", "has space", "new\nline"])
def test_bad_root_cap_refused_without_echo(store: AccountStore, cap: str) -> None:
    """A malformed root capability is refused and the message does not repeat it."""
    with pytest.raises(InvalidAccount) as info:
        store.add("alice", root_cap=cap, ssh_keys=KEY_LINES[:1])
    assert not cap or cap not in str(info.value)


# --- authorized_keys lines --------------------------------------------------------


def test_authorized_key_options_and_comment_kept() -> None:
    """Accepted options and the comment survive parsing and formatting."""
    line = f"restrict,no-pty {KEY_LINES[0].split(' ')[0]} {KEY_LINES[0].split(' ')[1]} my laptop"
    key = AuthorizedKey.parse(line)
    assert key.options == "restrict,no-pty"
    assert key.comment == "my laptop"
    assert key.key_type == "ssh-ed25519"
    assert key.to_line() == line
    assert key.fingerprint.startswith("SHA256:")


@pytest.mark.parametrize(
    "options", ['from="10.0.0.0/8"', 'command="ls -l"', 'restrict,expiry-time="20300101"']
)
def test_unenforced_options_refused(options: str) -> None:
    """Options we cannot enforce are refused instead of being silently ignored."""
    with pytest.raises(InvalidSSHKey, match="is not supported"):
        AuthorizedKey.parse(f"{options} {KEY_LINES[0]}")


@pytest.mark.parametrize(
    "line",
    ["", "ssh-ed25519", "ssh-ed25519 notbase64!!", "ssh-dss AAAAB3NzaC1kc3M=", "garbage"],
)
def test_bad_key_lines_refused(line: str) -> None:
    """Garbage, unsupported types and truncated keys raise InvalidSSHKey."""
    with pytest.raises(InvalidSSHKey):
        AuthorizedKey.parse(line)


def test_short_rsa_key_refused() -> None:
    """RSA keys under 2048 bits are refused."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    line = key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    with pytest.raises(InvalidSSHKey, match="2048"):
        AuthorizedKey.parse(line)


def test_check_key(store: AccountStore) -> None:
    """check_key accepts exactly the account's keys."""
    store.add("bob", root_cap=ROOT_CAP, ssh_keys=KEY_LINES[:2])
    blobs = [AuthorizedKey.parse(line).blob for line in KEY_LINES]
    assert store.check_key("bob", blobs[0]) and store.check_key("bob", blobs[1])
    assert not store.check_key("bob", blobs[2])
    assert not store.check_key("nobody", blobs[0])


# --- passwords ----------------------------------------------------------------------


def test_passwords(store: AccountStore) -> None:
    """Right password accepted; wrong, unknown user and key-only accounts refused."""
    store.add("alice", root_cap=ROOT_CAP, password="correct horse")
    store.add("bob", root_cap=ROOT_CAP, ssh_keys=KEY_LINES[:1])
    assert store.verify_password("alice", "correct horse")
    assert store.verify_password("alice", b"correct horse")
    assert not store.verify_password("alice", "Correct horse")
    assert not store.verify_password("alice", "")
    assert not store.verify_password("alice", b"\xff\xfe")
    assert not store.verify_password("nobody", "correct horse")
    assert not store.verify_password("bob", "")
    assert not store.verify_password("alice", "x" * 5000)


def test_password_nfc(store: AccountStore) -> None:
    """Passwords are compared after NFC normalization."""
    store.add("alice", root_cap=ROOT_CAP, password="caf\u00e9")
    assert store.verify_password("alice", "cafe\u0301")


def test_set_password(store: AccountStore) -> None:
    """set_password replaces the old password."""
    store.add("alice", root_cap=ROOT_CAP, password="old")
    store.set_password("alice", "new")
    assert store.verify_password("alice", "new")
    assert not store.verify_password("alice", "old")
    with pytest.raises(NoSuchAccount):
        store.set_password("nobody", "x")
    with pytest.raises(InvalidPassword):
        store.set_password("alice", "")


def test_secrets_not_in_repr_or_file_plaintext(store: AccountStore) -> None:
    """Neither repr nor the file contain the password; the root cap is never in a repr."""
    account = store.add("alice", root_cap=ROOT_CAP, password="hunter2-password")
    for text in (repr(account), repr(store), repr(store.list()), str(account)):
        assert ROOT_CAP not in text
        assert "hunter2" not in text
        assert "argon2" not in text
    content = store.path.read_text()
    assert "hunter2" not in content
    assert json.loads(content)["accounts"]["alice"]["password"].startswith("$argon2id$")


# --- errors ---------------------------------------------------------------------------


def test_exists_and_missing(store: AccountStore) -> None:
    """Duplicate adds and unknown names raise errors with readable messages."""
    store.add("alice", root_cap=ROOT_CAP, ssh_keys=KEY_LINES[:1])
    with pytest.raises(AccountExists, match="an account named 'alice' already exists"):
        store.add("alice", root_cap=ROOT_CAP, ssh_keys=KEY_LINES[:1])
    with pytest.raises(NoSuchAccount) as info:
        store.get("bob")
    assert str(info.value) == "no account named 'bob'"
    with pytest.raises(NoSuchAccount):
        store.remove("bob")
    store.remove("alice")
    assert store.list() == []


# --- the file ---------------------------------------------------------------------------


def test_modes_and_no_leftovers(tmp_path: Path) -> None:
    """private/ is 0700, the file 0600, and no temporary file stays behind."""
    store = fresh_store(tmp_path)
    store.add("alice", root_cap=ROOT_CAP, ssh_keys=KEY_LINES[:1])
    store.add("bob", root_cap=ROOT_CAP, ssh_keys=KEY_LINES[1:2])
    private = tmp_path / "private"
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert sorted(p.name for p in private.iterdir()) == ["accounts.json", "accounts.json.lock"]


def test_failed_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the rename fails, the old file is intact and the temporary file is removed."""
    store = fresh_store(tmp_path)
    store.add("alice", root_cap=ROOT_CAP, ssh_keys=KEY_LINES[:1])
    before = store.path.read_bytes()

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(AccountFileError, match="No space left"):
        store.add("bob", root_cap=ROOT_CAP, ssh_keys=KEY_LINES[1:2])
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert [p.name for p in store.path.parent.iterdir() if p.name.endswith(".tmp")] == []
    assert [a.name for a in fresh_store(tmp_path).list()] == ["alice"]


def test_missing_file_means_no_accounts(tmp_path: Path) -> None:
    """A node without an accounts file has no accounts (and creates nothing)."""
    store = fresh_store(tmp_path)
    store.load()
    assert store.list() == []
    assert not store.verify_password("alice", "x")
    assert not (tmp_path / "private").exists()


def test_reload_after_external_change(tmp_path: Path) -> None:
    """A running store sees another process's changes without restarting."""
    running = fresh_store(tmp_path)
    running.load()
    assert "alice" not in running
    fresh_store(tmp_path).add("alice", root_cap=ROOT_CAP, ssh_keys=KEY_LINES[:1])
    assert running.get("alice").root_cap == ROOT_CAP
    assert running.reload_if_changed() is False  # unchanged: no re-read
    # A hand edit in place (same inode) is noticed too.
    doc = json.loads(running.path.read_text())
    doc["accounts"]["alice"]["read_only"] = True
    with open(running.path, "w") as f:
        f.write(json.dumps(doc, indent=4))
    assert running.get("alice").read_only is True
    fresh_store(tmp_path).remove("alice")
    with pytest.raises(NoSuchAccount):
        running.get("alice")


def test_malformed_file_fails_closed(tmp_path: Path) -> None:
    """While the file is malformed, lookups raise instead of using stale accounts."""
    running = fresh_store(tmp_path)
    running.add("alice", root_cap=ROOT_CAP, password="pw")
    running.path.write_text("{not json")
    with pytest.raises(AccountFileError, match="not valid JSON"):
        running.verify_password("alice", "pw")
    with pytest.raises(AccountFileError):  # still broken, not silently recovered
        running.get("alice")
    running.path.write_text(json.dumps({"version": 1, "accounts": {}}))
    assert running.list() == []


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"version": 2, "accounts": {}}, "unknown format"),
        ({"version": 1, "accounts": []}, "not a JSON object"),
        ({"version": 1, "accounts": {"-bad": {}}}, "invalid account name"),
        (
            {"version": 1, "accounts": {"a": {"root_cap": "x", "password": "plain"}}},
            "not an Argon2id hash",
        ),
        ({"version": 1, "accounts": {"a": {"root_cap": "x"}}}, "neither a password"),
        (
            {"version": 1, "accounts": {"a": {"root_cap": "x", "ssh_keys": ["junk"]}}},
            "account 'a'",
        ),
        (
            {"version": 1, "accounts": {"a": {"root_cap": 3, "ssh_keys": [KEY_LINES[0]]}}},
            "root capability",
        ),
    ],
)
def test_malformed_documents(tmp_path: Path, doc: Any, message: str) -> None:
    """Each kind of malformed document is reported with a useful message."""
    store = fresh_store(tmp_path)
    store.path.parent.mkdir(mode=0o700)
    store.path.write_text(json.dumps(doc))
    with pytest.raises(AccountFileError, match=message):
        store.load()


def test_account_from_json_round_trip() -> None:
    """Account.to_json and from_json are inverse."""
    account = Account(name="x", root_cap=ROOT_CAP, ssh_keys=(AuthorizedKey.parse(KEY_LINES[0]),))
    assert Account.from_json("x", account.to_json()) == account


# --- the CLI -----------------------------------------------------------------------------


class FakeTTY(io.StringIO):
    """A stdin that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


def parse(*argv: str) -> argparse.Namespace:
    """Parse ``gateway account`` arguments with the module's own parsers."""
    parser = argparse.ArgumentParser(prog="gateway account")
    add_account_parsers(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def run(command: Any, argv: list[str], stdin: io.StringIO | None = None, **kw: Any) -> tuple:
    """Run one account command; return (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    extra = {} if command is account_list else {"stdin": stdin or io.StringIO()}
    code = command(parse(*argv), stdout=out, stderr=err, **extra, **kw)
    return code, out.getvalue(), err.getvalue()


def test_cli_add_list_passwd_remove(tmp_path: Path) -> None:
    """The four commands work together and list shows no secrets."""
    node = str(tmp_path)
    key_file = tmp_path / "id.pub"
    key_file.write_text(f"# my key\n\n{KEY_LINES[0]}\n")
    made: list[str] = []

    def make_root_cap() -> str:
        made.append(ROOT_CAP)
        return ROOT_CAP

    code, out, err = run(
        account_add,
        ["add", node, "alice", "--password-stdin", "--read-only"],
        io.StringIO("s3cret pass\n"),
        make_root_cap=make_root_cap,
    )
    assert (code, err) == (0, "") and "alice" in out
    code, _, err = run(
        account_add,
        ["add", node, "bob", "--ssh-key", str(key_file), "--rename-overwrites"],
        make_root_cap=make_root_cap,
    )
    assert (code, err) == (0, "")
    assert len(made) == 2
    store = fresh_store(tmp_path)
    assert store.verify_password("alice", "s3cret pass")
    assert store.get("alice").read_only and not store.get("bob").has_password

    code, out, err = run(account_list, ["list", node])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("alice\tpassword\tread-only")
    assert lines[1].startswith("bob\tkey SHA256:") and lines[1].endswith("rename-overwrites")
    assert ROOT_CAP not in out

    prompts: list[str] = []

    def getpass(prompt: str) -> str:
        prompts.append(prompt)
        return "typed twice"

    code, _, err = run(account_passwd, ["passwd", node, "bob"], FakeTTY(), getpass=getpass)
    assert (code, err) == (0, "") and len(prompts) == 2
    assert store.verify_password("bob", "typed twice")

    code, _, err = run(account_remove, ["remove", node, "alice"])
    assert (code, err) == (0, "")
    assert [s.name for s in store.list()] == ["bob"]


def test_cli_errors(tmp_path: Path) -> None:
    """Errors are one 'gateway: ...' line on stderr with status 1; no root cap is wasted."""
    node = str(tmp_path)

    def no_cap() -> str:
        raise AssertionError("must not create a root directory")

    cases = [
        (account_add, ["add", node, "--", "-x"], None, "invalid account name"),
        (account_add, ["add", node, "alice"], io.StringIO(), "--password-stdin"),
        (account_add, ["add", node, "alice", "--password-stdin"], io.StringIO(""), "no password"),
        (account_add, ["add", node, "alice", "--ssh-key", "/nonexistent"], None, "cannot read"),
        (account_remove, ["remove", node, "alice"], None, "no account named 'alice'"),
        (account_passwd, ["passwd", node, "alice", "--password-stdin"], None, "no account"),
    ]
    for command, argv, stdin, message in cases:
        kw = {"make_root_cap": no_cap} if command is account_add else {}
        code, out, err = run(command, argv, stdin, **kw)
        assert code == 1, argv
        assert err.startswith("gateway: ") and err.count("\n") == 1, err
        assert message in err, (message, err)

    answers = iter(["one", "two"])
    code, _, err = run(
        account_add,
        ["add", node, "alice"],
        FakeTTY(),
        make_root_cap=no_cap,
        getpass=lambda prompt: next(answers),
    )
    assert code == 1 and "do not match" in err

    run(account_add, ["add", node, "alice", "--password-stdin"], io.StringIO("pw\n"),
        make_root_cap=lambda: ROOT_CAP)  # fmt: skip
    code, _, err = run(
        account_add,
        ["add", node, "alice", "--password-stdin"],
        io.StringIO("pw\n"),
        make_root_cap=no_cap,
    )
    assert code == 1 and "already exists" in err
