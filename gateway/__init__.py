"""The gateway: the node a user runs to reach an encrypted storage grid over SFTP."""

__version__ = "0.1.0"
