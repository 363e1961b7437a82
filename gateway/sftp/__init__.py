"""The SFTP frontend: the SSH server a user's SFTP client talks to."""

from gateway.sftp.avatar import AccountAvatar, SFTPServerFactory
from gateway.sftp.hostkey import HostKeyError, generate_host_key, load_host_key
from gateway.sftp.ssh import GatewaySSHFactory, make_ssh_factory

__all__ = [
    "AccountAvatar",
    "GatewaySSHFactory",
    "HostKeyError",
    "SFTPServerFactory",
    "generate_host_key",
    "load_host_key",
    "make_ssh_factory",
]
