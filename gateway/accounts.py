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
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import threading
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from functools import cached_property
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash
import nacl.utils
from attrs import define, evolve, field, frozen
from twisted.conch.ssh.keys import BadKeyError, FingerprintFormats, Key

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
OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE
MAX_PASSWORD_BYTES = 1024
MIN_RSA_BITS = 2048

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
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


def accounts_path(node_dir: str | os.PathLike[str]) -> Path:
    """Where a node directory keeps its accounts file."""
    return Path(node_dir) / "private" / "accounts.json"


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid account name, else raise `InvalidAccountName`."""
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None:
        raise InvalidAccountName(
            f"invalid account name {name!r}: use 1 to 64 of the characters A-Z a-z 0-9 . _ -,"
            " not starting with '-' or '.'"
        )
    return name


def _validate_root_cap(root_cap: str) -> str:
    if (
        not isinstance(root_cap, str)
        or not root_cap
        or len(root_cap) > 4096
        or any(c.isspace() or not c.isprintable() for c in root_cap)
    ):
        # Never echo the value: it is a secret.
        raise InvalidAccount("the root capability must be a non-empty printable string")
    return root_cap


def _password_bytes(password: str | bytes) -> bytes:
    """Canonical bytes of a password: NFC-normalized UTF-8 (raw bytes if not UTF-8)."""
    if isinstance(password, str):
        text = password
    else:
        try:
            text = password.decode("utf-8")
        except UnicodeDecodeError:
            return password
    return unicodedata.normalize("NFC", text).encode("utf-8")


def hash_password(password: str | bytes) -> bytes:
    """Hash a password with Argon2id for storage; raise `InvalidPassword` if unusable."""
    secret = _password_bytes(password)
    if not secret:
        raise InvalidPassword("the password must not be empty")
    if len(secret) > MAX_PASSWORD_BYTES:
        raise InvalidPassword(f"the password must be at most {MAX_PASSWORD_BYTES} bytes long")
    return nacl.pwhash.argon2id.str(secret, opslimit=OPSLIMIT, memlimit=MEMLIMIT)


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
        fp = self.public_key().fingerprint(FingerprintFormats.SHA256_BASE64)
        return f"SHA256:{fp.rstrip('=')}"

    def to_line(self) -> str:
        """The ``authorized_keys`` line this was parsed from (normalized whitespace)."""
        key_part = self.public_key().toString("openssh").decode("ascii")
        return " ".join(p for p in (self.options, key_part, self.comment) if p)


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
            root_cap = _validate_root_cap(obj.get("root_cap"))  # type: ignore[arg-type]
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
        secret = _password_bytes(password)
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
        _validate_root_cap(root_cap)
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
