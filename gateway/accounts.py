"""The gateway's SFTP accounts, stored in ``NODEDIR/private/accounts.json``.

Each account is a user who may log in over SSH, and the directory of the grid
that user sees as ``/``.

File format
-----------

``private/accounts.json`` is a UTF-8 JSON document, mode 0600, always replaced
atomically (written to a temporary file in the same directory, fsynced, renamed
over the old file, then the directory is fsynced), so a reader never sees a
half-written file. Writers hold an exclusive ``flock`` on
``private/accounts.json.lock`` while they read, change and write the file, so
two ``gateway account`` commands never lose each other's changes. A running
node notices a new file (inode, size, mtime or ctime changed) at the next login
attempt and uses it without a restart::

    {
      "version": 1,
      "accounts": {
        "alice": {
          "password": "$argon2id$v=19$m=65536,t=2,p=1$...",
          "ssh_keys": ["ssh-ed25519 AAAAC3Nza... alice@laptop"],
          "root_cap": "URI:DIR2:...",
          "read_only": false,
          "rename_overwrites": false
        }
      }
    }

- The key of ``accounts`` is the login name: 1 to 64 characters of
  ``A-Z a-z 0-9 . _ -``, not starting with ``-`` or ``.``; case matters.
- ``password`` is an Argon2id hash in the libsodium/PHC string format
  (``nacl.pwhash.argon2id.str``; time cost 2, 64 MiB, about 50-100 ms to check),
  or ``null`` for an account that logs in with SSH keys only. Passwords are
  NFC-normalized and UTF-8 encoded before hashing.
- ``ssh_keys`` are OpenSSH ``authorized_keys`` lines, kept verbatim (options and
  comment included). Key types: Ed25519, ECDSA, RSA of at least 2048 bits
  (signatures with SHA-2 only) and the FIDO ``sk-`` variants. The only options
  accepted are the restrictions an SFTP-only server applies anyway
  (``restrict``, ``no-pty``, ``no-port-forwarding``, ``no-agent-forwarding``,
  ``no-X11-forwarding``, ``no-user-rc``); a line with any other option
  (``from=``, ``command=``, ``expiry-time=``...) is refused rather than
  silently not enforced.
- ``root_cap`` is the capability string of the account's root directory. It is
  a secret: whoever holds it can use the directory without logging in. It is
  never logged and never part of a ``repr``.
- ``read_only``: the account may not change anything.
- ``rename_overwrites``: a plain SFTP RENAME onto an existing name replaces it
  (for clients such as sshfs/WebEx that expect POSIX rename semantics).
- An account has a password, at least one SSH key, or both.

This module holds the file: :class:`AccountStore` reads, checks and replaces
it. One account's fields and their JSON form are in
:mod:`gateway.account_records`, SSH keys in :mod:`gateway.account_keys`,
password hashing in :mod:`gateway.account_passwords` and the errors in
:mod:`gateway.account_errors`; the public names are re-exported here.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from functools import cached_property
from pathlib import Path

import nacl.exceptions
import nacl.pwhash
import nacl.utils
from attrs import define, evolve, field

from gateway.account_errors import (
    AccountError,
    AccountExists,
    AccountFileError,
    InvalidAccount,
    InvalidAccountName,
    InvalidPassword,
    InvalidSSHKey,
    NoSuchAccount,
)
from gateway.account_keys import AuthorizedKey
from gateway.account_passwords import MAX_PASSWORD_BYTES, hash_password, password_bytes
from gateway.account_records import Account, AccountSummary, validate_name, validate_root_cap

__all__ = [
    "Account",
    "AccountError",
    "AccountExists",
    "AccountFileError",
    "AccountStore",
    "AccountSummary",
    "AuthorizedKey",
    "InvalidAccount",
    "InvalidAccountName",
    "InvalidPassword",
    "InvalidSSHKey",
    "NoSuchAccount",
    "accounts_path",
    "validate_name",
]

FORMAT_VERSION = 1


def accounts_path(node_dir: str | os.PathLike[str]) -> Path:
    """Where a node directory keeps its accounts file."""
    return Path(node_dir) / "private" / "accounts.json"


_FileSignature = tuple[int, int, int, int, int]


@define(eq=False)
class AccountStore:
    """The accounts of one node, backed by an ``accounts.json`` file.

    Reads check the file's identity (inode, size, mtime, ctime) and re-read it
    when it changed, so a running node sees ``gateway account`` changes at the
    next login. A file that does not exist means no accounts. Changes take an
    exclusive lock, re-read the file, and replace it atomically.
    """

    path: Path = field(converter=Path)
    _accounts: dict[str, Account] = field(init=False, factory=dict, repr=False)
    _signature: _FileSignature | None = field(init=False, default=None, repr=False)
    _broken: AccountFileError | None = field(init=False, default=None, repr=False)
    _lock: threading.Lock = field(init=False, factory=threading.Lock, repr=False)

    # --- reading -----------------------------------------------------------

    def _stat_signature(self) -> _FileSignature | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise AccountFileError(f"cannot read {self.path}: {e.strerror}") from None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def load(self) -> None:
        """Read the file now; raise `AccountFileError` if it is unreadable or malformed."""
        with self._lock:
            self._load_locked(self._stat_signature())

    def _load_locked(self, signature: _FileSignature | None) -> None:
        try:
            accounts = self._read_file()
        except AccountFileError as e:
            self._signature, self._broken = signature, e
            raise
        self._accounts, self._signature, self._broken = accounts, signature, None

    def _read_file(self) -> dict[str, Account]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise AccountFileError(f"cannot read {self.path}: {e.strerror}") from None
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise AccountFileError(f"{self.path} is not valid JSON: {e}") from None
        if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
            raise AccountFileError(f"{self.path}: unknown format (expected version 1)")
        entries = doc.get("accounts")
        if not isinstance(entries, dict):
            raise AccountFileError(f"{self.path}: 'accounts' is not a JSON object")
        try:
            return {name: Account.from_json(name, obj) for name, obj in entries.items()}
        except AccountError as e:
            raise AccountFileError(f"{self.path}: {e}") from None

    def reload_if_changed(self) -> bool:
        """Re-read the file if it changed since the last read; return whether it was read.

        Raises `AccountFileError` while the file is malformed, so that logins
        fail closed instead of using stale accounts.
        """
        signature = self._stat_signature()
        with self._lock:
            if signature == self._signature:
                if self._broken is not None:
                    raise self._broken
                return False
            self._load_locked(signature)
            return True

    def _current(self) -> dict[str, Account]:
        self.reload_if_changed()
        return self._accounts

    def list(self) -> list[AccountSummary]:
        """All accounts, sorted by name, without secrets."""
        return [a.summary() for _, a in sorted(self._current().items())]

    def get(self, name: str) -> Account:
        """The named account; raise `NoSuchAccount`."""
        try:
            return self._current()[name]
        except KeyError:
            raise NoSuchAccount(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._current()

    @cached_property
    def _dummy_hash(self) -> bytes:
        return hash_password(nacl.utils.random(16).hex())

    def verify_password(self, name: str, password: str | bytes) -> bool:
        """Whether ``password`` is the account's password.

        Unknown accounts, accounts without a password and over-long passwords
        cost one Argon2id verification too, so timing does not reveal which
        names exist. Blocking (~50-100 ms): call it from a thread.
        """
        account = self._current().get(name)
        stored = account.password_hash if account is not None else None
        secret = password_bytes(password)
        usable = stored is not None and 0 < len(secret) <= MAX_PASSWORD_BYTES
        try:
            ok = nacl.pwhash.argon2id.verify(
                stored if usable and stored is not None else self._dummy_hash,
                secret[:MAX_PASSWORD_BYTES],
            )
        except nacl.exceptions.InvalidkeyError:
            return False
        return bool(ok) and usable

    def check_key(self, name: str, public_key_blob: bytes) -> bool:
        """Whether the public key (SSH wire-format blob) is authorized for the account."""
        account = self._current().get(name)
        if account is None:
            return False
        return any(k.blob == public_key_blob for k in account.ssh_keys)

    # --- changing ----------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[dict[str, Account]]:
        """Lock the file, yield a fresh copy of the accounts, and write it back."""
        private = self.path.parent
        try:
            private.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock_fd = os.open(
                self.path.with_name(self.path.name + ".lock"),
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                0o600,
            )
        except OSError as e:
            raise AccountFileError(f"cannot lock {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            accounts = dict(self._read_file())
            yield accounts
            self._write_file(accounts)
            with self._lock:
                self._load_locked(self._stat_signature())
        finally:
            os.close(lock_fd)

    def _write_file(self, accounts: dict[str, Account]) -> None:
        doc = {
            "version": FORMAT_VERSION,
            "accounts": {name: a.to_json() for name, a in sorted(accounts.items())},
        }
        data = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        directory = self.path.parent
        try:
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as e:
            raise AccountFileError(f"cannot write {self.path}: {e.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            with suppress(OSError):
                os.unlink(tmp)
            raise AccountFileError(f"cannot write {self.path}: {e.strerror}") from None

    def add(
        self,
        name: str,
        *,
        root_cap: str,
        password: str | bytes | None = None,
        ssh_keys: Iterable[str | AuthorizedKey] = (),
        read_only: bool = False,
        rename_overwrites: bool = False,
    ) -> Account:
        """Create an account; raise `AccountExists`, `InvalidAccountName`, ... on errors."""
        validate_name(name)
        validate_root_cap(root_cap)
        keys = tuple(
            k if isinstance(k, AuthorizedKey) else AuthorizedKey.parse(k) for k in ssh_keys
        )
        if password is None and not keys:
            raise InvalidAccount("an account needs a password, an SSH key, or both")
        account = Account(
            name=name,
            root_cap=root_cap,
            password_hash=None if password is None else hash_password(password),
            ssh_keys=keys,
            read_only=read_only,
            rename_overwrites=rename_overwrites,
        )
        with self._transaction() as accounts:
            if name in accounts:
                raise AccountExists(name)
            accounts[name] = account
        return account

    def remove(self, name: str) -> None:
        """Delete an account; raise `NoSuchAccount`."""
        with self._transaction() as accounts:
            if accounts.pop(name, None) is None:
                raise NoSuchAccount(name)

    def set_password(self, name: str, password: str | bytes) -> None:
        """Replace an account's password; raise `NoSuchAccount` or `InvalidPassword`."""
        password_hash = hash_password(password)
        with self._transaction() as accounts:
            if name not in accounts:
                raise NoSuchAccount(name)
            accounts[name] = evolve(accounts[name], password_hash=password_hash)
