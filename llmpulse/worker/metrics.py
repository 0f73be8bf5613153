"""Prometheus metrics of a worker, in a registry of its own (no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from llmpulse.stages.base import IngestStats


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
        self.store_errors = Counter(
            "llmpulse_store_errors", "Failed store writes (retried)", registry=r
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

    def record_iteration(self, stats: IngestStats, seconds: float) -> None:
        self.record(stats)
        self.batch_seconds.observe(seconds)

    def observe_lag(self, lag: dict[str, int]) -> None:
        for partition, n in lag.items():
            self.lag.labels(partition).set(n)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
