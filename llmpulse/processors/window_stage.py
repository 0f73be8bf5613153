"""Feeding stored events to the window aggregator, with per-partition watermarks.

Kafka delivers partitions at different paces (a backlog is read partition by
partition), so the max event time seen overall runs ahead of slow partitions and
would make their events late. The watermark here is the minimum over the
partitions still active of each one's max event time, minus the allowed
lateness, as in Flink; a partition quiet for the idle timeout stops holding it
back. Sources without partitions (a replay file) form one partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from llmpulse.processors.windows import (
    DIMENSIONS,
    EventBatch,
    GroupingSet,
    WindowAggregator,
    WindowResult,
    WindowSpec,
)
from llmpulse.schemas.batch import TraceBatch


def partition_of(source: str) -> str:
    """``kafka:topic/3@1200`` -> ``kafka:topic/3``; ``replay:/f.jsonl:12`` -> ``replay``."""
    if source.startswith("kafka:"):
        return source.rsplit("@", 1)[0]
    return source.split(":", 1)[0]


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


def partitions_of(sources: Sequence[str]) -> list[str]:
    """``partition_of`` for many sources; a batch usually comes from few partitions."""
    if not sources:
        return []
    first = partition_of(sources[0])
    # Replay sources all share one partition: skip the per-event split.
    if first == "replay" and all(s.startswith("replay:") for s in sources):
        return [first] * len(sources)
    return [partition_of(s) for s in sources]


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


class WindowStage:
    def __init__(self, config: WindowConfig) -> None:
        self.config = config
        self.aggregator = WindowAggregator(
            config.specs,
            config.groupings,
            allowed_lateness_s=config.allowed_lateness_s,
            idle_timeout_s=config.idle_timeout_s,
            max_series=config.max_series,
        )
        # partition -> (max event time ms, wall time of its last event)
        self._partitions: dict[str, tuple[int, float]] = {}

    def _watermark(self, wall_now_s: float) -> int | None:
        active = [
            ts for ts, seen in self._partitions.values() if wall_now_s - seen < self.config.idle_s
        ]
        if not active:
            active = [ts for ts, _ in self._partitions.values()]
        if not active:
            return None
        return min(active) - round(self.config.allowed_lateness_s * 1000)

    def observe(self, batch: TraceBatch, wall_now_s: float) -> list[WindowResult]:
        if not len(batch):
            return []
        return self.observe_batch(to_batch(batch), partitions_of(batch.source.tolist()), wall_now_s)

    def observe_batch(
        self,
        batch: EventBatch,
        partitions: Sequence[str],
        wall_now_s: float,
        *,
        count_late: bool = True,
    ) -> list[WindowResult]:
        """Columns of events, with the partition each came from."""
        if not len(batch):
            return []
        for part, ts in _partition_maxima(partitions, batch.ts_ms).items():
            prev = self._partitions.get(part)
            self._partitions[part] = (ts if prev is None else max(ts, prev[0]), wall_now_s)
        return self.aggregator.add(
            batch,
            wall_now_s=wall_now_s,
            watermark_ms=self._watermark(wall_now_s),
            count_late=count_late,
        )

    def tick(self, wall_now_s: float) -> list[WindowResult]:
        return self.aggregator.advance_wall_clock(wall_now_s)

    def flush(self) -> list[WindowResult]:
        return self.aggregator.flush_all()

    def restore(
        self,
        frontier_ms: int | None,
        batch: EventBatch,
        partitions: Sequence[str],
        wall_now_s: float,
    ) -> list[WindowResult]:
        """After a restart: windows ending at or before ``frontier_ms`` are stored
        already; ``batch`` (stored raw events from before the restart, in time
        order) rebuilds the windows still open."""
        if frontier_ms is not None:
            self.aggregator.restore_watermark(frontier_ms)
        # These events were judged late or not when they first arrived.
        return self.observe_batch(batch, partitions, wall_now_s, count_late=False)


def _partition_maxima(partitions: Sequence[str], ts_ms: npt.NDArray[np.int64]) -> dict[str, int]:
    names = list(dict.fromkeys(partitions))
    if len(names) == 1:
        return {names[0]: int(ts_ms.max())}
    index = {p: k for k, p in enumerate(names)}
    codes = np.fromiter(map(index.__getitem__, partitions), dtype=np.int64, count=len(partitions))
    top = np.full(len(names), np.iinfo(np.int64).min)
    np.maximum.at(top, codes, ts_ms)
    return dict(zip(names, top.tolist(), strict=True))
