"""Rebuilding a restarted worker's in-memory state from the store.

The store is the changelog: every event is in ``traces`` before its offset is
committed, so the windows still open at a crash are rebuilt from the raw rows of
their time range, and windows already in ``window_stats`` are never rewritten.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

from llmpulse.alerts.engine import AlertEngine
from llmpulse.detectors.reference import Reference
from llmpulse.detectors.series import DriftMonitor
from llmpulse.detectors.storage import LATEST_BASELINES_SQL
from llmpulse.errors import LlmpulseError
from llmpulse.processors.budgets import Budget, BudgetTracker
from llmpulse.processors.sketch import LogHistogram
from llmpulse.processors.window_stage import WindowStage, partition_of
from llmpulse.processors.windows import DIMENSIONS, EventBatch, WindowResult
from llmpulse.store.client import SerialClient

_EVENT_COLUMNS = (
    "toUnixTimestamp64Milli(timestamp), latency_ms, ifNull(ttft_ms, nan), status = 'error', "
    "ifNull(input_tokens, 0), ifNull(output_tokens, 0), ifNull(cost_usd, nan), source, "
    + ", ".join(DIMENSIONS)
)


def window_frontier(client: SerialClient, window_seconds: list[int]) -> int | None:
    """Epoch ms up to which every configured window spec has been written."""
    rows = client.rows(
        "SELECT window_seconds, toUnixTimestamp(max(window_end)) * 1000 FROM window_stats "
        "WHERE window_seconds IN {w:Array(UInt32)} GROUP BY window_seconds",
        {"w": window_seconds},
    )
    if len(rows) < len(set(window_seconds)):
        return None if not rows else min(int(r[1]) for r in rows)
    return min(int(r[1]) for r in rows)


def restore_windows(
    client: SerialClient, stage: WindowStage, *, max_hours: float, wall_now_s: float
) -> tuple[int, list[WindowResult]]:
    """Feed the stored events of still-open windows back; returns the number of
    events and the windows this closed (the writer drops those already stored)."""
    specs = stage.config.specs
    frontier = window_frontier(client, sorted({s.length_s for s in specs}))
    newest = client.rows("SELECT toUnixTimestamp64Milli(max(timestamp)), count() FROM traces")
    if not newest or not newest[0][1]:
        return 0, []
    newest_ms = int(newest[0][0])
    margin = stage.config.longest_ms + round(stage.config.allowed_lateness_s * 1000)
    start = (frontier - stage.config.longest_ms) if frontier is not None else newest_ms - margin
    start = max(start, newest_ms - round(max_hours * 3_600_000))
    result = client.raw_columns(
        f"SELECT {_EVENT_COLUMNS} FROM traces "
        "WHERE timestamp >= fromUnixTimestamp64Milli({start:Int64}) ORDER BY timestamp",
        {"start": start},
    )
    if not result or not len(result[0]):
        return 0, []
    ts, lat, ttft, err, tin, tout, cost, source, *dims = result
    batch = EventBatch(
        ts_ms=np.asarray(ts, dtype=np.int64),
        latency_ms=np.asarray(lat, dtype=np.float64),
        ttft_ms=np.asarray(ttft, dtype=np.float64),
        is_error=np.asarray(err, dtype=np.bool_),
        input_tokens=np.asarray(tin, dtype=np.int64),
        output_tokens=np.asarray(tout, dtype=np.int64),
        cost_usd=np.asarray(cost, dtype=np.float64),
        dims={d: np.asarray(col, dtype=object) for d, col in zip(DIMENSIONS, dims, strict=True)},
    )
    parts = [partition_of(s) for s in source]
    return len(batch), stage.restore(frontier, batch, parts, wall_now_s)


def restore_budgets(client: SerialClient, tracker: BudgetTracker, today: date) -> None:
    since = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    rows = client.rows(
        "SELECT scope, name, period, period_start, spent_usd FROM budget_usage "
        "WHERE period_start >= {since:Date}",
        {"since": since},
    )
    by_key = {(b.scope, b.name, b.period): b for b in tracker.budgets}
    for scope, name, period, start, spent in rows:
        budget = by_key.get((scope, name, period))
        if budget is not None:
            tracker.restore(budget, start, float(spent))


def publish_budgets(client: SerialClient, budgets: list[Budget]) -> None:
    """Make the ``budgets`` table match the configuration (removed ones get 0)."""
    now = datetime.now(UTC)
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


_WINDOW_FIELDS = (
    "window_start, window_end, window_seconds, hop_seconds, grouping, "
    + ", ".join(DIMENSIONS)
    + ", requests, errors, error_rate, latency_p50_ms, latency_p90_ms, latency_p95_ms, "
    "latency_p99_ms, latency_max_ms, ifNull(ttft_p50_ms, nan), ifNull(ttft_p95_ms, nan), "
    "ifNull(ttft_p99_ms, nan), input_tokens, output_tokens, cost_usd, unpriced_requests, "
    "late_events, latency_sketch_keys, latency_sketch_counts, latency_sketch_zeros, "
    "latency_min_ms, ttft_sketch_keys, ttft_sketch_counts, ttft_sketch_zeros"
)


def _result_from_row(row: tuple[Any, ...]) -> WindowResult:
    start, end, seconds, hop, grouping, *rest = row
    dims = dict(zip(DIMENSIONS, rest[: len(DIMENSIONS)], strict=True))
    (
        requests, errors, error_rate, p50, p90, p95, p99, lat_max, t50, t95, t99,
        tin, tout, cost, unpriced, late, lk, lc, lz, lat_min, tk, tc, tz,
    ) = rest[len(DIMENSIONS):]  # fmt: skip
    latency = LogHistogram.from_arrays(
        np.asarray(lk, dtype=np.int32), np.asarray(lc, dtype=np.uint64), int(lz),
        min=float(lat_min), max=float(lat_max),
    )  # fmt: skip
    ttft = LogHistogram.from_arrays(
        np.asarray(tk, dtype=np.int32), np.asarray(tc, dtype=np.uint64), int(tz)
    )
    return WindowResult(
        window_start=start.replace(tzinfo=UTC),
        window_end=end.replace(tzinfo=UTC),
        window_seconds=int(seconds),
        hop_seconds=int(hop),
        grouping=grouping,
        dims=dims,
        requests=int(requests),
        errors=int(errors),
        error_rate=float(error_rate),
        latency_p50_ms=float(p50),
        latency_p90_ms=float(p90),
        latency_p95_ms=float(p95),
        latency_p99_ms=float(p99),
        latency_max_ms=float(lat_max),
        ttft_p50_ms=float(t50),
        ttft_p95_ms=float(t95),
        ttft_p99_ms=float(t99),
        input_tokens=int(tin),
        output_tokens=int(tout),
        cost_usd=float(cost),
        unpriced_requests=int(unpriced),
        late_events=int(late),
        latency_sketch=latency,
        ttft_sketch=ttft,
    )


def restore_alert_history(client: SerialClient, engine: AlertEngine, *, hours: float) -> int:
    """Warm baselines and SLO burn sums from the windows stored in the last
    ``hours`` before the newest one, without changing alert state. Returns the
    number of windows replayed."""
    windows = sorted(engine.rules.windows)
    rows = client.rows(
        f"SELECT {_WINDOW_FIELDS} FROM window_stats "
        "WHERE window_end >= (SELECT max(window_end) FROM window_stats) "
        "- toIntervalSecond({s:UInt32})"
        + (" AND window_seconds IN {w:Array(UInt32)}" if windows else "")
        + " ORDER BY window_end",
        {"s": int(hours * 3600), "w": windows},
    )
    results = [_result_from_row(r) for r in rows]
    engine.warm(s for r in results for s in engine.signals_for(r))
    return len(results)


def restore_baselines(client: SerialClient, monitor: DriftMonitor) -> int:
    """Install the newest stored baseline of every drift series and signal."""
    grouping = ",".join(monitor.grouping)
    n = 0
    for group, _series, signal, labels, _bid, payload in client.rows(LATEST_BASELINES_SQL):
        if group != grouping:
            continue  # learned under another grouping: does not name our series
        try:
            monitor.restore_baseline(labels, signal, Reference.from_json(payload))
        except LlmpulseError:
            continue  # more series than max_series now: they relearn
        n += 1
    return n
