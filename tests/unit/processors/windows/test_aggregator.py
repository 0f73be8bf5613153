"""Event-time windows against a brute-force model of the same semantics.

The model: event ``i`` arrives when the watermark is ``W_i = max(ts of earlier
events) - lateness``; it belongs to every hop window ``[s, s + length)`` holding its
timestamp whose end is still ``> W_i``. An event with no such window (for a spec) is
late for that spec and is owed to the first window of its series ending after
``W_i``. Everything is flushed at the end.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import pickle
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llmpulse.processors.windows as wins
from llmpulse.errors import ConfigError, ValidationError
from llmpulse.processors.windows import (
    DEFAULT_GROUPINGS,
    DEFAULT_SPECS,
    DIMENSIONS,
    OTHER,
    EventBatch,
    GroupingSet,
    WindowAggregator,
    WindowResult,
    WindowSpec,
)
from llmpulse.processors.windows import _panes as windows_module

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, so epoch-sized numbers are exercised
SPECS = (WindowSpec(20, 5), WindowSpec(30, 10))
GROUPINGS = DEFAULT_GROUPINGS
LAT_LEVELS = {
    "latency_p50_ms": 0.5,
    "latency_p90_ms": 0.9,
    "latency_p95_ms": 0.95,
    "latency_p99_ms": 0.99,
}
TTFT_LEVELS = {"ttft_p50_ms": 0.5, "ttft_p95_ms": 0.95, "ttft_p99_ms": 0.99}
SETTINGS = settings(max_examples=130, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- data ----------------------------------------------------------------------------

latencies = st.one_of(
    st.just(0.0),
    st.sampled_from([1e-9, 1e9, 1.0, 250.0, 250.0]),
    st.floats(min_value=1e-9, max_value=1e9, allow_nan=False, allow_subnormal=False),
    st.floats(min_value=1.0, max_value=5_000.0),
)


@st.composite
def event_lists(
    draw: st.DrawFn, max_events: int = 80, span_ms: int = 150_000
) -> list[dict[str, Any]]:
    n = draw(st.integers(1, max_events))
    events = []
    for _ in range(n):
        ttft = draw(st.one_of(st.none(), latencies))
        cost = draw(st.one_of(st.none(), st.floats(min_value=0.0, max_value=5.0)))
        events.append(
            {
                "ts_ms": T0 + draw(st.integers(0, span_ms)),
                "latency_ms": draw(latencies),
                "ttft_ms": ttft,
                "is_error": draw(st.booleans()),
                "input_tokens": draw(st.integers(0, 100_000)),
                "output_tokens": draw(st.integers(0, 10_000)),
                "cost_usd": cost,
                "service": draw(st.sampled_from(["api", "batch"])),
                "endpoint": draw(st.sampled_from(["/chat", "/embed", ""])),
                "model": draw(st.sampled_from(["m1", "m2", "m3"])),
                "tenant": draw(st.sampled_from(["t1", "t2", "t3", ""])),
            }
        )
    if draw(st.booleans()):
        # mostly in order with a little jitter, the usual shape of a trace stream
        events.sort(key=lambda e: e["ts_ms"] + draw(st.integers(0, 3_000)))
    return events


def splits(n: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, n), max_size=6).map(lambda cuts: sorted({0, n, *cuts}))


def feed(
    agg: WindowAggregator, events: Sequence[dict[str, Any]], cuts: Sequence[int] | None = None
) -> list[WindowResult]:
    cuts = cuts or [0, len(events)]
    out: list[WindowResult] = []
    for a, b in itertools.pairwise(cuts):
        out += agg.add(EventBatch.from_records(events[a:b]))
    return out + agg.flush_all()


# --- the model -----------------------------------------------------------------------


@dataclass
class Expected:
    events: list[dict[str, Any]]
    late: int = 0


def series_of(event: dict[str, Any], grouping: GroupingSet) -> tuple[str, ...]:
    return tuple(event.get(d) or "" for d in grouping.dims)


def model(
    events: Sequence[dict[str, Any]],
    specs: Sequence[WindowSpec] = SPECS,
    groupings: Sequence[GroupingSet] = GROUPINGS,
    lateness_ms: int = 0,
) -> tuple[dict[tuple[Any, ...], Expected], dict[WindowSpec, int], int]:
    windows: dict[tuple[Any, ...], Expected] = {}
    late_rows: list[tuple[WindowSpec, GroupingSet, tuple[str, ...], int]] = []
    late_by_spec: dict[WindowSpec, int] = defaultdict(int)
    late_everywhere = 0
    seen_max: int | None = None
    for e in events:
        wm = -(2**62) if seen_max is None else seen_max - lateness_ms
        t = e["ts_ms"]
        late_for_all = True
        for spec in specs:
            hop, length = spec.hop_ms, spec.length_ms
            first = t // hop * hop
            starts = [first - j * hop for j in range(length // hop)]
            open_starts = [s for s in starts if s + length > wm]
            if not open_starts:
                late_by_spec[spec] += 1
                late_rows.extend((spec, g, series_of(e, g), wm) for g in groupings)
                continue
            late_for_all = False
            for g in groupings:
                for s in open_starts:
                    windows.setdefault(
                        (spec, g.name, series_of(e, g), s), Expected([])
                    ).events.append(e)
        late_everywhere += late_for_all
        seen_max = t if seen_max is None else max(seen_max, t)
    for spec, g, series, wm in late_rows:
        owed = [
            key
            for key in windows
            if key[:3] == (spec, g.name, series) and key[3] + spec.length_ms > wm
        ]
        if owed:
            windows[min(owed, key=lambda k: k[3])].late += 1
    return windows, dict(late_by_spec), late_everywhere


def result_key(r: WindowResult, specs: Sequence[WindowSpec] = SPECS) -> tuple[Any, ...]:
    spec = next(s for s in specs if (s.length_s, s.hop_s) == (r.window_seconds, r.hop_seconds))
    grouping = GroupingSet.parse(r.grouping)
    return (spec, r.grouping, tuple(r.dims[d] for d in grouping.dims), r.window_start_ms)


def rel_err(estimate: float, exact: float) -> float:
    if exact == 0.0:
        return 0.0 if estimate == 0.0 else math.inf
    return abs(estimate - exact) / exact


def check_result(r: WindowResult, exp: Expected) -> None:
    ev = exp.events
    lat = np.array([e["latency_ms"] for e in ev])
    ttft = np.array([e["ttft_ms"] for e in ev if e["ttft_ms"] is not None], dtype=np.float64)
    assert r.requests == len(ev)
    assert r.errors == sum(e["is_error"] for e in ev)
    assert r.error_rate == r.errors / r.requests
    assert r.input_tokens == sum(e["input_tokens"] for e in ev)
    assert r.output_tokens == sum(e["output_tokens"] for e in ev)
    assert r.unpriced_requests == sum(e["cost_usd"] is None for e in ev)
    priced = [e["cost_usd"] for e in ev if e["cost_usd"] is not None]
    assert r.cost_usd == pytest.approx(math.fsum(priced), rel=1e-9, abs=1e-9)
    assert r.latency_max_ms == lat.max()
    assert r.late_events == exp.late
    for name, q in LAT_LEVELS.items():
        exact = float(np.quantile(lat, q, method="lower"))
        assert rel_err(getattr(r, name), exact) <= 0.01, (name, getattr(r, name), exact)
        assert getattr(r, name) == pytest.approx(r.latency_sketch.quantile(q), rel=1e-12)
    for name, q in TTFT_LEVELS.items():
        if ttft.size == 0:
            assert math.isnan(getattr(r, name))
        else:
            exact = float(np.quantile(ttft, q, method="lower"))
            assert rel_err(getattr(r, name), exact) <= 0.01, (name, getattr(r, name), exact)
    assert r.latency_sketch.count == len(ev) and r.ttft_sketch.count == ttft.size
    assert r.latency_sketch.min == lat.min() and r.latency_sketch.max == lat.max()
    assert set(r.dims) == set(DIMENSIONS)
    assert (r.window_end.timestamp() - r.window_start.timestamp()) == r.window_seconds
    assert r.window_start.tzinfo is UTC


def canonical(results: Sequence[WindowResult]) -> list[tuple[Any, ...]]:
    """Everything in a result, NaN-safe; sketch sums rounded (float order)."""
    rows = []
    for r in results:
        values = []
        for f in WindowResult.__dataclass_fields__:
            v = getattr(r, f)
            if f in ("latency_sketch", "ttft_sketch"):
                keys, counts = v.to_arrays()
                v = (keys.tolist(), counts.tolist(), v.zero_count, v.count, str(v.min), str(v.max))
            elif f == "dims":
                v = tuple(sorted(v.items()))
            elif isinstance(v, float) and math.isnan(v):
                v = "nan"
            values.append(v)
        rows.append(tuple(values))
    return rows


# --- properties ----------------------------------------------------------------------


@pytest.mark.slow  # seconds long: run by `make test`, not by `make unit`
@SETTINGS
@given(events=event_lists(), lateness_s=st.sampled_from([0, 3, 10, 30]), data=st.data())
def test_windows_match_the_model(
    events: list[dict[str, Any]], lateness_s: int, data: st.DataObject
) -> None:
    agg = WindowAggregator(SPECS, GROUPINGS, allowed_lateness_s=lateness_s)
    results = feed(agg, events, data.draw(splits(len(events))))
    expected, late_by_spec, late_everywhere = model(events, lateness_ms=lateness_s * 1000)
    got = {result_key(r): r for r in results}
    assert len(got) == len(results), "a window was emitted twice"
    assert set(got) == set(expected)
    for key, r in got.items():
        check_result(r, expected[key])
    assert agg.late_events_by_spec == {s: late_by_spec.get(s, 0) for s in SPECS}
    assert agg.late_events == late_everywhere
    assert agg.open_panes == 0
    # windows come out in end order
    ends = [r.window_end for r in results]
    assert ends == sorted(ends)


@pytest.mark.slow  # seconds long: run by `make test`, not by `make unit`
@SETTINGS
@given(events=event_lists(max_events=120), lateness_s=st.sampled_from([0, 5, 30]), data=st.data())
def test_any_batch_split_gives_the_same_results(
    events: list[dict[str, Any]], lateness_s: int, data: st.DataObject
) -> None:
    whole = feed(WindowAggregator(SPECS, GROUPINGS, allowed_lateness_s=lateness_s), events)
    cuts = data.draw(splits(len(events)))
    split = feed(WindowAggregator(SPECS, GROUPINGS, allowed_lateness_s=lateness_s), events, cuts)
    assert canonical(split) == canonical(whole)
    for a, b in zip(split, whole, strict=True):
        assert a.latency_sketch.sum == pytest.approx(b.latency_sketch.sum, rel=1e-9)


# How window sketches are merged: a sliding dense grid (forced by allowing any
# number of grid cells per row), sorting (forced by allowing none), and dense
# grids taken in blocks of series (a tiny cell budget).
MERGE_STRATEGIES = {
    # Each also picks one way to merge a window's counters (dense or cell by cell).
    "grid": {"_DENSE_CELLS_PER_ROW": 10**9, "_GATHER_BELOW": 0.0},
    "sorted": {"_DENSE_CELLS_PER_ROW": 0, "_GATHER_BELOW": 2.0},
    "blocks": {"_DENSE_CELLS_PER_ROW": 10**9, "_MAX_GRID_CELLS": 64},
}


def feed_with(
    strategy: str,
    events: Sequence[dict[str, Any]],
    cuts: Sequence[int] | None = None,
    **kwargs: Any,
) -> list[WindowResult]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in MERGE_STRATEGIES[strategy].items():
            mp.setattr(windows_module, name, value)
        return feed(WindowAggregator(SPECS, GROUPINGS, **kwargs), events, cuts)


@pytest.mark.slow  # seconds long: run by `make test`, not by `make unit`
@SETTINGS
@given(
    events=event_lists(max_events=120),
    lateness_s=st.sampled_from([0, 5, 30]),
    max_series=st.sampled_from([2, 10_000]),
    data=st.data(),
)
def test_merge_strategies_give_the_same_results(
    events: list[dict[str, Any]], lateness_s: int, max_series: int, data: st.DataObject
) -> None:
    cuts = data.draw(splits(len(events)))
    kwargs = {"allowed_lateness_s": lateness_s, "max_series": max_series}
    grid = feed_with("grid", events, cuts, **kwargs)
    assert canonical(feed_with("sorted", events, cuts, **kwargs)) == canonical(grid)
    assert canonical(feed_with("blocks", events, cuts, **kwargs)) == canonical(grid)
    if max_series == 10_000:
        expected = model(events, lateness_ms=lateness_s * 1000)[0]
        got = {result_key(r): r for r in grid}
        assert set(got) == set(expected)
        for key, r in got.items():
            check_result(r, expected[key])


def test_sliding_grid_follows_the_key_range_and_new_series() -> None:
    # Latencies drift over nine orders of magnitude and series keep appearing,
    # so the grid's key range and width change between emissions.
    rng = np.random.default_rng(7)
    events = [
        {
            **ev(t, latency=float(10 ** (t / 40 - 4) * rng.uniform(1, 2))),
            "ttft_ms": float(rng.uniform(0, 5)) if t % 3 else None,
            "tenant": f"t{int(t) // 25}",
            "model": f"m{int(t) % 3}",
            "is_error": bool(t % 7 < 1),
            "input_tokens": 10,
            "output_tokens": 2,
            "cost_usd": None if t % 5 < 1 else 0.25,
        }
        for t in np.sort(rng.uniform(0, 400, 3000))
    ]
    cuts = [*range(0, len(events), 250), len(events)]
    grid = feed_with("grid", events, cuts, allowed_lateness_s=3)
    assert canonical(feed_with("sorted", events, cuts, allowed_lateness_s=3)) == canonical(grid)
    expected = model(events, lateness_ms=3000)[0]
    assert {result_key(r) for r in grid} == set(expected)
    for r in grid:
        check_result(r, expected[result_key(r)])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_heavy_tailed_windows_within_one_percent(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 3000
    ts = np.sort(rng.integers(0, 120_000, n)) + T0
    lat = np.where(rng.random(n) < 0.5, rng.lognormal(5, 2, n), (rng.pareto(1.2, n) + 1) * 50)
    model_names = np.array(["m1", "m2"], dtype=object)[rng.integers(0, 2, n)]
    batch = EventBatch(
        ts_ms=ts,
        latency_ms=lat,
        ttft_ms=np.where(rng.random(n) < 0.3, np.nan, lat / 3),
        is_error=rng.random(n) < 0.1,
        input_tokens=rng.integers(0, 5000, n),
        output_tokens=rng.integers(0, 500, n),
        cost_usd=np.where(rng.random(n) < 0.1, np.nan, rng.uniform(0, 0.1, n)),
        dims={"model": model_names},
    )
    agg = WindowAggregator(DEFAULT_SPECS, [GroupingSet(("model",))], allowed_lateness_s=0)
    results = []
    for a in range(0, n, 700):
        results += agg.add(batch.select(slice(a, a + 700)))
    results += agg.flush_all()
    assert results
    for r in results:
        start = r.window_start_ms
        sel = (
            (ts >= start)
            & (ts < start + r.window_seconds * 1000)
            & (model_names == r.dims["model"])
        )
        assert r.requests == int(sel.sum())
        for name, q in LAT_LEVELS.items():
            exact = float(np.quantile(lat[sel], q, method="lower"))
            assert rel_err(getattr(r, name), exact) <= 0.01
        assert r.cost_usd == pytest.approx(
            float(np.nansum(batch.cost_usd[sel])), rel=1e-9, abs=1e-12
        )


# --- behaviour -----------------------------------------------------------------------


def ev(t_s: float, latency: float = 100.0, **dims: str) -> dict[str, Any]:
    return {"ts_ms": T0 + round(t_s * 1000), "latency_ms": latency, "model": "m1", **dims}


def test_emits_only_when_the_watermark_passes_the_end() -> None:
    agg = WindowAggregator([WindowSpec(60, 10)], [GroupingSet(("model",))], allowed_lateness_s=5)
    assert agg.watermark_ms is None
    assert agg.add(EventBatch.from_records([ev(1), ev(2)])) == []
    assert agg.watermark_ms == T0 + 2000 - 5000
    assert agg.add(EventBatch.from_records([ev(14.9)])) == []  # watermark 9.9 s
    closed = agg.add(EventBatch.from_records([ev(15)]))  # watermark 10 s closes [-50, 10)
    assert [(r.window_start_ms - T0, r.requests) for r in closed] == [(-50_000, 2)]
    later = agg.flush_all()
    assert [(r.window_start_ms - T0, r.requests) for r in later] == [
        (-40_000, 4),
        (-30_000, 4),
        (-20_000, 4),
        (-10_000, 4),
        (0, 4),
        (10_000, 2),
    ]


def test_late_events_are_counted_and_owed_to_the_next_window() -> None:
    agg = WindowAggregator([WindowSpec(10, 10)], [GroupingSet(("model",))], allowed_lateness_s=0)
    agg.add(EventBatch.from_records([ev(1), ev(25)]))  # closes [0, 10) and [10, 20)
    assert agg.add(EventBatch.from_records([ev(3, latency=999.0), ev(4)])) == []
    assert agg.late_events == 2
    [r20] = agg.add(EventBatch.from_records([ev(31)]))
    assert (r20.window_start_ms - T0, r20.requests, r20.late_events) == (20_000, 1, 2)
    assert r20.latency_max_ms == 100.0  # the late 999 ms went nowhere
    [r30] = agg.flush_all()
    assert r30.late_events == 0


def test_partly_late_events_join_only_the_open_windows() -> None:
    agg = WindowAggregator([WindowSpec(30, 10)], [GroupingSet(("model",))], allowed_lateness_s=0)
    agg.add(EventBatch.from_records([ev(5), ev(21)]))  # watermark 21 s: [-10, 20) closed
    agg.add(EventBatch.from_records([ev(15, latency=7.0)]))  # joins [0,30) and [10,40) only
    results = {r.window_start_ms - T0: r for r in agg.flush_all()}
    assert results[0].requests == 3 and results[0].latency_p50_ms == pytest.approx(100, rel=0.01)
    assert results[10_000].requests == 2 and results[10_000].latency_sketch.min == 7.0
    assert agg.late_events == 0


def test_idle_stream_closes_windows_by_wall_clock() -> None:
    agg = WindowAggregator([WindowSpec(10, 10)], [GroupingSet(("model",))], allowed_lateness_s=30)
    assert agg.add(EventBatch.from_records([ev(3)]), wall_now_s=1000.0) == []
    assert agg.advance_wall_clock(1010.0) == []  # not idle long enough (30 s)
    assert agg.advance_wall_clock(1029.9) == []
    closed = agg.advance_wall_clock(1037.0)  # watermark = 3 - 30 + 37 = 10 s
    assert [r.window_start_ms - T0 for r in closed] == [0]
    assert agg.watermark_ms == T0 + 10_000
    # an event arriving later for the closed window is late
    assert agg.add(EventBatch.from_records([ev(4)]), wall_now_s=1040.0) == []
    assert agg.late_events == 1


def test_idle_clock_without_arrival_time_uses_the_next_tick() -> None:
    agg = WindowAggregator(
        [WindowSpec(10, 10)], [GroupingSet(("model",))], idle_timeout_s=5, allowed_lateness_s=0
    )
    agg.add(EventBatch.from_records([ev(3)]))
    assert agg.advance_wall_clock(100.0) == []  # records the arrival
    assert agg.advance_wall_clock(104.0) == []
    assert [r.window_start_ms - T0 for r in agg.advance_wall_clock(107.0)] == [0]


def test_caller_watermark_holds_windows_open() -> None:
    agg = WindowAggregator([WindowSpec(10, 10)], [GroupingSet(("model",))], allowed_lateness_s=0)
    # a fast partition is at 100 s, a slow one still at 5 s: the caller says 5 s
    assert agg.add(EventBatch.from_records([ev(100), ev(3)]), watermark_ms=T0 + 5_000) == []
    assert agg.add(EventBatch.from_records([ev(7)]), watermark_ms=T0 + 9_000) == []
    assert agg.late_events == 0
    [r] = agg.add(EventBatch.from_records([]), watermark_ms=T0 + 10_000)
    assert (r.window_start_ms - T0, r.requests) == (0, 2)
    assert agg.watermark_ms == T0 + 10_000
    # a lower watermark later never moves it back; events before it are late
    assert agg.add(EventBatch.from_records([ev(8)]), watermark_ms=T0) == []
    assert agg.late_events == 1 and agg.watermark_ms == T0 + 10_000


def test_cardinality_cap_folds_new_series_into_other() -> None:
    agg = WindowAggregator(
        [WindowSpec(10, 10)], [GroupingSet(("tenant",))], max_series=2, allowed_lateness_s=0
    )
    events = [ev(1, tenant=t) for t in ["a", "b", "a", "c", "d", "c"]]
    results = feed(agg, events)
    by_tenant = {r.dims["tenant"]: r.requests for r in results}
    assert by_tenant == {"a": 2, "b": 1, OTHER: 3}
    assert agg.overflow_events == 3
    assert agg.overflow_by_grouping == {"tenant": 3}
    other = next(r for r in results if r.dims["tenant"] == OTHER)
    assert other.dims["model"] == "" and other.grouping == "tenant"


def test_series_and_panes_are_released() -> None:
    # 3 new tenants a minute for 30 minutes: 90 tenants, but a 300 s window only
    # ever needs the last 6 minutes of them, so a cap of 25 never bites.
    agg = WindowAggregator(DEFAULT_SPECS, DEFAULT_GROUPINGS, allowed_lateness_s=0, max_series=25)
    for minute in range(30):
        tenants = [f"t{minute}-{i}" for i in range(3)]
        agg.add(
            EventBatch.from_records([ev(minute * 60 + i, tenant=t) for i, t in enumerate(tenants)])
        )
        assert agg.open_panes <= len(DEFAULT_GROUPINGS) * (300 // 10 + 1)
        assert agg.active_series <= 2 + 3 * 7
    assert agg.overflow_events == 0
    agg.flush_all()
    assert agg.open_panes == 0 and agg.active_series == 0


def test_restore_watermark_skips_written_windows() -> None:
    agg = WindowAggregator([WindowSpec(10, 10)], [GroupingSet(("model",))], allowed_lateness_s=0)
    agg.restore_watermark(T0 + 20_000)
    assert agg.watermark_ms == T0 + 20_000
    assert agg.add(EventBatch.from_records([ev(5), ev(15)])) == []
    assert agg.late_events == 2
    agg.add(EventBatch.from_records([ev(21)]))
    assert [r.window_start_ms - T0 for r in agg.flush_all()] == [20_000]


def test_flush_moves_the_watermark_past_everything() -> None:
    agg = WindowAggregator([WindowSpec(10, 10)], [GroupingSet(("model",))], allowed_lateness_s=60)
    agg.add(EventBatch.from_records([ev(1)]))
    assert len(agg.flush_all()) == 1
    assert agg.flush_all() == []
    agg.add(EventBatch.from_records([ev(2)]))
    assert agg.late_events == 1 and agg.flush_all() == []


def test_window_id_is_a_stable_dedup_key() -> None:
    events = [ev(1, tenant="t1"), ev(2, tenant="t2"), ev(2, tenant="t2")]
    a = feed(WindowAggregator(allowed_lateness_s=0), events)
    b = feed(WindowAggregator(allowed_lateness_s=0), events)
    ids = [wins.window_id(r) for r in a]
    assert ids == [wins.window_id(r) for r in b]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 for i in ids)


def test_result_fields() -> None:
    records = [
        {
            **ev(1, latency=10.0),
            "ttft_ms": 2.0,
            "cost_usd": 0.25,
            "input_tokens": 5,
            "is_error": True,
        },
        {**ev(2, latency=30.0), "ttft_ms": None, "cost_usd": None, "output_tokens": 7},
    ]
    [r] = feed(WindowAggregator([WindowSpec(10, 10)], [GroupingSet(("service", "model"))]), records)
    assert r.window_start == datetime.fromtimestamp(T0 / 1000, tz=UTC)
    assert (r.window_seconds, r.hop_seconds, r.grouping) == (10, 10, "service+model")
    assert r.dims == {d: ("m1" if d == "model" else "") for d in DIMENSIONS}
    assert (r.requests, r.errors, r.error_rate) == (2, 1, 0.5)
    assert (r.input_tokens, r.output_tokens, r.cost_usd, r.unpriced_requests) == (5, 7, 0.25, 1)
    assert (r.latency_p50_ms, r.latency_p99_ms, r.latency_max_ms) == (10.0, 10.0, 30.0)
    assert r.ttft_p50_ms == 2.0 and r.ttft_sketch.count == 1
    assert r.late_events == 0


def test_results_are_plain_dataclasses() -> None:
    events = [ev(1, latency=10.0), {**ev(2, latency=0.0), "ttft_ms": 3.0}]
    [a] = feed(WindowAggregator([WindowSpec(10, 10)], [GroupingSet(("model",))]), events)
    [b] = feed(WindowAggregator([WindowSpec(10, 10)], [GroupingSet(("model",))]), events)
    # sketches come from the emission's shared bucket arrays on first read
    assert (a.latency_sketch.count, a.latency_sketch.zero_count, a.ttft_sketch.count) == (2, 1, 1)
    assert a.latency_sketch == b.latency_sketch and a.latency_sketch is a.latency_sketch
    for other in (copy.copy(b), pickle.loads(pickle.dumps(b)), dataclasses.replace(b)):
        assert canonical([other]) == canonical([a])
    with pytest.raises(TypeError):
        a.dims["model"] = "x"  # type: ignore[index]  # one mapping per series, shared
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.requests = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        _ = a.no_such_field  # type: ignore[attr-defined]


def test_default_configuration() -> None:
    assert (WindowSpec(60, 10), WindowSpec(300, 60)) == DEFAULT_SPECS
    assert [g.name for g in DEFAULT_GROUPINGS] == ["service+endpoint+model", "model", "tenant"]
    agg = WindowAggregator()
    assert agg.specs == DEFAULT_SPECS and agg.groupings == DEFAULT_GROUPINGS


def test_invalid_configuration() -> None:
    with pytest.raises(ConfigError):
        WindowSpec(60, 7)
    with pytest.raises(ConfigError):
        WindowSpec(0, 10)
    with pytest.raises(ConfigError):
        GroupingSet(("service", "nope"))
    with pytest.raises(ConfigError):
        GroupingSet(())
    with pytest.raises(ConfigError):
        WindowAggregator(allowed_lateness_s=-1)
    with pytest.raises(ConfigError):
        WindowAggregator(max_series=0)
    assert GroupingSet.parse("model+service") == GroupingSet(("service", "model"))


@pytest.mark.parametrize(
    ("field", "value"),
    [("latency_ms", -1.0), ("latency_ms", math.nan), ("ttft_ms", math.inf), ("cost_usd", -0.1)],
)
def test_invalid_events_are_rejected(field: str, value: float) -> None:
    agg = WindowAggregator()
    with pytest.raises(ValidationError) as info:
        agg.add(EventBatch.from_records([ev(1), {**ev(2), field: value}]))
    assert info.value.problems[0].field == f"{field}[1]"
    assert agg.watermark_ms is None  # nothing of the batch was taken


def test_batch_shape_errors() -> None:
    with pytest.raises(ValidationError):
        EventBatch.from_records([{"latency_ms": 1.0}])
    with pytest.raises(ValidationError):
        EventBatch(
            ts_ms=np.array([1, 2]),
            latency_ms=np.array([1.0]),
            ttft_ms=np.array([1.0, 2.0]),
            is_error=np.array([False, False]),
            input_tokens=np.array([0, 0]),
            output_tokens=np.array([0, 0]),
            cost_usd=np.array([0.0, 0.0]),
            dims={},
        )
    with pytest.raises(ValidationError):
        EventBatch.from_records([ev(1)]).__class__(
            **{**EventBatch.from_records([ev(1)]).__dict__, "dims": {"colour": np.array(["x"])}}
        )


def test_batch_helpers() -> None:
    batch = EventBatch.from_records([ev(1), ev(2, tenant="t")])
    assert len(batch) == 2 and batch.dims["tenant"].tolist() == ["", "t"]
    assert np.isnan(batch.ttft_ms).all() and np.isnan(batch.cost_usd).all()
    both = EventBatch.concat([batch, batch.select(slice(1, 2))])
    assert both.ts_ms.tolist() == [T0 + 1000, T0 + 2000, T0 + 2000]
    assert WindowAggregator().add(EventBatch.from_records([])) == []


@pytest.mark.slow  # seconds long: run by `make test`, not by `make unit`
def test_bench_runs_every_method_on_a_small_stream() -> None:
    from llmpulse.bench.windows import format_table, run_windows_bench

    rows = run_windows_bench(3000, 10, 1, hours=0.05, subsample=400)
    by_method = {r["method"].split()[0]: r for r in rows}
    assert {"llmpulse", "llmpulse,", "exact", "river", "ddsketch", "chDB"} <= set(by_method)
    core = rows[0]
    assert core["windows"] > 0 and core["events"] == 3000
    for r in rows:
        assert r["events_per_s"] > 0
        if r["method"].startswith(("llmpulse Window", "ddsketch", "exact")):
            assert max(r["max_rel_err_p50"], r["max_rel_err_p95"], r["max_rel_err_p99"]) <= 0.01
            assert "missing" not in r["note"]
    table = format_table(rows)
    assert table.count("\n") == len(rows) + 1
