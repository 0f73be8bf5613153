"""Reads of what is already stored, for sources that may repeat it (a replay).

A worker never needs these per batch: each task knows what it has written.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

_ID_CHUNK: Final = 10_000
# Up to this many stored rows in a batch's time range, fetching them all is
# cheaper than sending the batch's ids to the server.
_RANGE_FETCH: Final = 50_000


class Reader(Protocol):
    def rows(
        self, sql: str, parameters: dict[str, Any] | None = None, **settings: Any
    ) -> list[tuple[Any, ...]]: ...


def known_ids(store: Reader, table: str, column: str, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` are stored in ``table.column``."""
    found: set[str] = set()
    for i in range(0, len(ids), _ID_CHUNK):
        rows = store.rows(
            f"SELECT {column} FROM {table} WHERE {column} IN {{ids:Array(String)}}",
            {"ids": list(ids[i : i + _ID_CHUNK])},
        )
        found.update(r[0] for r in rows)
    return found


def known_event_ids(
    store: Reader, ids: Sequence[str], t_min: datetime, t_max: datetime
) -> set[str]:
    """Which of ``ids`` (with event times in [t_min, t_max]) are in ``traces``."""
    # The time bounds let ClickHouse prune partitions and primary-key ranges;
    # a second of slack covers rounding to DateTime64(3).
    bounds = {"lo": t_min - timedelta(seconds=1), "hi": t_max + timedelta(seconds=1)}
    in_range = "timestamp >= {lo:DateTime64(3)} AND timestamp <= {hi:DateTime64(3)}"
    # A fresh time range (live traffic, a new file): one count answers.
    stored = store.rows(f"SELECT count() FROM traces WHERE {in_range}", bounds)[0][0]
    if not stored:
        return set()
    wanted = set(ids)
    if stored <= max(_RANGE_FETCH, 4 * len(ids)):
        rows = store.rows(f"SELECT event_id FROM traces WHERE {in_range}", bounds)
        return {r[0] for r in rows if r[0] in wanted}
    found: set[str] = set()
    by_id = f"SELECT event_id FROM traces WHERE {in_range} AND event_id IN {{ids:Array(String)}}"
    for i in range(0, len(ids), _ID_CHUNK):
        rows = store.rows(by_id, {**bounds, "ids": list(ids[i : i + _ID_CHUNK])})
        found.update(r[0] for r in rows)
    return found
