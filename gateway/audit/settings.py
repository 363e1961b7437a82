"""The ``[audit]`` section of ``node.cfg`` (part of :data:`gateway.config.SCHEMA`)."""

from __future__ import annotations

from gateway.config_values import Option, parse_bool, parse_kept, parse_path, parse_size

AUDIT_OPTIONS: tuple[Option, ...] = (
    Option(
        "audit",
        "enabled",
        parse_bool,
        "false",
        "Write an audit log: logins, failed logins and each account's file changes, one JSON"
        " line per event.",
        ("gateway",),
    ),
    Option(
        "audit",
        "path",
        parse_path,
        "logs/audit.jsonl",
        "The audit log (relative to the node directory); written with mode 0600.",
        ("gateway",),
    ),
    Option(
        "audit",
        "max_size",
        parse_size,
        "100MiB",
        "Size past which the audit log is rotated (0: never, for logrotate's copytruncate).",
        ("gateway",),
    ),
    Option(
        "audit",
        "keep",
        parse_kept,
        "10",
        "Rotated audit logs kept (PATH.1 the newest); older ones are deleted.",
        ("gateway",),
    ),
)
