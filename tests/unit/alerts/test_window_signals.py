"""The engine's batch screen of closed windows gives exactly the per-window signals."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from llmpulse.alerts.engine import AlertEngine
from llmpulse.alerts.rules import load_rules
from llmpulse.alerts.signals import Signal, fraction_above, fractions_above
from llmpulse.alerts.window_reads import WindowReads
from llmpulse.processors.windows import DEFAULT_GROUPINGS, DEFAULT_SPECS, WindowAggregator
from llmpulse.processors.windows._batch import EventBatch
from llmpulse.processors.windows._results import emission_runs
from llmpulse.stages.windows import window_from_row

T0 = 1_767_225_600_000  # 2026-01-01, a whole hour: some windows are burn-rate tiles


def _signals_key(signals: list[object]) -> list[tuple[object, ...]]:
    return [
        (
            s.name,  # type: ignore[attr-defined]
            tuple(sorted(s.labels.items())),  # type: ignore[attr-defined]
            s.series,  # type: ignore[attr-defined]
            s.window_seconds,  # type: ignore[attr-defined]
            s.event_time,  # type: ignore[attr-defined]
            s.value,  # type: ignore[attr-defined]
            s.requests,  # type: ignore[attr-defined]
            tuple(sorted(s.extra.items())),  # type: ignore[attr-defined]
        )
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
    found = WindowReads(load_rules()).for_windows(results)
    assert _signals_key(found) == _signals_key(expected)
    for s in found:  # made without Signal.__init__, their series given: the same signals
        assert s == Signal(**{f.name: getattr(s, f.name) for f in fields(Signal)})
        assert s.series == tuple(sorted(s.labels.items()))


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


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_events=st.integers(1, 300),
    threshold=st.one_of(
        st.sampled_from([-1.0, 0.0, 1e-9, 800.0]), st.floats(0.0, 5_000.0, allow_nan=False)
    ),
    zeros=st.booleans(),
)
def test_column_shares_equal_the_per_sketch_ones(
    seed: int, n_events: int, threshold: float, zeros: bool
) -> None:
    rng = np.random.default_rng(seed)
    values = rng.lognormal(5.5, 1.0, n_events).round(rng.integers(0, 3))
    if zeros:
        values[rng.random(n_events) < 0.2] = 0.0
    if n_events > 2:  # a threshold on a value seen (the edges of the min/max rules)
        values[0] = threshold if threshold >= 0 else values[0]
    records = [
        {
            "ts_ms": T0 + int(t),
            "latency_ms": float(v),
            "model": "m1",
            "endpoint": f"/e{rng.integers(5)}",
        }
        for t, v in zip(np.sort(rng.uniform(0, 300_000, n_events)), values, strict=True)
    ]
    agg = WindowAggregator(DEFAULT_SPECS, DEFAULT_GROUPINGS, allowed_lateness_s=0)
    results = agg.add(EventBatch.from_records(records)) + agg.flush_all()
    runs, _ = emission_runs(results)
    for em, where, js in runs:
        shares = fractions_above(em.sketches, threshold)[js].tolist()
        expected = [fraction_above(results[i], threshold) for i in where.tolist()]
        assert np.array_equal(shares, expected, equal_nan=True)
