"""``/metrics``: a node's figures in the Prometheus text format, from a per-node registry.

A :class:`NodeCollector` reads the node's parts at each scrape (nothing is
copied in between); the SFTP request-latency histogram is the session
registry's own. Labels carry server nicknames and operation names only.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.web.data import NodeView


class NodeCollector(Collector):
    """Collects sessions, bytes, request latencies, queue depth and server health."""

    def __init__(self, view: NodeView):
        self._view = view

    def collect(self) -> Iterator[Metric]:
        """Every metric, read from the node now."""
        view = self._view
        now = float(view.clock.seconds())
        yield GaugeMetricFamily(
            "gateway_uptime_seconds", "Seconds since the node started.", now - view.started
        )
        yield CounterMetricFamily(
            "gateway_log_errors",
            "Warnings and errors logged (recent, bounded list).",
            len(view.errors.records),
        )
        yield from self._sftp()
        yield from self._queue()
        yield from self._servers()
        yield from self._storage()

    def _sftp(self) -> Iterator[Metric]:
        sftp = self._view.sftp
        if sftp is None:
            return
        registry = sftp.sessions
        yield GaugeMetricFamily(
            "gateway_sftp_sessions", "SFTP sessions open now.", len(registry.sessions)
        )
        yield CounterMetricFamily(
            "gateway_sftp_sessions_started", "SFTP sessions since start.", registry.sessions_started
        )
        yield GaugeMetricFamily(
            "gateway_sftp_open_files", "SFTP file handles open now.", len(registry.transfers())
        )
        transferred = CounterMetricFamily(
            "gateway_sftp_bytes", "File bytes moved over SFTP.", labels=["direction"]
        )
        transferred.add_metric(["received"], registry.bytes_received)
        transferred.add_metric(["sent"], registry.bytes_sent)
        yield transferred
        yield from registry.latency.collect()

    def _queue(self) -> Iterator[Metric]:
        queue = self._view.queue
        if queue is None:
            return
        pending = queue.pending()
        yield GaugeMetricFamily(
            "gateway_upload_queue_depth", "Closed files waiting for the grid.", len(pending)
        )
        yield GaugeMetricFamily(
            "gateway_upload_queue_bytes",
            "Bytes of closed files waiting for the grid.",
            sum(job.size for job in pending),
        )
        yield GaugeMetricFamily(
            "gateway_upload_queue_failing",
            "Waiting uploads that failed at least once.",
            sum(1 for job in pending if job.attempts > 0),
        )

    def _servers(self) -> Iterator[Metric]:
        servers = self._view.servers()
        if self._view.grid is None:
            return
        up = GaugeMetricFamily(
            "gateway_storage_server_up", "1 when the server answered.", labels=["server"]
        )
        latency = GaugeMetricFamily(
            "gateway_storage_server_latency_seconds",
            "Latency of the last health poll.",
            labels=["server"],
        )
        space = GaugeMetricFamily(
            "gateway_storage_server_available_bytes",
            "Space the server offers.",
            labels=["server"],
        )
        for server in servers:
            label = [server["nickname"]]
            up.add_metric(label, 1.0 if server["connected"] else 0.0)
            if server["latency"] is not None:
                latency.add_metric(label, server["latency"])
            if server["available_space"] is not None:
                space.add_metric(label, server["available_space"])
        yield from (up, latency, space)

    def _storage(self) -> Iterator[Metric]:
        from gateway.storage_node import StorageServerPart

        part = next((p for p in self._view.node.parts if isinstance(p, StorageServerPart)), None)
        if part is None or part.server is None:
            return
        yield GaugeMetricFamily(
            "storage_available_bytes",
            "Space this storage server offers.",
            part.server.available_space(),
        )
        yield CounterMetricFamily(
            "storage_corruption_reports",
            "Corruption advisories received.",
            len(part.server.corruption_reports),
        )


def node_registry(view: NodeView) -> CollectorRegistry:
    """A registry of this node's metrics alone (no process-global state)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(view))
    return registry
