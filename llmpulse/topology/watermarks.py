"""Event-time progress through the topology: source clocks and upstream frontiers.

The time that closes a window travels with the data. The owner of each input
partition reports how far its partition has got in event time (the newest
event time it has read); every task downstream keeps the latest report of each
of its upstream partitions and takes the minimum, so a partition read slowly
(a backlog, a worker still starting, a rebalance) holds everything back instead
of seeing its events declared late. A partition only stops holding others back
when its owner sees it *idle*: assigned, read to its end, and quiet for the idle
timeout. A partition nobody reads is never idle.

While every partition is idle, time moves on with the wall clock from the
newest event, so the last windows of a stream that went quiet still close.

>>> f = Frontier({"a", "b"})
>>> f.update(Report("a", 1_000, idle=False)); f.value is None   # b not heard from
True
>>> f.update(Report("b", 5_000, idle=False)); f.value
1000
>>> f.update(Report("a", None, idle=True)); f.value              # a went idle and empty
5000
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Report:
    """How far one upstream partition has got: ``time_ms`` is its newest event time
    (plus the wall time spent idle, when idle); None when it never had data."""

    source: str
    time_ms: int | None
    idle: bool = False


class SourceClock:
    """The event-time progress of one input partition, kept by its owner."""

    def __init__(self, source: str, idle_s: float) -> None:
        self.source = source
        self.idle_s = idle_s
        self.max_ms: int | None = None
        self._last_data_wall: float | None = None

    def observe(self, max_ms: int | None, wall_s: float) -> None:
        """Messages arrived (``max_ms``: their newest valid event time, if any)."""
        if max_ms is not None:
            self.max_ms = max_ms if self.max_ms is None else max(self.max_ms, max_ms)
        self._last_data_wall = wall_s

    def report(self, wall_s: float, *, caught_up: bool) -> Report:
        """What to tell downstream now. ``caught_up``: the partition is assigned and
        read to its end (no lag); only then can it be idle."""
        if not caught_up:
            return Report(self.source, self.max_ms, idle=False)
        if self._last_data_wall is None:
            # Nothing read since this owner took the partition, and nothing to read.
            if self.max_ms is None:
                return Report(self.source, None, idle=True)
            self._last_data_wall = wall_s
        quiet = wall_s - self._last_data_wall
        if quiet < self.idle_s or self.max_ms is None:
            return Report(self.source, self.max_ms, idle=self.max_ms is None)
        return Report(self.source, self.max_ms + int(quiet * 1000), idle=True)


class Frontier:
    """The event-time progress of a task's input: the minimum over its upstream
    partitions (only over the active ones while any is active). With ``upstream``
    given, nothing is known until each of them has reported."""

    def __init__(self, upstream: Collection[str] | None = None) -> None:
        self.upstream = frozenset(upstream) if upstream is not None else None
        self.reports: dict[str, Report] = {}

    def update(self, report: Report) -> None:
        prev = self.reports.get(report.source)
        t = report.time_ms
        if prev is not None and prev.time_ms is not None and t is not None:
            # Times only grow, except that a partition active again after an idle
            # spell reports its real newest event, not the idle clock's guess.
            if report.idle or not prev.idle:
                t = max(t, prev.time_ms)
        elif prev is not None and t is None and not report.idle:
            t = prev.time_ms
        self.reports[report.source] = Report(report.source, t, report.idle)

    def update_all(self, reports: Iterable[Report]) -> None:
        for r in reports:
            self.update(r)

    @property
    def value(self) -> int | None:
        if self.upstream is not None and not self.upstream <= self.reports.keys():
            return None
        active = [r.time_ms for r in self.reports.values() if not r.idle]
        if None in active:
            return None  # a partition still being read, with nothing read yet: unknown
        if active:
            return min(t for t in active if t is not None)
        idle = [r.time_ms for r in self.reports.values() if r.time_ms is not None]
        return min(idle) if idle else None

    def state(self) -> list[list[object]]:
        return [[r.source, r.time_ms, r.idle] for r in self.reports.values()]

    def load(self, state: Iterable[list[object]]) -> None:
        for source, t, idle in state:
            self.update(Report(str(source), None if t is None else int(t), bool(idle)))  # type: ignore[call-overload]
