"""Prometheus metrics, read from the components' own counters at scrape time.

Nothing on the message path touches a metrics object: each component keeps plain ``stats``
counters, and this collector turns them into metric families when /metrics is scraped.
"""

from __future__ import annotations

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily


class ServerCollector:
    """The partner listener's limits: connection slots and login throttling (binds and the API's,
    one guard)."""

    def __init__(self, server) -> None:
        self.server = server

    def collect(self):
        admission, guard = self.server.admission, self.server.guard
        refused = CounterMetricFamily(
            "smscenter_connections_refused", "Sockets closed at once, by the limit they hit", labels=["reason"]
        )
        for reason, count in sorted(admission.refused.items()):
            refused.add_metric([reason], count)
        yield refused
        yield GaugeMetricFamily("smscenter_connections_open", "Partner sockets holding a slot", value=admission.open)
        failed = CounterMetricFamily("smscenter_binds_failed", "Binds refused, by reason", labels=["reason"])
        for reason, count in sorted(guard.failed.items()):
            failed.add_metric([reason], count)
        yield failed
        logins = CounterMetricFamily(
            "smscenter_logins_failed", "Logins refused (SMPP binds, API requests), by door and reason",
            labels=["door", "reason"],
        )
        for door, reasons in sorted(guard.failures.items()):
            for reason, count in sorted(reasons.items()):
                logins.add_metric([door, reason], count)
        yield logins
        yield GaugeMetricFamily(
            "smscenter_bind_checks", "Password checks (binds, API logins) queued or running", value=guard.checking
        )


class DaemonCollector:
    def __init__(self, daemon) -> None:
        self.daemon = daemon

    def collect(self):
        d = self.daemon
        binds = GaugeMetricFamily("smscenter_partner_binds", "Bound partner sessions", labels=["account"])
        for system_id, state in d.server.registry.accounts.items():
            binds.add_metric([system_id], len(state.binds))
        yield binds
        yield from ServerCollector(d.server).collect()
        up = GaugeMetricFamily("smscenter_connector_up", "Connector has a bound session", labels=["connector"])
        for name, connector in d.connectors.items():
            up.add_metric([name], 1.0 if connector.is_up else 0.0)
        yield up
        yield from _id_metrics(d)
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
        yield from _webhook_metrics(d.webhooks)
        yield from _connection_log_metrics(d.connections)
        yield from _retention_metrics(d.retention)
        yield from _budget_metrics(d)
        yield CounterMetricFamily(
            "smscenter_store_writer_restarts", "Writer processes started again after one died",
            value=d.store.writer_restarts,
        )


def _id_metrics(d):
    """Upstream ids (receipts.py): the convention each connector uses (configured, learnt
    by ``auto``, or ``auto`` while none is), and its receipts that found no message."""
    convention = GaugeMetricFamily(
        "smscenter_connector_id_convention", "The message id convention a connector uses (1)",
        labels=["connector", "convention"],
    )
    unmatched = CounterMetricFamily(
        "smscenter_receipts_unmatched", "Receipts that found no message when they came, by connector",
        labels=["connector"],
    )
    for name, connector in d.connectors.items():
        convention.add_metric([name, connector.id_convention], 1.0)
        unmatched.add_metric([name], d.deliveries.unmatched.get(name, 0))
    yield convention
    yield unmatched


def _webhook_metrics(sender):
    """The webhook sender (http/webhooks.py): deliveries by outcome, rows waiting per account."""
    deliveries = CounterMetricFamily(
        "smscenter_webhook_deliveries", "Webhook attempts by outcome (delivered: 2xx)", labels=["outcome"]
    )
    for outcome, n in sorted(sender.stats.items()):
        deliveries.add_metric([outcome], n)
    yield deliveries
    depth = GaugeMetricFamily("smscenter_webhook_backlog", "Webhook events waiting, by account", labels=["account"])
    for account, n in sorted(sender.depth.items()):
        depth.add_metric([account], max(n, 0))
    yield depth


def _retention_metrics(job):
    """The retention purge (retention.py): rows removed per category, when it last ran."""
    from smscenter.app.retention import CATEGORIES

    purged = CounterMetricFamily(
        "smscenter_retention_purged_rows", "Rows removed by the retention purge, by category", labels=["category"]
    )
    for category in CATEGORIES:
        purged.add_metric([category.name], job.purger.purged[category.name])
    yield purged
    yield GaugeMetricFamily(
        "smscenter_retention_last_run_timestamp_seconds", "When the retention purge last ran (UNIX time, 0: never)",
        value=job.purger.last_run_at or 0.0,
    )
    yield CounterMetricFamily("smscenter_retention_runs", "Retention purge runs since start", value=job.runs)
    yield CounterMetricFamily("smscenter_retention_batches", "Retention purge batches (transactions) since start",
                              value=job.purger.batches)
    yield GaugeMetricFamily(
        "smscenter_retention_batch_longest_seconds",
        "The longest retention purge batch since start, its commit included (what a commit behind it waited)",
        value=job.purger.longest,
    )


def _connection_log_metrics(connections):
    """The connection log (connlog.py): rows written, buffered, and dropped on a full buffer."""
    yield CounterMetricFamily(
        "smscenter_connection_log_written", "Bind attempts written to the connection log", value=connections.written
    )
    yield CounterMetricFamily(
        "smscenter_connection_log_dropped", "Bind attempts not logged: the connection log's buffer was full",
        value=connections.dropped,
    )
    yield GaugeMetricFamily(
        "smscenter_connection_log_buffered", "Bind attempts waiting to be written", value=connections.buffered
    )


def _budget_metrics(d):
    """The budgets of partner sessions (budgets.py) and the aggregated logs (floodlog.py)."""
    budgets = d.server.budgets
    for key, value in budgets.stats.items():
        yield CounterMetricFamily(f"smscenter_budget_{key}", f"budget {key.replace('_', ' ')}", value=value)
    refused = CounterMetricFamily(
        "smscenter_requests_refused", "Partner requests refused, by account and status", labels=["account", "reason"]
    )
    for (account, reason), n in budgets.refusals.totals.items():
        refused.add_metric([account or "", reason], n)
    yield refused
    reads = d.pipeline.reads
    yield GaugeMetricFamily("smscenter_storage_reads_in_use", "query_sm/cancel_sm at the database now", value=reads.in_use)
    yield CounterMetricFamily(
        "smscenter_storage_reads_refused", "query_sm/cancel_sm refused: max_storage_reads reached", value=reads.refused
    )
    errors = CounterMetricFamily("smscenter_errors", "Errors by event and exception type", labels=["event", "error"])
    if d.pipeline.errors is not None:
        for (event, kind), n in d.pipeline.errors.totals.items():
            errors.add_metric([event, kind], n)
    yield errors


def registry_for(daemon) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(daemon))
    return registry
