"""The layout of a node directory and the code that creates one.

A node directory holds one node, like Tahoe-LAFS's::

    DIR/node.cfg            configuration (INI; docs/configuration.rst)
    DIR/private/            secrets, mode 0700, every file 0600
    DIR/logs/node.log       the node's log (twisted.logger, JSON lines)
    DIR/node.pid            pid of the running node (locked while it runs)
    DIR/private/announce    what the running node said it listens on (removed at stop)
    DIR/storage/            shares (a storage node, or a gateway's embedded server)
    DIR/staging/            a gateway's staged files, mode 0700
    DIR/state/              a gateway's journal and other state

Secret files are written with :func:`write_private`, which never lets them
exist with a wider mode, even for an instant.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from attrs import frozen

from storage.redolog import fsync_directory

#: The configuration file of a node directory.
CONFIG_FILENAME = "node.cfg"

# Names of the files in private/.
CONVERGENCE_FILE = "convergence"
LEASE_SECRET_FILE = "lease_secret"
SERVERS_FILE = "servers"
HOST_KEY_FILE = "ssh_host_ed25519_key"
ACCOUNTS_FILE = "accounts.json"
SWISSNUM_FILE = "swissnum"
NURL_FILE = "nurl"
ANNOUNCE_FILE = "announce"


@frozen
class NodeDir:
    """Paths inside one node directory."""

    root: Path

    @property
    def config(self) -> Path:
        """The configuration file."""
        return self.root / CONFIG_FILENAME

    @property
    def private(self) -> Path:
        """The secrets folder (0700)."""
        return self.root / "private"

    @property
    def logs(self) -> Path:
        """The log folder."""
        return self.root / "logs"

    @property
    def log_file(self) -> Path:
        """The node's main log."""
        return self.logs / "node.log"

    @property
    def pid_file(self) -> Path:
        """The pid file, locked while the node runs."""
        return self.root / "node.pid"

    @property
    def storage(self) -> Path:
        """Where shares live."""
        return self.root / "storage"

    @property
    def staging(self) -> Path:
        """Staged SFTP writes (gateway only)."""
        return self.root / "staging"

    @property
    def state(self) -> Path:
        """Journal and other durable state (gateway only)."""
        return self.root / "state"

    @property
    def announce_file(self) -> Path:
        """What the running node announced when it came up (private: it can hold a NURL)."""
        return self.private / ANNOUNCE_FILE

    def secret(self, name: str) -> Path:
        """A file in private/."""
        return self.private / name


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file atomically: temp file, fsync, rename, directory fsync.

    The temp file is created with ``mode`` from the start, so a secret file
    (0600) is never readable by others, even for an instant; the file ends with
    exactly ``mode``, whatever the umask.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & 0o700)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file atomically with mode 0600."""
    write_atomic(path, data, 0o600)


class NodeDirExists(Exception):
    """``create`` was pointed at a directory that already holds a node or other files."""


def make_dir(path: Path, mode: int) -> None:
    """Create a directory with exactly ``mode``, whatever the umask."""
    path.mkdir(mode=mode & 0o700)
    os.chmod(path, mode)


def make_node_dir(root: Path, private_dirs: tuple[str, ...] = ()) -> NodeDir:
    """Create an empty node directory skeleton (refusing a non-empty existing one).

    Modes are set explicitly, so a umask of 000 makes the same directory as 022:
    the node directory (and any parent made for it) 0755, ``private/`` and
    ``private_dirs`` 0700, ``logs/`` 0755. An existing empty directory loses
    its group and world write bits (a node refuses to start without that).
    """
    if root.exists():
        if not root.is_dir():
            raise NodeDirExists(f"{root} exists and is not a directory")
        if any(root.iterdir()):
            raise NodeDirExists(f"{root} is not empty; refusing to create a node there")
        with contextlib.suppress(PermissionError):  # not ours: the start check will say so
            os.chmod(root, stat.S_IMODE(root.stat().st_mode) & ~0o022)
    else:
        missing = [root, *(p for p in root.parents if not p.exists())]
        for path in sorted(missing, key=lambda p: len(p.parts)):
            try:
                make_dir(path, 0o755)
            except FileExistsError:
                # Made meanwhile by another ``create`` (nodes side by side made at once): a
                # parent is theirs to share; the node directory itself is not.
                if path == root or not path.is_dir():
                    raise NodeDirExists(f"{path} was created by someone else meanwhile") from None
    node = NodeDir(root)
    make_dir(node.private, 0o700)
    make_dir(node.logs, 0o755)
    for name in private_dirs:
        make_dir(root / name, 0o700)
    return node


def default_node_dir() -> Path:
    """The node directory ``gateway start`` uses when given none.

    ``$GATEWAY_DIR`` if set, else ``$XDG_DATA_HOME/gateway`` (``~/.local/share/gateway``).
    """
    explicit = os.environ.get("GATEWAY_DIR")
    if explicit:
        return Path(explicit).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "gateway"
