"""Sliding-window percentiles: the windowing core against baselines, side by side.

Every method computes p50/p95/p99 latency for the same windows (the default specs
60 s/10 s and 300 s/60 s, the default groupings) over the same generated lognormal
stream, in one process. Errors are relative to the exact quantile under the method's
own definition: ``x_(floor(q*(n-1)))`` (numpy ``method="lower"``) for the sketches,
linear interpolation for river and chDB ``quantiles``, ``x_(floor(q*n))`` for chDB
``quantilesExact`` -- comparing across definitions would measure the definitions.

events/s is wall time (the machine may be shared); CPU s is this process's CPU time
(chDB runs several threads, so it can exceed the wall time). The slow baselines
(river, ddsketch) run on the first events of the stream only, and say so.

How the core's cost splits: aggregation is per event; emission is per window
result (merging pane sketches, building the result objects). A sparse stream
(many windows per event, like 1M events over 2 hours) is emission-bound.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from llmpulse.bench._measure import Measure, measured
from llmpulse.bench._window_baselines import (
    LEVELS,
    Estimates,
    WindowKey,
    chdb,
    ddsketch,
    river,
    series_codes,
)
from llmpulse.processors.windows import (
    DEFAULT_GROUPINGS,
    DEFAULT_SPECS,
    EventBatch,
    GroupingSet,
    WindowAggregator,
    WindowResult,
    WindowSpec,
    window_id,
)

__all__ = ["BenchData", "format_table", "generate", "run_windows_bench"]

Progress = Callable[[str], None]
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
_MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "claude-haiku-4", "gemini-2.5-pro")
_ENDPOINTS = ("/chat", "/summarize", "/classify", "/extract")


@dataclass(frozen=True)
class BenchData:
    """The generated stream as columns, in arrival order."""

    ts_ms: npt.NDArray[np.int64]
    latency_ms: npt.NDArray[np.float64]
    ttft_ms: npt.NDArray[np.float64]
    is_error: npt.NDArray[np.bool_]
    input_tokens: npt.NDArray[np.int64]
    output_tokens: npt.NDArray[np.int64]
    cost_usd: npt.NDArray[np.float64]
    dims: dict[str, npt.NDArray[np.object_]]
    hours: float

    def __len__(self) -> int:
        return int(self.ts_ms.size)

    def head(self, n: int) -> BenchData:
        return BenchData(
            self.ts_ms[:n],
            self.latency_ms[:n],
            self.ttft_ms[:n],
            self.is_error[:n],
            self.input_tokens[:n],
            self.output_tokens[:n],
            self.cost_usd[:n],
            {d: c[:n] for d, c in self.dims.items()},
            self.hours,
        )

    def batches(self, size: int) -> list[EventBatch]:
        return [
            EventBatch(
                ts_ms=self.ts_ms[a : a + size],
                latency_ms=self.latency_ms[a : a + size],
                ttft_ms=self.ttft_ms[a : a + size],
                is_error=self.is_error[a : a + size],
                input_tokens=self.input_tokens[a : a + size],
                output_tokens=self.output_tokens[a : a + size],
                cost_usd=self.cost_usd[a : a + size],
                dims={d: c[a : a + size].copy() for d, c in self.dims.items()},
            )
            for a in range(0, len(self), size)
        ]


def generate(n_events: int, n_series: int, seed: int, hours: float = 2.0) -> BenchData:
    """Lognormal latencies for ``n_series`` (service, endpoint, model) series, 20
    tenants, timestamps spread over ``hours`` and jittered by up to 5 s (so they
    arrive slightly out of order but never later than the 30 s allowed lateness)."""
    rng = np.random.default_rng(seed)
    span_ms = int(hours * 3_600_000)
    ts = np.sort(rng.integers(0, span_ms, n_events)) + rng.integers(0, 5_000, n_events) + T0_MS
    combos = [
        (
            f"svc-{i // 20}",
            _ENDPOINTS[(i // len(_MODELS)) % len(_ENDPOINTS)],
            _MODELS[i % len(_MODELS)],
        )
        for i in range(n_series)
    ]
    table = np.array(combos, dtype=object).reshape(n_series, 3)
    series = rng.integers(0, n_series, n_events)
    mu = rng.normal(np.log(800.0), 0.6, n_series)
    latency = rng.lognormal(mu[series], 0.8)
    ttft = latency * rng.uniform(0.05, 0.4, n_events)
    ttft[rng.random(n_events) < 0.1] = np.nan
    input_tokens = rng.integers(20, 4000, n_events)
    output_tokens = rng.integers(1, 1000, n_events)
    cost = input_tokens * 2.5e-6 + output_tokens * 1e-5
    cost[rng.random(n_events) < 0.05] = np.nan
    tenants = np.array([f"tenant-{i:02d}" for i in range(20)], dtype=object)
    return BenchData(
        ts_ms=ts.astype(np.int64),
        latency_ms=latency,
        ttft_ms=ttft,
        is_error=rng.random(n_events) < 0.02,
        input_tokens=input_tokens.astype(np.int64),
        output_tokens=output_tokens.astype(np.int64),
        cost_usd=cost,
        dims={
            "service": table[series, 0],
            "endpoint": table[series, 1],
            "model": table[series, 2],
            "tenant": tenants[rng.integers(0, tenants.size, n_events)],
        },
        hours=hours,
    )


# --- the methods ---------------------------------------------------------------------


def _exact(
    data: BenchData,
    specs: Sequence[WindowSpec],
    groupings: Sequence[GroupingSet],
    definitions: Sequence[str] = ("lower",),
) -> tuple[dict[str, Estimates], dict[WindowKey, int]]:
    """Exact quantiles per window: every event copied into each of its windows, one
    stable sort by (series, window) over values already sorted.

    Definitions: ``lower`` = x_(floor(q*(n-1))) (the sketches' target), ``linear``
    = numpy's default interpolation (river, chDB ``quantiles``), ``floor_qn`` =
    x_(min(floor(q*n), n-1)) (ClickHouse ``quantileExact``).
    """
    out: dict[str, Estimates] = {d: {} for d in definitions}
    counts: dict[WindowKey, int] = {}
    by_value = np.argsort(data.latency_ms, kind="stable")
    values = data.latency_ms[by_value]
    ts = data.ts_ms[by_value]
    for grouping in groupings:
        codes, names = series_codes(data, grouping)
        codes = codes[by_value]
        for spec in specs:
            hop, k = spec.hop_ms, spec.length_ms // spec.hop_ms
            last = ts // hop
            starts = (last[:, None] - np.arange(k)).ravel()
            lo = int(starts.min())
            n_windows = int(starts.max()) - lo + 1
            key = np.repeat(codes, k) * n_windows + (starts - lo)
            order = np.argsort(key, kind="stable")  # keeps value order inside a window
            key = key[order]
            vals = np.repeat(values, k)[order]
            first = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
            n = np.diff(np.append(first, key.size))
            picks = {d: [_pick(vals, first, n, q, d) for q in LEVELS] for d in definitions}
            for j, kk in enumerate(key[first].tolist()):
                code, w = divmod(kk, n_windows)
                wkey = (spec.length_s, spec.hop_s, grouping.name, names[code], (w + lo) * hop)
                for d, (p50, p95, p99) in picks.items():
                    out[d][wkey] = (float(p50[j]), float(p95[j]), float(p99[j]))
                counts[wkey] = int(n[j])
    return out, counts


def _pick(
    vals: npt.NDArray[np.float64],
    first: npt.NDArray[np.int64],
    n: npt.NDArray[np.int64],
    q: float,
    definition: str,
) -> npt.NDArray[np.float64]:
    if definition == "lower":
        out = vals[first + np.floor(q * (n - 1)).astype(np.int64)]
    elif definition == "floor_qn":
        out = vals[first + np.minimum(np.floor(q * n).astype(np.int64), n - 1)]
    elif definition == "linear":
        h = q * (n - 1)
        below = np.floor(h).astype(np.int64)
        above = np.minimum(below + 1, n - 1)
        x0, x1 = vals[first + below], vals[first + above]
        out = x0 + (h - below) * (x1 - x0)
    else:
        raise ValueError(definition)
    return np.asarray(out, dtype=np.float64)


# Encodes emitted results for the store (``store.encode.windows_table``).
Encoder = Callable[[Sequence[WindowResult], Sequence[str], datetime], Any]


def _core(
    batches: Sequence[EventBatch],
    specs: Sequence[WindowSpec],
    groupings: Sequence[GroupingSet],
    encoder: Encoder | None = None,
) -> tuple[Estimates, int]:
    """Run the aggregator; results are consumed as they come (as a writer would).

    With ``encoder`` every emitted list is also encoded as the pipeline's writer
    does: ``window_id`` per result, then the Arrow columns of ``windows_table``,
    every sketch's keys and counts included.
    """
    agg = WindowAggregator(specs, groupings, allowed_lateness_s=30)
    out: Estimates = {}
    names = {g.name: g.dims for g in groupings}
    n = 0
    for b in batches:
        n += _take(agg.add(b), out, names, encoder)
    n += _take(agg.flush_all(), out, names, encoder)
    return out, n


def _take(
    results: Sequence[WindowResult],
    out: Estimates,
    names: dict[str, tuple[str, ...]],
    encoder: Encoder | None = None,
) -> int:
    for r in results:
        dims = tuple(r.dims[d] for d in names[r.grouping])
        key = (r.window_seconds, r.hop_seconds, r.grouping, dims, r.window_start_ms)
        out[key] = (r.latency_p50_ms, r.latency_p95_ms, r.latency_p99_ms)
    if encoder is not None and results:
        encoder(results, [window_id(r) for r in results], datetime.now(UTC))
    return len(results)


# --- comparing -----------------------------------------------------------------------


def _max_errors(est: Estimates, exact: Estimates) -> tuple[list[float], int, int]:
    """Max relative error per level over the windows both have; windows missing or extra."""
    worst = [0.0] * len(LEVELS)
    for key, truth in exact.items():
        got = est.get(key)
        if got is None:
            continue
        for j, (g, t) in enumerate(zip(got, truth, strict=True)):
            worst[j] = max(worst[j], abs(g - t) / t if t else (0.0 if g == 0 else math.inf))
    missing = sum(1 for k in exact if k not in est)
    extra = sum(1 for k in est if k not in exact)
    return worst, missing, extra


def _row(
    method: str,
    events: int,
    m: Measure,
    windows: int,
    *,
    note: str,
    est: Estimates | None = None,
    exact: Estimates | None = None,
) -> dict[str, Any]:
    worst: list[float | None] = [None] * len(LEVELS)
    if est is not None and exact is not None:
        errors, missing, extra = _max_errors(est, exact)
        worst = list(errors)
        if missing or extra:
            note = f"{note}; {missing} windows missing, {extra} extra"
    return {
        "method": method,
        "events": events,
        "seconds": m.seconds,
        "cpu_seconds": m.cpu_seconds,
        "events_per_s": events / m.seconds if m.seconds else math.inf,
        "peak_mb": m.peak_mb,
        "windows": windows,
        "max_rel_err_p50": worst[0],
        "max_rel_err_p95": worst[1],
        "max_rel_err_p99": worst[2],
        "note": note,
    }


def run_windows_bench(
    n_events: int = 1_000_000,
    n_series: int = 100,
    seed: int = 0,
    progress: Progress | None = None,
    *,
    hours: float = 2.0,
    batch_size: int = 10_000,
    subsample: int = 20_000,
    baselines: Sequence[str] = ("exact", "river", "ddsketch", "chdb"),
) -> list[dict[str, Any]]:
    """Measure the methods side by side; one dict per method (see ``format_table``).

    ``subsample`` events (the start of the stream) feed river and ddsketch.
    """
    say = progress or (lambda _msg: None)
    specs, groupings = DEFAULT_SPECS, DEFAULT_GROUPINGS
    say(f"generating {n_events:,} events, {n_series} series over {hours:g} h")
    data = generate(n_events, n_series, seed, hours)
    batches = data.batches(batch_size)
    rows: list[dict[str, Any]] = []

    say("exact numpy order statistics (reference)")
    with measured() as m_exact:
        exact = _exact(data, specs, groupings)[0]["lower"]
    say("windowing core (WindowAggregator)")
    with measured() as m_core:
        core, n_results = _core(batches, specs, groupings)
    rows.append(
        _row(
            "llmpulse WindowAggregator (numpy panes, LogHistogram 1 %)",
            n_events,
            m_core,
            n_results,
            note=f"{batch_size:,}-event batches, lateness 30 s, building every WindowResult "
            "and its merged sketch rows (LogHistogram objects on first read)",
            est=core,
            exact=exact,
        )
    )
    del core
    say("windowing core, encoding every window for the store")
    from llmpulse.store.encode import windows_table  # pyarrow: imported before timing

    with measured() as m_rows:
        core, n_results = _core(batches, specs, groupings, windows_table)
    rows.append(
        _row(
            "llmpulse WindowAggregator + writer encoding (window_id, windows_table)",
            n_events,
            m_rows,
            n_results,
            note="as above, plus what the pipeline's writer builds before inserting: "
            "ids and the Arrow columns, every sketch's keys and counts included",
            est=core,
            exact=exact,
        )
    )
    del core
    say("windowing core, aggregation only")
    with measured() as m_agg:
        # a lateness longer than the stream: nothing closes until flush_all
        agg = WindowAggregator(specs, groupings, allowed_lateness_s=10 * 86_400)
        for b in batches:
            agg.add(b)
    start = time.perf_counter()
    n_flushed = len(agg.flush_all())
    emit_s = time.perf_counter() - start
    del agg
    rows.append(
        _row(
            "llmpulse, aggregation only (windows closed later)",
            n_events,
            m_agg,
            n_flushed,
            note=f"emitting those windows afterwards took {emit_s:.2f} s",
        )
    )
    if "exact" in baselines:
        rows.append(
            _row(
                "exact numpy per window (np.quantile lower)",
                n_events,
                m_exact,
                len(exact),
                note="the reference: events copied into each window, one stable sort",
                est=exact,
                exact=exact,
            )
        )
    sub = data.head(min(subsample, n_events))
    if {"river", "ddsketch"} & set(baselines):
        sub_exact, sub_counts = _exact(sub, specs, groupings, ("lower", "linear"))
    # Too slow for every event: these run on the first events only, each scored
    # against the exact quantile of the interpolation it approximates.
    prefix_runs: tuple[tuple[str, str, str, Callable[[], Estimates], str, str], ...] = (
        (
            "river",
            "river RollingQuantile",
            "river RollingQuantile per window (Rust core)",
            lambda: river(sub, specs, groupings, max(sub_counts.values()) + 1),
            "linear",
            "; errors vs exact linear interpolation",
        ),
        (
            "ddsketch",
            "ddsketch DDSketch(0.01)",
            "ddsketch DDSketch(0.01) panes (pure Python)",
            lambda: ddsketch(sub, specs, groupings),
            "lower",
            "",
        ),
    )
    for baseline, what, label, run, interpolation, caveat in prefix_runs:
        if baseline not in baselines:
            continue
        say(f"{what} on the first {len(sub):,} events")
        with measured() as m:
            est = run()
        rows.append(
            _row(
                label,
                len(sub),
                m,
                len(est),
                note=f"first {len(sub):,} events only{caveat}",
                est=est,
                exact=sub_exact[interpolation],
            )
        )
    if "chdb" in baselines:
        refs = _exact(data, specs, groupings, ("floor_qn", "linear"))[0]
        for function, ref, label in (
            ("quantilesExact", "floor_qn", "vs its own definition x_(floor(q*n))"),
            ("quantiles", "linear", "sampled; vs exact linear interpolation"),
        ):
            say(f"chDB {function}")
            with measured() as m:
                est = chdb(data, specs, groupings, function)
            rows.append(
                _row(
                    f"chDB SQL {function} over raw rows",
                    n_events,
                    m,
                    len(est),
                    note=f"includes the insert; {label}",
                    est=est,
                    exact=refs[ref],
                )
            )
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of ``run_windows_bench`` rows.

    >>> print(format_table([{"method": "m", "events": 10, "events_per_s": 5.0,
    ...     "cpu_seconds": 2.0, "peak_mb": 1.0, "windows": 2, "max_rel_err_p50": 0.001,
    ...     "max_rel_err_p95": 0.0, "max_rel_err_p99": 0.01, "note": ""}]))
    | method | events | events/s | CPU s | peak MB | windows | max err p50 | p95 | p99 | note |
    |---|---:|---:|---:|---:|---:|---:|---:|---:|---|
    | m | 10 | 5 | 2.00 | 1 | 2 | 0.10 % | 0.00 % | 1.00 % |  |
    """

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.2f} %"

    lines = [
        "| method | events | events/s | CPU s | peak MB | windows "
        "| max err p50 | p95 | p99 | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['events']:,} | {r['events_per_s']:,.0f} | "
            f"{r.get('cpu_seconds', math.nan):.2f} | {r['peak_mb']:,.0f} | "
            f"{r['windows']:,} | {pct(r['max_rel_err_p50'])} | {pct(r['max_rel_err_p95'])} | "
            f"{pct(r['max_rel_err_p99'])} | {r['note']} |"
        )
    return "\n".join(lines)
