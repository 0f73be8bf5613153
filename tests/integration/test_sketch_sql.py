"""The ClickHouse sketch functions against LogHistogram, on a real chDB engine."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmpulse.processors.sketch import LogHistogram
from llmpulse.processors.sketch_sql import (
    CREATE_FUNCTIONS,
    DROP_FUNCTIONS,
    ROLLUP_EXAMPLE,
    SKETCH_ALPHA,
    merged_quantile_sql,
)
from llmpulse.processors.windows import EventBatch, GroupingSet, WindowAggregator, WindowSpec

clickhouse_connect = pytest.importorskip("clickhouse_connect")

LEVELS = (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)
TABLE = "sketch_rows"
COLUMNS = [
    "grp",
    "latency_sketch_keys",
    "latency_sketch_counts",
    "latency_sketch_zeros",
    "latency_min_ms",
    "latency_max_ms",
]


@pytest.fixture(scope="module")
def client(chdb_dir: Path) -> Iterator[Any]:
    # chDB opens one path per process: the session's store, a database of our own.
    from llmpulse.store.client import connect

    c = connect(f"chdb://{chdb_dir}", "t_sketch_sql")
    for stmt in DROP_FUNCTIONS:
        c.command(stmt)
    for stmt in CREATE_FUNCTIONS:
        c.command(stmt)
    c.command(f"DROP TABLE IF EXISTS {TABLE}")
    c.command(
        f"""CREATE TABLE {TABLE} (
            grp UInt32,
            latency_sketch_keys Array(Int32),
            latency_sketch_counts Array(UInt64),
            latency_sketch_zeros UInt64,
            latency_min_ms Float64,
            latency_max_ms Float64
        ) ENGINE = Memory"""
    )
    yield c
    c.command(f"DROP TABLE IF EXISTS {TABLE}")


def sketch_row(grp: int, h: LogHistogram) -> list[Any]:
    keys, counts = h.to_arrays()
    return [grp, keys.tolist(), counts.tolist(), h.zero_count, h.min, h.max]


def merged_by_sql(client: Any, q: float) -> dict[int, tuple[float, float]]:
    sql = (
        f"SELECT grp, {merged_quantile_sql('latency', q)}, "
        f"{merged_quantile_sql('latency', q, min_expr='min(latency_min_ms)', max_expr='max(latency_max_ms)')} "
        f"FROM {TABLE} GROUP BY grp"
    )
    return {int(g): (float(a), float(b)) for g, a, b in client.query(sql).result_rows}


def close(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= 1e-9 * abs(b)


def values(seed: int, n: int, kind: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == 0:
        x = rng.lognormal(rng.uniform(0, 8), rng.uniform(0.2, 2.5), n)
    elif kind == 1:
        x = (rng.pareto(1.1, n) + 1) * 10
    else:
        x = rng.choice(np.array([0.0, 1e-9, 3.0, 3.0, 1e9]), n)
    x[rng.random(n) < 0.05] = 0.0
    return x


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    groups=st.lists(
        st.lists(
            st.tuples(st.integers(0, 2**31), st.integers(1, 400), st.integers(0, 2)),
            min_size=1,
            max_size=6,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_sql_merge_matches_python_merge_and_exact(
    client: Any, groups: list[list[tuple[int, int, int]]]
) -> None:
    client.command(f"TRUNCATE TABLE {TABLE}")
    rows, merged, raw = [], {}, {}
    for grp, parts in enumerate(groups):
        m = LogHistogram(SKETCH_ALPHA)
        xs = []
        for seed, n, kind in parts:
            x = values(seed, n, kind)
            h = LogHistogram(SKETCH_ALPHA)
            h.update_many(x)
            rows.append(sketch_row(grp, h))
            m.merge(h)
            xs.append(x)
        merged[grp] = m
        raw[grp] = np.concatenate(xs)
    client.insert(TABLE, rows, column_names=COLUMNS)
    for q in LEVELS:
        by_sql = merged_by_sql(client, q)
        assert set(by_sql) == set(merged)
        for grp, (plain, bounded) in by_sql.items():
            m = merged[grp]
            assert close(plain, m.bucket_quantile(q)), (q, plain, m.bucket_quantile(q))
            assert close(bounded, m.quantile(q)), (q, bounded, m.quantile(q))
            exact = float(np.quantile(raw[grp], q, method="lower"))
            if exact == 0.0:
                assert bounded == 0.0
            else:
                assert abs(bounded - exact) / exact <= 0.01
                assert abs(plain - exact) / exact <= 0.01 * (1 + 1e-9)


def test_window_result_sketches_roll_up_in_sql(client: Any) -> None:
    """What the store will do: window rows written, then merged per day in SQL."""
    rng = np.random.default_rng(11)
    n = 5000
    t0 = 1_767_225_600_000
    ts = np.sort(rng.integers(0, 600_000, n)) + t0
    lat = rng.lognormal(5, 1.2, n)
    lat[:20] = 0.0
    batch = EventBatch(
        ts_ms=ts,
        latency_ms=lat,
        ttft_ms=np.full(n, np.nan),
        is_error=np.zeros(n, dtype=bool),
        input_tokens=np.zeros(n, dtype=np.int64),
        output_tokens=np.zeros(n, dtype=np.int64),
        cost_usd=np.full(n, np.nan),
        dims={"model": np.array(["m1", "m2"], dtype=object)[rng.integers(0, 2, n)]},
    )
    agg = WindowAggregator([WindowSpec(60, 60)], [GroupingSet(("model",))], allowed_lateness_s=0)
    results = agg.add(batch) + agg.flush_all()
    client.command(f"TRUNCATE TABLE {TABLE}")
    client.insert(
        TABLE,
        [sketch_row(0 if r.dims["model"] == "m1" else 1, r.latency_sketch) for r in results],
        column_names=COLUMNS,
    )
    for q in (0.5, 0.95, 0.99):
        for grp, (_, bounded) in merged_by_sql(client, q).items():
            exact = float(np.quantile(lat[batch.dims["model"] == f"m{grp + 1}"], q, method="lower"))
            assert abs(bounded - exact) / exact <= 0.01


def test_edge_cases(client: Any) -> None:
    one = client.query(
        "SELECT llmpulse_sketch_quantile(CAST(map(), 'Map(Int32, UInt64)'), toUInt64(0), 0.5), "
        "llmpulse_sketch_quantile(CAST(map(), 'Map(Int32, UInt64)'), toUInt64(4), 0.99), "
        "llmpulse_sketch_quantile_bounded(map(toInt32(35), toUInt64(1)), toUInt64(0), 0.5, 1.4, 1.4)"
    ).result_rows[0]
    assert math.isnan(one[0])  # empty sketch
    assert one[1] == 0.0  # zeros only
    assert one[2] == 1.4  # one value: its exact min/max


def test_rollup_example_runs(client: Any) -> None:
    client.command("DROP TABLE IF EXISTS window_tiles")
    client.command(
        """CREATE TABLE window_tiles (
            window_start DateTime64(3, 'UTC'), window_seconds UInt32, grouping String,
            service String, requests UInt64, latency_max_ms Float64,
            latency_sketch_keys Array(Int32), latency_sketch_counts Array(UInt64),
            latency_sketch_zeros UInt64
        ) ENGINE = Memory"""
    )
    try:
        client.command(
            "INSERT INTO window_tiles VALUES ('2026-01-01 00:01:00', 60, 'service+endpoint+model', "
            "'api', 3, 9.0, [0, 35], [1, 1], 1)"
        )
        [row] = client.query(ROLLUP_EXAMPLE).result_rows
        assert row[1] == "api" and row[2] == 3
    finally:
        client.command("DROP TABLE IF EXISTS window_tiles")


def test_merged_quantile_sql_validates() -> None:
    with pytest.raises(ValueError):
        merged_quantile_sql("cost", 0.5)
    with pytest.raises(ValueError):
        merged_quantile_sql("latency", 2.0)
