"""The audit log: logins, failed logins and each account's file changes, one JSON line each.

:mod:`gateway.audit.events` holds what an event is and the interface that
records one, :mod:`gateway.audit.writer` the file that holds them (rotated by
size), :mod:`gateway.audit.part` the node part that opens it, and
:mod:`gateway.audit.settings` the ``[audit]`` keys of ``node.cfg``. The SFTP
frontend records the events (:mod:`gateway.sftp.audited`,
:mod:`gateway.sftp.login_audit`). This package re-exports nothing, so that
:mod:`gateway.config` can read its settings without importing the rest.
"""
