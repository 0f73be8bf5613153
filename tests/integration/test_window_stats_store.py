"""Window statistics through the real pipeline and the ClickHouse engine."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np

from llmpulse.processors.traces import RawMessage
from llmpulse.processors.windows import DIMENSIONS
from llmpulse.replay import replay_messages
from llmpulse.runtime import build_pipeline
from llmpulse.settings import BudgetSettings, Settings
from llmpulse.store.client import SerialClient
from llmpulse.synth.traffic import Incident, TrafficConfig, TrafficGenerator
from tests.helpers import raw

START_MS = 1_767_225_600_000
NOW = datetime(2026, 3, 1, tzinfo=UTC)


def stream(n: int, seed: int = 3) -> list[RawMessage]:
    gen = TrafficGenerator(
        TrafficConfig(include_text=False),
        seed=seed,
        start_ms=START_MS,
        rate_per_s=20.0,
        incidents=[Incident("latency_regression", 120, 60, service="chat-api", magnitude=5.0)],
    )
    return [RawMessage(raw(e), f"replay:test:{i}") for i, e in enumerate(gen.events(n))]


def replay(settings: Settings, client: SerialClient, msgs: list[RawMessage]) -> int:
    pipeline = build_pipeline(settings, client, clock=lambda: NOW, wall=lambda: 0.0)
    return replay_messages(pipeline, msgs, batch_size=700).stats.windows


def test_windows_match_exact_percentiles_and_replay_is_idempotent(
    settings: Settings, client: SerialClient
) -> None:
    msgs = stream(6000)
    written = replay(settings, client, msgs)
    assert written > 0
    assert replay(settings, client, msgs) == 0  # the second replay changes nothing
    rows = client.query(
        "SELECT window_start, window_end, grouping, "
        + ", ".join(DIMENSIONS)
        + ", requests, errors, latency_p50_ms, latency_p95_ms, latency_p99_ms, latency_max_ms "
        "FROM window_stats"
    )
    cols, data = rows
    assert len(data) == written
    events = client.query(
        "SELECT toUnixTimestamp64Milli(timestamp), latency_ms, status = 'error', "
        + ", ".join(DIMENSIONS)
        + " FROM traces"
    )[1]
    ts = np.array([e[0] for e in events])
    lat = np.array([e[1] for e in events])
    err = np.array([e[2] for e in events])
    dim_cols = {
        d: np.array([e[3 + i] for e in events], dtype=object) for i, d in enumerate(DIMENSIONS)
    }
    checked = 0
    for r in data:
        row = dict(zip(cols, r, strict=True))
        lo = int(row["window_start"].replace(tzinfo=UTC).timestamp() * 1000)
        hi = int(row["window_end"].replace(tzinfo=UTC).timestamp() * 1000)
        mask = (ts >= lo) & (ts < hi)
        for d in row["grouping"].split("+"):
            mask &= dim_cols[d] == row[d]
        x = lat[mask]
        assert row["requests"] == len(x) and row["errors"] == int(err[mask].sum())
        for q, name in (
            (0.5, "latency_p50_ms"),
            (0.95, "latency_p95_ms"),
            (0.99, "latency_p99_ms"),
        ):
            exact = float(np.quantile(x, q, method="lower"))
            assert math.isclose(row[name], exact, rel_tol=0.01), (row, q, exact)
        assert row["latency_max_ms"] == x.max()
        checked += 1
    assert checked == written


def test_rollup_from_tiles_with_sketch_function_is_within_one_percent(
    settings: Settings, client: SerialClient
) -> None:
    replay(settings, client, stream(4000, seed=5))
    sql = """
        SELECT service,
               sum(requests) AS n,
               llmpulse_sketch_quantile(
                   sumMap(mapFromArrays(latency_sketch_keys, latency_sketch_counts)),
                   sum(latency_sketch_zeros), 0.99) AS p99
        FROM window_tiles
        WHERE window_seconds = 60 AND grouping = 'service+endpoint+model'
        GROUP BY service ORDER BY service"""
    got = client.rows(sql)
    exact = client.rows(
        "SELECT service, count(), groupArray(latency_ms) FROM traces GROUP BY service ORDER BY service"
    )
    assert [g[0] for g in got] == [e[0] for e in exact]
    for (service, n, p99), (_, count, values) in zip(got, exact, strict=True):
        assert n == count, service
        truth = float(np.quantile(np.array(values), 0.99, method="lower"))
        assert math.isclose(p99, truth, rel_tol=0.01), (service, p99, truth)


def test_budget_usage_view_and_tracker(settings: Settings, client: SerialClient) -> None:
    s = settings.model_copy(
        update={
            "budgets": [BudgetSettings(scope="tenant", name="acme", period="day", limit_usd=0.01)]
        }
    )
    pipeline = build_pipeline(s, client, clock=lambda: NOW, wall=lambda: 0.0)
    out = pipeline.handle(stream(2000))
    statuses = [
        b for b in out.signals if b.name == "budget_usage_ratio" and b.labels["name"] == "acme"
    ]
    assert statuses and statuses[-1].value > 1
    usage = client.rows("SELECT name, period, spent_usd, usage_ratio FROM budget_usage")
    assert usage and usage[0][0] == "acme"
    spent = client.rows("SELECT sum(cost_usd) FROM traces WHERE tenant = 'acme'")[0][0]
    assert math.isclose(usage[0][2], spent, rel_tol=1e-9)
    assert math.isclose(statuses[-1].extra["spent_usd"], spent, rel_tol=1e-9)
