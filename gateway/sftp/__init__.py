"""The SFTP frontend: the SSH server a user's SFTP client talks to."""

from gateway.sftp.ssh import (
    AccountAvatar,
    GatewaySSHFactory,
    HostKeyError,
    SFTPServerFactory,
    generate_host_key,
    load_host_key,
    make_ssh_factory,
)

__all__ = [
    "AccountAvatar",
    "GatewaySSHFactory",
    "HostKeyError",
    "SFTPServerFactory",
    "generate_host_key",
    "load_host_key",
    "make_ssh_factory",
]
