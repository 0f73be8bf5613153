"""How much of its past input a stage needs to rebuild its state.

A stage whose state is a fold over a recent stretch of its input (open windows,
remembered event ids) does not snapshot that state: after a restart or a move
to another worker, its task replays that stretch from the input topic, which
Kafka keeps anyway. The stage says how long the stretch is; the task turns that
into an offset.

>>> Retention(event_time_ms=1_000).merge(Retention(rows=10))
Retention(event_time_ms=1000, rows=10)
>>> Retention().needed
False
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Retention:
    """``event_time_ms``: input holding events at or after this time is needed;
    ``rows``: the latest this many rows are needed. Either may be None (not needed)."""

    event_time_ms: int | None = None
    rows: int | None = None

    @property
    def needed(self) -> bool:
        return self.event_time_ms is not None or bool(self.rows)

    def merge(self, other: Retention) -> Retention:
        """What satisfies both: the earlier time and the larger row count."""
        times = [t for t in (self.event_time_ms, other.event_time_ms) if t is not None]
        rows = [r for r in (self.rows, other.rows) if r]
        return Retention(min(times) if times else None, max(rows) if rows else None)
