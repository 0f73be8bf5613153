"""Prometheus metrics of a worker, in a registry of its own (no globals)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmpulse.stages.base import IngestStats

if TYPE_CHECKING:
    from llmpulse.worker.runner import TopologyRunner


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("llmpulse_events", "Trace events by outcome", ["outcome"], registry=r)
        self.rejected = Counter(
            "llmpulse_rejected_events", "Rejected events by offending field", ["field"], registry=r
        )
        self.unpriced = Counter(
            "llmpulse_unpriced_events", "Stored events whose model has no price", registry=r
        )
        self.windows = Counter("llmpulse_windows", "Window statistics rows written", registry=r)
        self.write_seconds = Histogram(
            "llmpulse_store_write_seconds", "Time to store one batch's rows", registry=r
        )
        self.late = Counter(
            "llmpulse_late_events", "Events later than the allowed lateness", registry=r
        )
        self.dlq_errors = Counter(
            "llmpulse_dlq_errors", "Rejected events not sent to the DLQ topic", registry=r
        )
        self.batch_seconds = Histogram(
            "llmpulse_batch_seconds", "Time to process and store one batch", registry=r
        )
        self.lag = Gauge(
            "llmpulse_consumer_lag", "Messages not yet processed", ["partition"], registry=r
        )
        self.last_event_time = Gauge(
            "llmpulse_last_event_timestamp_seconds",
            "Event time of the newest stored event",
            registry=r,
        )

    def record(self, stats: IngestStats) -> None:
        self.events.labels("accepted").inc(stats.accepted)
        self.events.labels("duplicate").inc(stats.duplicates)
        self.events.labels("rejected").inc(stats.rejected_total)
        for category, n in stats.rejected.items():
            self.rejected.labels(category.split(":", 1)[0]).inc(n)
        self.unpriced.inc(sum(stats.unpriced_models.values()))
        self.windows.inc(stats.windows)
        self.late.inc(stats.late_events)

    def record_iteration(self, stats: IngestStats, seconds: float) -> None:
        self.record(stats)
        self.batch_seconds.observe(seconds)

    def observe_lag(self, lag: dict[str, int]) -> None:
        for partition, n in lag.items():
            self.lag.labels(partition).set(n)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RunnerCollector(Collector):
    """What the runner holds, read at scrape time: the store's health (derived from
    its ``StoreHealth``, so nothing is counted twice), PII redactions (counted by
    the intake) and the series the windows of this worker's keyed tasks hold."""

    def __init__(self, runner: Callable[[], TopologyRunner | None]) -> None:
        self.runner = runner

    def collect(self) -> Iterator[Metric]:
        runner = self.runner()
        if runner is None:
            return
        counts = runner.intake.redactions
        found = CounterMetricFamily(
            "llmpulse_redactions", "PII values redacted, by type", labels=["type"]
        )
        for kind, n in sorted(counts.by_type.items()):
            found.add_metric([kind], n)
        yield found
        dropped = CounterMetricFamily(
            "llmpulse_redacted_texts_dropped",
            "Texts dropped by the privacy policy",
            labels=["field"],
        )
        for name, n in sorted(counts.dropped.items()):
            dropped.add_metric([name], n)
        yield dropped
        yield CounterMetricFamily(
            "llmpulse_pseudonymised_user_ids",
            "user_id values replaced by a keyed hash",
            value=counts.pseudonymised,
        )
        store = runner.store
        yield GaugeMetricFamily(
            "llmpulse_store_up",
            "1 while the store takes writes, 0 during an outage",
            value=1 if store.up else 0,
        )
        yield GaugeMetricFamily(
            "llmpulse_store_outage_seconds",
            "How long the current store outage has lasted",
            value=store.outage_s(now_s=time.time()),
        )
        yield CounterMetricFamily(
            "llmpulse_store_errors", "Failed store writes (each one retried)", value=store.failures
        )
        series = GaugeMetricFamily(
            "llmpulse_active_series",
            "Series held by this worker's windows, by grouping",
            labels=["grouping"],
        )
        for grouping, n in sorted(runner.active_series().items()):
            series.add_metric([grouping], n)
        yield series
