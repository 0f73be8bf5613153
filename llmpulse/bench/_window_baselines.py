"""The baselines the windows bench compares the windowing core with: river's
RollingQuantile, the ddsketch package and chDB's own quantile functions, each
computing p50/p95/p99 for the same windows of the same stream."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from llmpulse.processors.windows import GroupingSet, WindowSpec

if TYPE_CHECKING:
    from llmpulse.bench.windows import BenchData

__all__ = ["LEVELS", "Estimates", "WindowKey", "chdb", "ddsketch", "river", "series_codes"]

# (window length s, hop s, grouping name, series values, window start ms)
WindowKey = tuple[int, int, str, tuple[str, ...], int]
Estimates = dict[WindowKey, tuple[float, float, float]]
LEVELS = (0.5, 0.95, 0.99)


def series_codes(
    data: BenchData, grouping: GroupingSet
) -> tuple[npt.NDArray[np.int64], list[tuple[str, ...]]]:
    cols = [data.dims[d] for d in grouping.dims]
    combos: dict[tuple[str, ...], int] = {}
    codes = np.fromiter(
        (combos.setdefault(c, len(combos)) for c in zip(*(c.tolist() for c in cols), strict=True)),
        dtype=np.int64,
        count=len(data),
    )
    return codes, list(combos)


def river(
    data: BenchData, specs: Sequence[WindowSpec], groupings: Sequence[GroupingSet], window_size: int
) -> Estimates:
    """river RollingQuantile per window, series and level: one sorted buffer each,
    large enough to hold the whole window, so its answer is exact in the window."""
    from river.stats import RollingQuantile

    windows: dict[WindowKey, list[Any]] = {}
    lat = data.latency_ms.tolist()
    ts = data.ts_ms.tolist()
    for grouping in groupings:
        codes, names = series_codes(data, grouping)
        for spec in specs:
            hop, k = spec.hop_ms, spec.length_ms // spec.hop_ms
            for x, t, code in zip(lat, ts, codes.tolist(), strict=True):
                last = t // hop * hop
                for j in range(k):
                    key = (spec.length_s, spec.hop_s, grouping.name, names[code], last - j * hop)
                    qs = windows.get(key)
                    if qs is None:
                        qs = windows[key] = [RollingQuantile(q, window_size) for q in LEVELS]
                    for rq in qs:
                        rq.update(x)
    return {key: tuple(float(rq.get()) for rq in qs) for key, qs in windows.items()}  # type: ignore[misc]


def ddsketch(
    data: BenchData, specs: Sequence[WindowSpec], groupings: Sequence[GroupingSet]
) -> Estimates:
    """``ddsketch.DDSketch(0.01)`` per series and 10 s pane, merged into windows:
    the same pane design as the core, with the pure-Python package."""
    from ddsketch import DDSketch

    base = math.gcd(*(s.hop_ms for s in specs))
    out: Estimates = {}
    lat = data.latency_ms.tolist()
    panes_of = (data.ts_ms // base).tolist()
    for grouping in groupings:
        codes, names = series_codes(data, grouping)
        panes: dict[tuple[int, int], Any] = {}
        for x, p, code in zip(lat, panes_of, codes.tolist(), strict=True):
            sk = panes.get((code, p))
            if sk is None:
                sk = panes[(code, p)] = DDSketch(0.01)
            sk.add(x)
        by_series: dict[int, list[int]] = defaultdict(list)
        for code, p in panes:
            by_series[code].append(p)
        for spec in specs:
            hop_u, len_u = spec.hop_ms // base, spec.length_ms // base
            for code, ps in by_series.items():
                starts = sorted(
                    {p // hop_u * hop_u - j * hop_u for p in ps for j in range(len_u // hop_u)}
                )
                for s in starts:
                    merged = DDSketch(0.01)
                    for p in range(s, s + len_u):
                        part = panes.get((code, p))
                        if part is not None:
                            merged.merge(part)
                    key = (spec.length_s, spec.hop_s, grouping.name, names[code], s * base)
                    p50, p95, p99 = (merged.get_quantile_value(q) for q in LEVELS)
                    out[key] = (float(p50 or 0.0), float(p95 or 0.0), float(p99 or 0.0))
    return out


def chdb(
    data: BenchData, specs: Sequence[WindowSpec], groupings: Sequence[GroupingSet], function: str
) -> Estimates:
    """chDB (in-memory ClickHouse): insert the raw rows, then one GROUP BY per spec and
    grouping, each event expanded into its windows with arrayJoin."""
    import clickhouse_connect
    import pyarrow as pa  # type: ignore[import-untyped]

    client = clickhouse_connect.get_client(dsn="chdb://memory")
    table = "bench_raw_events"
    client.command(f"DROP TABLE IF EXISTS {table}")
    client.command(
        f"""CREATE TABLE {table} (ts_ms Int64, latency_ms Float64, service LowCardinality(String),
        endpoint LowCardinality(String), model LowCardinality(String),
        tenant LowCardinality(String)) ENGINE = MergeTree ORDER BY ts_ms"""
    )
    arrow = pa.table(
        {
            "ts_ms": data.ts_ms,
            "latency_ms": data.latency_ms,
            **{
                d: pa.array(data.dims[d].tolist(), type=pa.string())
                for d in ("service", "endpoint", "model", "tenant")
            },
        }
    )
    client.insert_arrow(table, arrow)
    levels = ", ".join(repr(q) for q in LEVELS)
    out: Estimates = {}
    try:
        for grouping in groupings:
            dims = ", ".join(grouping.dims)
            for spec in specs:
                hop, k = spec.hop_ms, spec.length_ms // spec.hop_ms
                sql = f"""SELECT {dims}, ws, {function}({levels})(latency_ms)
                    FROM {table}
                    ARRAY JOIN
                        arrayMap(j -> intDiv(ts_ms, {hop}) * {hop} - j * {hop}, range({k})) AS ws
                    GROUP BY {dims}, ws"""
                for row in client.query(sql).result_rows:
                    *names, ws, qs = row
                    key = (spec.length_s, spec.hop_s, grouping.name, tuple(names), int(ws))
                    out[key] = (float(qs[0]), float(qs[1]), float(qs[2]))
    finally:
        client.command(f"DROP TABLE IF EXISTS {table}")
    return out
