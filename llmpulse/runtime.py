"""Assembling components from settings: the only place settings become objects.

The CLI, replay and the worker call these; everything below receives plain
values. :class:`Stages` makes the stage instances of each hop, fresh per task,
so a replay and every task of every worker run the same code.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from prometheus_client import CollectorRegistry

from llmpulse.alerts.engine import AlertEngine
from llmpulse.alerts.rules import RuleSet, load_rules
from llmpulse.alerts.sinks import Dispatcher, build_sinks
from llmpulse.alerts.window_reads import WindowReads
from llmpulse.compare.canary import canary_monitor
from llmpulse.detectors.embedder import HashingEmbedder
from llmpulse.detectors.series import DriftMonitor
from llmpulse.errors import ConfigError, LlmpulseError
from llmpulse.evaluators.stage import build_evaluators
from llmpulse.ingest.publisher import KafkaPublisher
from llmpulse.pipeline import TRACES_TASK, IngestPipeline, utc_now
from llmpulse.privacy import RedactionPolicy
from llmpulse.processors.budgets import Budget
from llmpulse.processors.cost import PriceTable
from llmpulse.processors.traces import TraceProcessor
from llmpulse.processors.windows import GroupingSet, WindowSpec
from llmpulse.schemas.rows import MODEL_PRICE_COLUMNS, names
from llmpulse.scores.build import quality_config, score_stage
from llmpulse.settings import Settings
from llmpulse.stages.alerts import AlertStage
from llmpulse.stages.base import Stage
from llmpulse.stages.budgets import BudgetStage
from llmpulse.stages.canary import CanaryStage
from llmpulse.stages.drift import DriftStage
from llmpulse.stages.intake import Intake
from llmpulse.stages.quality import QualityStage
from llmpulse.stages.scores import ScorePath
from llmpulse.stages.traces import TraceStage
from llmpulse.stages.windows import WindowConfig, WindowStage
from llmpulse.store.client import SerialClient, connect
from llmpulse.store.migrations import migrate
from llmpulse.store.reads import known_event_ids, known_ids
from llmpulse.store.writer import StoreWriter
from llmpulse.topology.routing import partition_for
from llmpulse.topology.task import Task


def tune_gc() -> None:
    """Keep the cyclic garbage collector out of the hot path (call once, after setup).

    Ingest allocates many short-lived containers (parsed JSON objects) that die
    by reference counting; with the default thresholds they still trigger
    collections, and the full ones walk every object of a heap that holds chDB,
    pyarrow and Faust. Measured on replay: full collections cost about a third
    of validation time. Freezing moves the setup objects out of the collector's
    sight; larger thresholds make young collections rarer. Cycles are still
    collected, only less often.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def open_store(settings: Settings, dsn: str | None = None) -> SerialClient:
    target = dsn or settings.clickhouse_dsn
    return SerialClient(connect(target, settings.clickhouse.database), target)


def load_prices(settings: Settings) -> PriceTable:
    """The shipped table, overlaid by imported files (DATA_DIR/prices/*.json, in
    import order) and then by ``prices.file``."""
    table = PriceTable.default()
    imported = settings.data_dir / "prices"
    if imported.is_dir():
        for path in sorted(imported.glob("*.json")):
            table = table.overlay(PriceTable.from_file(path))
    if settings.prices.file is not None:
        if not settings.prices.file.exists():
            raise ConfigError("prices.file", f"{settings.prices.file} does not exist")
        table = table.overlay(PriceTable.from_file(settings.prices.file))
    return table


def publish_prices(client: SerialClient, table: PriceTable, now: datetime) -> None:
    """Record the price table in ``model_prices`` once per version, for analysts
    to join and to audit which prices produced a stored cost."""
    known = client.rows(
        "SELECT count() FROM model_prices WHERE table_version = {v:String}", {"v": table.version}
    )
    if known and known[0][0]:
        return
    rows = [[*r.values(), now] for r in table.rows()]
    StoreWriter(client).write_prices(rows, [*names(MODEL_PRICE_COLUMNS), "loaded_at"])


def publish_budgets(client: SerialClient, budgets: list[Budget], now: datetime) -> None:
    """Make the ``budgets`` table match the configuration (removed ones get 0)."""
    current = {(b.scope, b.name, b.period) for b in budgets}
    stale = [
        (scope, name, period, 0.0, now)
        for scope, name, period in client.rows(
            "SELECT scope, name, period FROM budgets GROUP BY scope, name, period "
            "HAVING argMax(limit_usd, updated_at) > 0"
        )
        if (scope, name, period) not in current
    ]
    rows = [(b.scope, b.name, b.period, b.limit_usd, now) for b in budgets] + stale
    if rows:
        client.insert("budgets", rows, ["scope", "name", "period", "limit_usd", "updated_at"])


def prepare_store(settings: Settings, dsn: str | None = None) -> SerialClient:
    """Open the store and bring its schema up to date (idempotent)."""
    client = open_store(settings, dsn)
    migrate(client, retention_days=settings.clickhouse.retention_days)
    return client


def window_config(settings: Settings) -> WindowConfig:
    w = settings.windows
    try:
        specs = tuple(WindowSpec(length, hop) for length, hop in w.specs)
        groupings = tuple(GroupingSet.parse(g) for g in w.groupings)
    except LlmpulseError as exc:
        raise ConfigError("windows", str(exc)) from exc
    return WindowConfig(
        specs,
        groupings,
        allowed_lateness_s=w.allowed_lateness_s,
        idle_timeout_s=w.idle_timeout_s,
        max_series=w.max_series,
    )


def budgets_of(settings: Settings) -> list[Budget]:
    return [Budget(b.scope, b.name, b.period, b.limit_usd) for b in settings.budgets]


class Stages:
    """The stages of every hop, configured once, instantiated per task.

    ``replay=True`` adds the store reads a replay needs (a file may repeat what
    an earlier run stored); a worker's tasks know what they wrote instead.
    ``send`` delivers alert notifications (a replay dry-runs them unless asked).
    """

    def __init__(
        self,
        settings: Settings,
        client: SerialClient,
        *,
        send_alerts: bool,
        replay: bool,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.client = client
        self.replay = replay
        self.send = send_alerts
        self.prices = load_prices(settings)
        self.budgets = budgets_of(settings)
        self.windows = window_config(settings)
        self.privacy = RedactionPolicy.from_settings(
            settings.privacy, store_text=settings.clickhouse.store_text
        )
        self.rules: RuleSet | None = (
            load_rules(settings.alerts.rules_file) if settings.alerts.enabled else None
        )
        self.dispatcher = self._dispatcher() if self.rules is not None else None
        # One engine answers which window signals the rules read, for every task.
        self._signals = WindowReads(self.rules).for_windows if self.rules is not None else None
        self.quality = quality_config(settings)
        self._publisher: KafkaPublisher | None = None
        self._control: ThreadPoolExecutor | None = None
        publish_prices(client, self.prices, clock())
        publish_budgets(client, self.budgets, clock())

    def _dispatcher(self) -> Dispatcher:
        a = self.settings.alerts
        publisher = (
            KafkaPublisher(self.settings.kafka.bootstrap)
            if self.send and a.control_enabled
            else None
        )
        sinks = build_sinks(
            a,
            self.settings.pagerduty.url,
            self.settings.pagerduty.routing_key,
            publish=publisher.publish if publisher else None,
            control_topic=self.settings.topics.control,
        )
        return Dispatcher(
            sinks,
            registry=CollectorRegistry(),
            queue_size=a.queue_size,
            max_attempts=a.max_attempts,
            dry_run=not self.send,
        )

    def intake(self) -> Intake:
        known = None
        if self.replay:
            known = lambda ids: known_ids(self.client, "rejected_events", "rejection_id", ids)  # noqa: E731
        return Intake(
            TraceProcessor(self.prices),
            known=known,
            limits=self.settings.limits.event_limits(),
            privacy=self.privacy,
            store_text=self.settings.clickhouse.store_text,
        )

    def traces(self) -> list[Stage]:
        lookup = None
        if self.replay:
            lookup = lambda ids, lo, hi: known_event_ids(self.client, ids, lo, hi)  # noqa: E731
        return [
            TraceStage(
                self.prices,
                store_text=self.settings.clickhouse.store_text,
                # A worker's memory is split over the event-id partitions it may own.
                capacity=self.settings.worker.dedup_cache
                if self.replay
                else max(1, self.settings.worker.dedup_cache // self.settings.topics.partitions),
                lookup=lookup,
            )
        ]

    def keyed(self, partition: int | None = None) -> list[Stage]:
        """Windows, budgets, drift, score quality, canaries and alerts: the stages keyed
        by series. ``partition``: the keyed partition of the task (None: every key,
        a replay), which decides the canary pairs it owns."""
        hours = self.settings.windows.restore_hours
        stages: list[Stage] = [
            WindowStage(self.windows, to_signals=self._signals, resume_hours=hours)
        ]
        if self.budgets:
            stages.append(BudgetStage(self.budgets))
        drift = self._drift()
        if drift is not None:
            stages.append(drift)
        stages.append(QualityStage(self.quality))
        canary = self._canary(partition)
        if canary is not None:
            stages.append(canary)
        if self.rules is not None:
            engine = AlertEngine(
                self.rules, dashboard_base_url=self.settings.alerts.dashboard_base_url
            )
            notify = self.dispatcher.submit if self.dispatcher is not None else None
            stages.append(
                AlertStage(
                    engine,
                    notify,
                    send=self.send,
                    resume_hours=hours,
                    lateness_ms=self.windows.lateness_ms,
                )
            )
        return stages

    def _drift(self) -> DriftStage | None:
        d = self.settings.drift
        if not d.enabled:
            return None
        monitor = DriftMonitor(
            d.grouping,
            HashingEmbedder(dim=d.embedding_dim),
            fill_embeddings=d.fill_embeddings,
            warmup=d.warmup,
            window=d.window,
            detector=d.detector,
            max_series=d.max_series,
            auto_rebaseline=d.auto_rebaseline,
        )
        return DriftStage(
            monitor,
            known=lambda ids: known_ids(self.client, "drift_events", "drift_id", ids),
            # The score path folds the scores events carry; its quality windows
            # publish score_mean:* and hallucination_rate once per series.
            quality_signals=False,
        )

    def _canary(self, partition: int | None) -> CanaryStage | None:
        """The stage of the canary pairs this keyed partition owns (None: none)."""
        pairs = self.settings.canary.pairs
        n = self.settings.topics.partitions
        if partition is not None:
            pairs = [p for p in pairs if partition_for(p.name, n) == partition]
        monitor = canary_monitor(self.settings, pairs=pairs)
        if monitor is None:
            return None
        shortest = min(self.windows.specs, key=lambda s: (s.length_ms, s.hop_ms))
        return CanaryStage(
            monitor,
            self.client.query,
            every_ms=shortest.hop_ms,
            publish=self._control_publish() if self.settings.canary.rollback else None,
            control_topic=self.settings.topics.control,
        )

    def _control_publish(self) -> Callable[[str, bytes, bytes], None] | None:
        """Publishing on the control topic off the caller's thread (None in a dry run)."""
        if not self.send:
            return None
        if self._publisher is None:
            self._publisher = KafkaPublisher(self.settings.kafka.bootstrap)
            self._control = ThreadPoolExecutor(1, thread_name_prefix="llmpulse-control")
        publisher, pool = self._publisher, self._control
        assert pool is not None

        def publish(topic: str, key: bytes, value: bytes) -> None:
            pool.submit(publisher.publish, topic, key, value)

        return publish

    def score_path(self, *, resend_stored: bool) -> ScorePath:
        """The score path of this process (worker or replay), with the evaluators.
        ``resend_stored``: pass on scores delivered again that were stored before (a
        worker, whose sends may have been lost in a crash; not a replay)."""
        stage = score_stage(self.settings, self.client, resend_stored=resend_stored)
        return ScorePath(stage, build_evaluators(self.settings))

    def close(self, timeout: float = 10.0) -> None:
        if self.dispatcher is not None:
            self.dispatcher.close(timeout)
        if self._control is not None:
            self._control.shutdown(wait=True)
        if self._publisher is not None:
            self._publisher.close()


def build_pipeline(
    settings: Settings,
    client: SerialClient,
    *,
    clock: Callable[[], datetime] = utc_now,
    wall: Callable[[], float] = time.time,
    restore: bool = True,
    send_alerts: bool = False,
) -> IngestPipeline:
    """The in-process pipeline over ``client`` (replay), resuming from what earlier
    runs stored (``restore``) so a second run continues where the first stopped."""
    stages = Stages(settings, client, send_alerts=send_alerts, replay=True, clock=clock)
    pipeline = IngestPipeline(
        stages.intake(),
        Task(TRACES_TASK, stages.traces()),
        Task("keyed", stages.keyed()),
        StoreWriter(client),
        clock=clock,
        wall=wall,
        on_close=stages.close,
        scores=stages.score_path(resend_stored=False),
    )
    if restore:
        pipeline.resume(client)
    return pipeline
