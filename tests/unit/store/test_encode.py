"""Arrow encoding of window rows reads the same sketches as the result objects."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import numpy as np

from llmpulse.processors.sketch import LogHistogram
from llmpulse.processors.windows import (
    EventBatch,
    GroupingSet,
    WindowAggregator,
    WindowSpec,
    sketch_rows,
    window_id,
)
from llmpulse.store.encode import windows_table


def _results() -> list:
    rng = np.random.default_rng(3)
    n = 5_000
    batch = EventBatch(
        ts_ms=np.sort(rng.integers(0, 600_000, n)) + 1_767_225_600_000,
        latency_ms=np.where(rng.random(n) < 0.05, 0.0, rng.lognormal(6, 1, n)),
        ttft_ms=np.where(rng.random(n) < 0.3, np.nan, rng.lognormal(4, 1, n)),
        is_error=rng.random(n) < 0.1,
        input_tokens=rng.integers(0, 100, n),
        output_tokens=rng.integers(0, 100, n),
        cost_usd=rng.random(n),
        dims={"model": rng.choice(["a", "b", "c"], n).astype(object)},
    )
    agg = WindowAggregator([WindowSpec(60, 10), WindowSpec(300, 60)], [GroupingSet(("model",))])
    out = agg.add(batch) + agg.flush_all()
    assert len(out) > 50
    return out


def test_sketch_rows_match_each_results_sketch() -> None:
    results = _results()
    # mix lazily held sketches, materialised ones and results built by hand
    _ = results[1].latency_sketch
    results[2] = dataclasses.replace(results[2], ttft_sketch=LogHistogram())
    for which, rows in zip(("latency", "ttft"), sketch_rows(results), strict=True):
        for i, r in enumerate(results):
            h = r.latency_sketch if which == "latency" else r.ttft_sketch
            keys, counts = h.to_arrays()
            a, b = rows.offsets[i], rows.offsets[i + 1]
            assert rows.keys[a:b].tolist() == keys.tolist()
            assert rows.counts[a:b].tolist() == counts.tolist()
            assert int(rows.zeros[i]) == h.zero_count
            assert rows.mins[i] == (h.min if h.count else 0.0)


def test_windows_table_holds_every_field() -> None:
    results = _results()
    now = datetime(2026, 1, 2, tzinfo=UTC)
    table = windows_table(results, [window_id(r) for r in results], now)
    rows = table.to_pylist()
    for r, row in zip(results, rows, strict=True):
        assert row["window_id"] == window_id(r)
        assert row["window_start"] == r.window_start and row["window_end"] == r.window_end
        assert row["model"] == r.dims["model"] and row["tenant"] == ""
        assert row["requests"] == r.requests and row["errors"] == r.errors
        assert row["latency_p99_ms"] == r.latency_p99_ms
        assert row["cost_usd"] == r.cost_usd and row["late_events"] == r.late_events
        if np.isnan(r.ttft_p50_ms):
            assert row["ttft_p50_ms"] is None
        else:
            assert row["ttft_p50_ms"] == r.ttft_p50_ms
        h = LogHistogram.from_arrays(
            row["latency_sketch_keys"],
            row["latency_sketch_counts"],
            zero_count=row["latency_sketch_zeros"],
            min=row["latency_min_ms"],
            max=r.latency_max_ms,
        )
        assert h.count == r.requests
        assert h.quantile(0.95) == r.latency_p95_ms
