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

from llmpulse.processors.traces import PricedEvent
from llmpulse.processors.windows import (
    DIMENSIONS,
    EventBatch,
    GroupingSet,
    WindowAggregator,
    WindowResult,
    WindowSpec,
)


def partition_of(source: str) -> str:
    """``kafka:topic/3@1200`` -> ``kafka:topic/3``; ``replay:/f.jsonl:12`` -> ``replay``."""
    if source.startswith("kafka:"):
        return source.rsplit("@", 1)[0]
    return source.split(":", 1)[0]


def to_batch(events: Sequence[PricedEvent]) -> EventBatch:
    evs = [p.event for p in events]
    nan = float("nan")
    return EventBatch(
        ts_ms=np.fromiter((e.timestamp_ms for e in evs), np.int64, len(evs)),
        latency_ms=np.fromiter((e.latency_ms for e in evs), np.float64, len(evs)),
        ttft_ms=np.fromiter(
            (nan if e.ttft_ms is None else e.ttft_ms for e in evs), np.float64, len(evs)
        ),
        is_error=np.fromiter((e.status == "error" for e in evs), np.bool_, len(evs)),
        input_tokens=np.fromiter((e.input_tokens or 0 for e in evs), np.int64, len(evs)),
        output_tokens=np.fromiter((e.output_tokens or 0 for e in evs), np.int64, len(evs)),
        cost_usd=np.fromiter(
            (nan if p.cost.cost_usd is None else p.cost.cost_usd for p in events),
            np.float64,
            len(evs),
        ),
        dims={d: np.array([getattr(e, d) for e in evs], dtype=object) for d in DIMENSIONS},
    )


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

    def observe(self, events: Sequence[PricedEvent], wall_now_s: float) -> list[WindowResult]:
        if not events:
            return []
        return self.observe_batch(
            to_batch(events), [partition_of(p.source) for p in events], wall_now_s
        )

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
        for part, ts in zip(partitions, batch.ts_ms.tolist(), strict=True):
            prev = self._partitions.get(part)
            if prev is None or ts > prev[0]:
                self._partitions[part] = (ts, wall_now_s)
            elif prev[1] != wall_now_s:
                self._partitions[part] = (prev[0], wall_now_s)
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
