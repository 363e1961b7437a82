"""Assembling a node's services from its directory and configuration.

A gateway node's parts, in start order: embedded storage server (when the grid
is embedded), storage client (the grid), filesystem, upload queue, audit log
(when enabled), SFTP, the control endpoint (the CLI's way in), lease renewal,
web. A storage node's parts: the storage server (HTTPS) and its status page.
Stopping goes in reverse.
"""

from __future__ import annotations

from typing import Any

from gateway.config import NodeConfig
from gateway.logfile import Scrubber
from gateway.nodedir import NodeDir
from gateway.service import Node
from gateway.web.status import StatusPart


def build_node(reactor: Any, nd: NodeDir, config: NodeConfig, scrubber: Scrubber) -> Node:
    """Build the node a directory describes (not yet started)."""
    node = Node(config.kind, config.get("node", "nickname"))
    if config.kind == "gateway":
        _add_gateway_parts(reactor, node, nd, config, scrubber)
    else:
        _add_storage_parts(reactor, node, nd, config, scrubber)
    if config.get("web", "enabled"):
        node.add_part(
            StatusPart(
                reactor, node, config.get("web", "host"), config.get("web", "port"), scrubber
            )
        )
    return node


def _add_gateway_parts(
    reactor: Any, node: Node, nd: NodeDir, config: NodeConfig, scrubber: Scrubber
) -> None:
    """Embedded storage, grid client, filesystem, upload queue, audit log, SFTP, control,
    leases."""
    from gateway.grid.part import EmbeddedStoragePart, GridPart

    embedded = None
    if config.get("grid", "embedded"):
        embedded = EmbeddedStoragePart(reactor, nd)
        node.add_part(embedded)
    grid = GridPart(reactor, nd, config, embedded)
    node.add_part(grid)
    from gateway.fs.part import FilesystemPart
    from gateway.sftp.part import SFTPPart

    fs = FilesystemPart(reactor, nd, config, grid)
    if embedded is not None:
        embedded.hold_while_busy(fs.queue.activity)
    node.add_part(fs)
    node.add_part(fs.queue)
    from gateway.audit.part import AuditPart, audit_log

    audit = AuditPart(reactor, nd, config, scrubber) if config.get("audit", "enabled") else None
    if audit is not None:
        node.add_part(audit)
    from gateway.sftp.busypoll import all_quiet

    quiet = all_quiet([fs.threads_quiet] + ([embedded.quiet] if embedded is not None else []))
    node.add_part(SFTPPart(reactor, nd, config, fs, audit=audit_log(audit), quiet=quiet))
    from gateway.control.part import ControlPart
    from gateway.maintenance import LeaseRenewalPart

    node.add_part(ControlPart(reactor, nd, fs))
    node.add_part(
        LeaseRenewalPart(reactor, nd, fs, interval=config.get("grid", "lease_renewal_interval"))
    )


def _add_storage_parts(
    reactor: Any, node: Node, nd: NodeDir, config: NodeConfig, scrubber: Scrubber
) -> None:
    """The HTTPS storage server."""
    from gateway.storage_node import StorageServerPart

    node.add_part(StorageServerPart(reactor, nd, config))
