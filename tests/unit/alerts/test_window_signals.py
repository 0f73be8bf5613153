"""The engine's batch screen of closed windows gives exactly the per-window signals."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from llmpulse.alerts.engine import AlertEngine
from llmpulse.alerts.rules import load_rules
from llmpulse.alerts.window_reads import WindowReads
from llmpulse.processors.windows import DEFAULT_GROUPINGS, DEFAULT_SPECS, WindowAggregator
from llmpulse.processors.windows._batch import EventBatch
from llmpulse.stages.windows import window_from_row

T0 = 1_767_225_600_000  # 2026-01-01, a whole hour: some windows are burn-rate tiles


def _signals_key(signals: list[object]) -> list[tuple[object, ...]]:
    return [
        (s.name, tuple(sorted(s.labels.items())), s.window_seconds, s.event_time, s.value)  # type: ignore[attr-defined]
        for s in signals
    ]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_series=st.sampled_from([1, 3, 40]),
    n_events=st.integers(1, 400),
)
def test_screened_signals_equal_the_per_window_ones(
    seed: int, n_series: int, n_events: int
) -> None:
    rng = np.random.default_rng(seed)
    # Few series get windows over every min_requests; many get only small ones.
    records = [
        {
            "ts_ms": T0 + int(t),
            "latency_ms": float(rng.lognormal(5.5, 1.0)),
            "is_error": bool(rng.random() < 0.1),
            "cost_usd": 0.001,
            "model": "m1",
            "service": "svc",
            "endpoint": f"/e{rng.integers(n_series)}",
            "tenant": f"t{rng.integers(n_series)}",
        }
        for t in np.sort(rng.uniform(0, 900_000, n_events))
    ]
    agg = WindowAggregator(DEFAULT_SPECS, DEFAULT_GROUPINGS, allowed_lateness_s=0)
    results = agg.add(EventBatch.from_records(records)) + agg.flush_all()
    engine = AlertEngine(load_rules())
    expected = [s for r in results for s in engine.signals_for(r)]
    assert _signals_key(WindowReads(load_rules()).for_windows(results)) == _signals_key(expected)


def test_results_read_back_from_the_store_are_not_screened() -> None:
    agg = WindowAggregator(DEFAULT_SPECS, DEFAULT_GROUPINGS, allowed_lateness_s=0)
    event = {"ts_ms": T0 + 1, "latency_ms": 900.0, "model": "m", "endpoint": "/e"}
    agg.add(EventBatch.from_records([event]))
    # A burn-rate tile of the default rules' grouping: it has signals.
    (tile,) = [
        r
        for r in agg.flush_all()
        if r.grouping == "service+endpoint+model"
        and r.window_seconds == 60
        and r.window_start_ms % 60_000 == 0
    ]
    engine = AlertEngine(load_rules())
    expected = _signals_key(engine.signals_for(tile))
    assert expected
    # The same window without emission columns goes through signals_for as it is.
    copy = window_from_row(
        (
            tile.window_start, tile.window_end, tile.window_seconds, tile.hop_seconds,
            tile.grouping, *tile.dims.values(), tile.requests, tile.errors,
            tile.error_rate, tile.latency_p50_ms, tile.latency_p90_ms,
            tile.latency_p95_ms, tile.latency_p99_ms, tile.latency_max_ms,
            tile.ttft_p50_ms, tile.ttft_p95_ms, tile.ttft_p99_ms, tile.input_tokens,
            tile.output_tokens, tile.cost_usd, tile.unpriced_requests, tile.late_events,
            *tile.latency_sketch.to_arrays(), tile.latency_sketch.zero_count,
            tile.latency_sketch.min, *tile.ttft_sketch.to_arrays(),
            tile.ttft_sketch.zero_count,
        )
    )  # fmt: skip
    assert _signals_key(WindowReads(load_rules()).for_windows([copy])) == expected
    assert _signals_key(WindowReads(load_rules()).for_windows([tile])) == expected
