"""The window stage: sliding-window statistics per series, and their ``window_stats`` rows.

Owner: the series of each grouping (one key per grouping), so a window of a
``model`` or ``tenant`` series is computed by exactly one task whatever
partitions its events came through. Time comes from the task's source
watermark (``Context.source_time_ms``): a window closes once every upstream
partition has moved past its end plus the allowed lateness.

State is the open panes, a fold over the last ``longest window + lateness`` of
input: after a restart the task replays that stretch (:meth:`rebuild`) with
every window up to the checkpoint's frontier marked as already written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from llmpulse._types import ObjArray
from llmpulse.alerts.signals import Signal
from llmpulse.processors.sketch import LogHistogram
from llmpulse.processors.windows import (
    DIMENSIONS,
    EmissionRuns,
    EventBatch,
    GroupingSet,
    WindowAggregator,
    WindowResult,
    WindowSpec,
    emission_runs,
    window_ids,
)
from llmpulse.schemas.batch import TraceBatch
from llmpulse.stages.base import Context, Output, Rows, Stage, StoreReader
from llmpulse.stages.retention import Retention
from llmpulse.store.encode import windows_table

# "No watermark yet" for the aggregator: below any event time, lateness included.
_NO_TIME = -(2**62)


@dataclass(frozen=True)
class WindowConfig:
    specs: tuple[WindowSpec, ...]
    groupings: tuple[GroupingSet, ...]
    allowed_lateness_s: float = 30.0
    idle_timeout_s: float | None = None
    max_series: int = 10_000

    @property
    def idle_s(self) -> float:
        return self.allowed_lateness_s if self.idle_timeout_s is None else self.idle_timeout_s

    @property
    def longest_ms(self) -> int:
        return max(s.length_ms for s in self.specs)

    @property
    def lateness_ms(self) -> int:
        return round(self.allowed_lateness_s * 1000)


def to_batch(batch: TraceBatch) -> EventBatch:
    """The columns the aggregator reads (tokens 0 when missing, cost NaN when unpriced)."""
    x = batch.numbers
    return EventBatch(
        ts_ms=batch.timestamp_ms,
        latency_ms=x["latency_ms"],
        ttft_ms=x["ttft_ms"],
        is_error=batch.objects["status"] == "error",
        input_tokens=np.maximum(x["input_tokens"], 0),
        output_tokens=np.maximum(x["output_tokens"], 0),
        cost_usd=batch.cost,
        dims={d: batch.objects[d] for d in DIMENSIONS},
    )


def series_keys(batch: TraceBatch, grouping: GroupingSet) -> ObjArray:
    """The series of every row for ``grouping``, as one string (for routing)."""
    cols = [batch.objects[d].tolist() for d in grouping.dims]
    prefix = grouping.name + "\x1e"
    out = np.empty(len(batch), dtype=object)
    out[:] = [prefix + "\x1f".join(t) for t in zip(*cols, strict=True)]
    return out


class WindowStage(Stage):
    name = "windows"
    tables = ("window_stats",)

    def __init__(
        self,
        config: WindowConfig,
        *,
        to_signals: Callable[[Sequence[WindowResult], EmissionRuns], list[Signal]] | None = None,
        resume_hours: float = 6.0,
    ) -> None:
        self.config = config
        self.to_signals = to_signals
        self.resume_hours = resume_hours
        self.aggregator = WindowAggregator(
            config.specs,
            config.groupings,
            allowed_lateness_s=config.allowed_lateness_s,
            idle_timeout_s=config.idle_timeout_s,
            max_series=config.max_series,
        )

    def keys(self, batch: TraceBatch) -> list[ObjArray]:
        return [series_keys(batch, g) for g in self.config.groupings]

    def retention(self) -> Retention:
        wm = self.aggregator.watermark_ms
        if wm is None:
            return Retention(rows=None, event_time_ms=_NO_TIME)
        return Retention(event_time_ms=wm - self.config.longest_ms)

    def _watermark(self, ctx: Context) -> int:
        t = ctx.source_time_ms
        return _NO_TIME if t is None else t - self.config.lateness_ms

    def process(self, batch: TraceBatch, ctx: Context) -> Output:
        owned = ctx.owned.get(self.name)
        results = self.aggregator.add(
            to_batch(batch), watermark_ms=self._watermark(ctx), owned=owned
        )
        return self._emitted(results, ctx)

    def tick(self, ctx: Context) -> Output:
        empty = EventBatch.from_records([])
        return self._emitted(self.aggregator.add(empty, watermark_ms=self._watermark(ctx)), ctx)

    def flush(self, ctx: Context) -> Output:
        return self._emitted(self.aggregator.flush_all(), ctx)

    def _emitted(self, results: Sequence[WindowResult], ctx: Context) -> Output:
        if not results:
            return Output()
        ctx.stats.windows += len(results)
        runs = emission_runs(results)  # read once, for the ids, the rows and the signals
        ids = window_ids(results, runs)
        out = Output(rows=[Rows("window_stats", windows_table(results, ids, ctx.now, runs))])
        if self.to_signals is not None:
            out.signals = self.to_signals(results, runs)
        return out

    # -- checkpoints ----------------------------------------------------------------------

    def snapshot(self) -> bytes:
        return orjson.dumps({"frontier_ms": self.aggregator.watermark_ms})

    def restore(self, blob: bytes) -> None:
        frontier = orjson.loads(blob).get("frontier_ms")
        if frontier is not None:
            # Every window ending at or before the frontier was written before the
            # checkpoint: never emitted again; events for them count as late.
            self.aggregator.restore_watermark(int(frontier))

    def resume(self, store: StoreReader, ctx: Context) -> Output:
        """Rebuild the windows an earlier run left open from its stored events; the
        ones that run closed but could not write are returned as rows."""
        frontiers = window_frontiers(store, self.config.specs)
        newest = store.rows("SELECT toUnixTimestamp64Milli(max(timestamp)), count() FROM traces")
        if not newest or not newest[0][1]:
            return Output()
        newest_ms = int(newest[0][0])
        margin = self.config.longest_ms + self.config.lateness_ms
        behind = [f for f in frontiers if f is not None]
        if len(behind) == len(frontiers):
            start = min(behind) - self.config.longest_ms
        else:
            start = newest_ms - margin
        start = max(start, newest_ms - round(self.resume_hours * 3_600_000))
        cols = store.raw_columns(
            f"SELECT {_EVENT_COLUMNS} FROM traces "
            "WHERE timestamp >= fromUnixTimestamp64Milli({start:Int64}) ORDER BY timestamp",
            {"start": start},
        )
        if not cols or not len(cols[0]):
            return Output()
        ts, lat, ttft, err, tin, tout, cost, source, *dims = cols
        batch = EventBatch(
            ts_ms=np.asarray(ts, dtype=np.int64),
            latency_ms=np.asarray(lat, dtype=np.float64),
            ttft_ms=np.asarray(ttft, dtype=np.float64),
            is_error=np.asarray(err, dtype=np.bool_),
            input_tokens=np.asarray(tin, dtype=np.int64),
            output_tokens=np.asarray(tout, dtype=np.int64),
            cost_usd=np.asarray(cost, dtype=np.float64),
            dims={d: np.asarray(c, dtype=object) for d, c in zip(DIMENSIONS, dims, strict=True)},
        )
        if any(f is not None for f in frontiers):
            self.aggregator.restore_watermark(frontiers)
        # The earlier run's watermark: the slowest of its partitions, less the lateness.
        slowest = min(_partition_maxima(source, batch.ts_ms).values())
        results = self.aggregator.add(
            batch, watermark_ms=slowest - self.config.lateness_ms, count_late=False
        )
        return self._emitted(results, ctx)

    def rebuild(self, batch: TraceBatch, ctx: Context) -> None:
        # These events were judged late or not when they first arrived.
        self.aggregator.add(
            to_batch(batch),
            watermark_ms=_NO_TIME,
            count_late=False,
            owned=ctx.owned.get(self.name),
        )


_EVENT_COLUMNS = (
    "toUnixTimestamp64Milli(timestamp), latency_ms, ifNull(ttft_ms, nan), status = 'error', "
    "ifNull(input_tokens, 0), ifNull(output_tokens, 0), ifNull(cost_usd, nan), source, "
    + ", ".join(DIMENSIONS)
)


def window_frontiers(store: StoreReader, specs: Sequence[WindowSpec]) -> list[int | None]:
    """Per spec, the epoch ms up to which its windows have been written (None: none yet)."""
    rows = store.rows(
        "SELECT window_seconds, hop_seconds, toUnixTimestamp(max(window_end)) * 1000 "
        "FROM window_stats GROUP BY window_seconds, hop_seconds"
    )
    written = {(int(w), int(h)): int(end) for w, h, end in rows}
    return [written.get((s.length_s, s.hop_s)) for s in specs]


def partition_of(source: str) -> str:
    """``kafka:topic/3@1200`` -> ``kafka:topic/3``; ``replay:/f.jsonl:12`` -> ``replay``."""
    if source.startswith("kafka:"):
        return source.rsplit("@", 1)[0]
    return source.split(":", 1)[0]


def _partition_maxima(sources: Sequence[str], ts_ms: npt.NDArray[np.int64]) -> dict[str, int]:
    top: dict[str, int] = {}
    for src, ts in zip(sources, ts_ms.tolist(), strict=True):
        part = partition_of(src)
        if ts > top.get(part, _NO_TIME):
            top[part] = ts
    return top


STORED_WINDOW_FIELDS = (
    "window_start, window_end, window_seconds, hop_seconds, grouping, "
    + ", ".join(DIMENSIONS)
    + ", requests, errors, error_rate, latency_p50_ms, latency_p90_ms, latency_p95_ms, "
    "latency_p99_ms, latency_max_ms, ifNull(ttft_p50_ms, nan), ifNull(ttft_p95_ms, nan), "
    "ifNull(ttft_p99_ms, nan), input_tokens, output_tokens, cost_usd, unpriced_requests, "
    "late_events, latency_sketch_keys, latency_sketch_counts, latency_sketch_zeros, "
    "latency_min_ms, ttft_sketch_keys, ttft_sketch_counts, ttft_sketch_zeros"
)


def window_from_row(row: tuple[Any, ...]) -> WindowResult:
    """A closed window back from its ``STORED_WINDOW_FIELDS`` row (for warming alerts)."""
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
