"""Prometheus metrics, read from the components' own counters at scrape time.

Nothing on the message path touches a metrics object: each component keeps plain ``stats``
counters, and this collector turns them into metric families when /metrics is scraped.
"""

from __future__ import annotations

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily


class DaemonCollector:
    def __init__(self, daemon) -> None:
        self.daemon = daemon

    def collect(self):
        d = self.daemon
        binds = GaugeMetricFamily("smscenter_partner_binds", "Bound partner sessions", labels=["account"])
        for system_id, state in d.server.registry.accounts.items():
            binds.add_metric([system_id], len(state.binds))
        yield binds
        up = GaugeMetricFamily("smscenter_connector_up", "Connector has a bound session", labels=["connector"])
        for name, connector in d.connectors.items():
            up.add_metric([name], 1.0 if connector.is_up else 0.0)
        yield up
        yield GaugeMetricFamily("smscenter_queue_messages", "Messages waiting in the MT queue", value=d.dispatcher.queued)
        yield GaugeMetricFamily(
            "smscenter_queue_resident", "MT queue messages in memory (the working set)", value=d.dispatcher.resident
        )
        yield GaugeMetricFamily(
            "smscenter_held_for_window", "Marketing messages held until their send window opens", value=d.dispatcher.held()
        )
        for prefix, stats in (
            ("pipeline", d.pipeline.stats),
            ("dispatch", d.dispatcher.stats),
            ("receipts", d.deliveries.stats),
            ("outbox", d.outbox.stats),
            ("mo", d.mo.stats),
            ("housekeeping", d.housekeeping.stats),
        ):
            for key, value in stats.items():
                yield CounterMetricFamily(f"smscenter_{prefix}_{key}", f"{prefix} {key.replace('_', ' ')}", value=value)
        yield CounterMetricFamily("smscenter_store_commits", "Group commits", value=d.store.commits)
        yield CounterMetricFamily(
            "smscenter_store_writer_restarts", "Writer processes started again after one died",
            value=d.store.writer_restarts,
        )


def registry_for(daemon) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(daemon))
    return registry
