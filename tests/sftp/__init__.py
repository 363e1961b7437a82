"""Tests of the SFTP frontend: accounts, SSH server layer."""
