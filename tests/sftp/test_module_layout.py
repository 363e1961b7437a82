"""The seam inside gateway/sftp between the SFTP protocol (the wire) and its ISFTPServer
adapter (the filesystem). Sizes and import cycles are checked product-wide in
tests/test_layout.py."""

from __future__ import annotations

from tests.test_layout import imports, modules

PACKAGE = "gateway.sftp"


def test_protocol_and_adapter_stay_apart() -> None:
    """The protocol knows no filesystem; the adapter knows no packet format or protocol."""
    protocol = imports(modules()[f"{PACKAGE}.protocol"])
    adapter = imports(modules()[f"{PACKAGE}.server"])
    assert not {name for name in protocol if name.startswith("gateway.fs")}
    assert not {name for name in protocol if name.startswith(f"{PACKAGE}.server")}
    assert not {name for name in adapter if name.startswith(f"{PACKAGE}.packets")}
    assert not {name for name in adapter if name.startswith(f"{PACKAGE}.protocol")}
    assert not {name for name in adapter if name.startswith("twisted.conch.ssh.common")}
