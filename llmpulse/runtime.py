"""Assembling components from settings: the only place settings become objects.

The CLI and the worker call these; everything below receives plain values.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from llmpulse.alerts.engine import AlertEngine
from llmpulse.alerts.rules import load_rules
from llmpulse.alerts.sinks import Dispatcher, build_sinks
from llmpulse.alerts.stage import AlertStage
from llmpulse.alerts.state import LATEST_ALERTS_SQL, state_rows_from_alerts
from llmpulse.detectors.embedder import HashingEmbedder
from llmpulse.detectors.series import DriftMonitor
from llmpulse.detectors.stage import DriftStage
from llmpulse.errors import ConfigError, LlmpulseError
from llmpulse.ingest.publisher import KafkaPublisher
from llmpulse.pipeline import IngestPipeline, utc_now
from llmpulse.processors.budgets import Budget, BudgetTracker
from llmpulse.processors.cost import PriceTable
from llmpulse.processors.dedup import RecentIds
from llmpulse.processors.traces import TraceProcessor
from llmpulse.processors.window_stage import WindowConfig, WindowStage
from llmpulse.processors.windows import GroupingSet, WindowSpec
from llmpulse.settings import Settings
from llmpulse.store.client import SerialClient, connect
from llmpulse.store.migrations import migrate
from llmpulse.store.restore import (
    publish_budgets,
    restore_alert_history,
    restore_baselines,
    restore_budgets,
    restore_windows,
)
from llmpulse.store.writer import ClickHouseStore


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


def publish_prices(client: SerialClient, table: PriceTable) -> None:
    """Record the price table in ``model_prices`` once per version, for analysts
    to join and to audit which prices produced a stored cost."""
    known = client.rows(
        "SELECT count() FROM model_prices WHERE table_version = {v:String}", {"v": table.version}
    )
    if known and known[0][0]:
        return
    now = datetime.now(UTC)
    rows = [[*r.values(), now] for r in table.rows()]
    ClickHouseStore(client).write_prices(rows)


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


def alert_stage(settings: Settings, client: SerialClient, *, send: bool) -> AlertStage | None:
    """Rules, engine state restored from the ``alerts`` table, and the sinks.

    With ``send=False`` (replay without --send-alerts) sinks are dry-run: the
    transitions are still recorded in the store.
    """
    a = settings.alerts
    if not a.enabled:
        return None
    rules = load_rules(a.rules_file)
    state_rows = state_rows_from_alerts(client.rows(LATEST_ALERTS_SQL))
    engine = AlertEngine.from_snapshot(rules, state_rows, dashboard_base_url=a.dashboard_base_url)
    # Baselines and SLO burn sums live in memory: rebuild them from stored windows.
    restore_alert_history(client, engine, hours=settings.windows.restore_hours)
    publisher = KafkaPublisher(settings.kafka.bootstrap) if send and a.control_enabled else None
    sinks = build_sinks(
        a,
        settings.pagerduty.url,
        settings.pagerduty.routing_key,
        publish=publisher.publish if publisher else None,
        control_topic=settings.topics.control,
    )
    dispatcher = Dispatcher(
        sinks,
        registry=CollectorRegistry(),
        queue_size=a.queue_size,
        max_attempts=a.max_attempts,
        dry_run=not send,
    )
    return AlertStage(engine, dispatcher, ClickHouseStore(client), send=send)


def drift_stage(settings: Settings, client: SerialClient) -> DriftStage | None:
    """Detectors per drift series, with the baselines stored by earlier runs."""
    d = settings.drift
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
    restore_baselines(client, monitor)
    return DriftStage(monitor, ClickHouseStore(client))


def budgets_of(settings: Settings) -> list[Budget]:
    return [Budget(b.scope, b.name, b.period, b.limit_usd) for b in settings.budgets]


def build_pipeline(
    settings: Settings,
    client: SerialClient,
    *,
    clock: Callable[[], datetime] = utc_now,
    wall: Callable[[], float] = time.time,
    restore: bool = True,
    send_alerts: bool = False,
) -> IngestPipeline:
    """The pipeline over ``client``, with window and budget state rebuilt from
    the store (``restore``) so a restart continues where the last run stopped."""
    prices = load_prices(settings)
    publish_prices(client, prices)
    budgets = budgets_of(settings)
    publish_budgets(client, budgets)
    tracker = BudgetTracker(budgets)
    stage = WindowStage(window_config(settings))
    pipeline = IngestPipeline(
        TraceProcessor(prices),
        ClickHouseStore(client),
        store_text=settings.clickhouse.store_text,
        recent=RecentIds(settings.worker.dedup_cache),
        clock=clock,
        wall=wall,
        windows=stage,
        budgets=tracker,
        alerts=alert_stage(settings, client, send=send_alerts),
        drift=drift_stage(settings, client),
    )
    if restore:
        restore_budgets(client, tracker, clock().date())
        _, reemitted = restore_windows(
            client, stage, max_hours=settings.windows.restore_hours, wall_now_s=wall()
        )
        # Windows the crash kept from being written are written now.
        pipeline.write_windows(reemitted, clock())
    return pipeline
