"""Writing rows idempotently: the seam between the pipeline and ClickHouse.

``EventStore`` is the small protocol the pipeline needs. ``ClickHouseStore``
implements it with clickhouse-connect; ``MemoryStore`` is an in-memory fake
shipped as library code for unit tests of callers (integration tests use the
real engine).

Exactly-once effect: before inserting, the writer asks which event ids of the
batch are already stored (a redelivery after a crash, a second replay) and
inserts only the others, with a deduplication token so a retried insert of the
same block is dropped by ClickHouse. Tables are ReplacingMergeTree on the event
id as a last line of defence against concurrent writers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import pyarrow as pa  # type: ignore[import-untyped]

from llmpulse.alerts.state import ALERT_COLUMNS
from llmpulse.detectors.storage import (
    DRIFT_BASELINE_COLUMNS,
    DRIFT_EVENT_COLUMNS,
    DRIFT_SCORE_COLUMNS,
)
from llmpulse.schemas.rows import (
    MODEL_PRICE_COLUMNS,
    REJECTED_COLUMNS,
    names,
)
from llmpulse.store.client import SerialClient

Row = Sequence[Any]

_REJECTED_NAMES = names(REJECTED_COLUMNS)
_DRIFT_COLUMNS = {
    "drift_events": names(DRIFT_EVENT_COLUMNS),
    "drift_scores": names(DRIFT_SCORE_COLUMNS),
    "drift_baselines": names(DRIFT_BASELINE_COLUMNS),
}
_PRICE_NAMES = [*names(MODEL_PRICE_COLUMNS), "loaded_at"]
_ID_CHUNK = 10_000
# Up to this many stored rows in a batch's time range, fetching them all is
# cheaper than sending the batch's ids to the server.
_RANGE_FETCH = 50_000


class EventStore(Protocol):
    def known_event_ids(self, ids: Sequence[str], t_min: datetime, t_max: datetime) -> set[str]:
        """Which of ``ids`` (with event times in [t_min, t_max]) are stored already."""

    def known_rejection_ids(self, ids: Sequence[str]) -> set[str]: ...

    def write_traces(self, table: pa.Table, token: str) -> None:
        """Insert ``traces`` rows encoded by ``llmpulse.store.encode.traces_table``."""

    def write_rejected(self, rows: Sequence[Row], token: str) -> None: ...

    def known_window_ids(
        self, ids: Sequence[str], start_min: datetime, start_max: datetime
    ) -> set[str]: ...

    def write_windows(self, table: pa.Table, token: str) -> None:
        """Insert ``window_stats`` rows encoded by ``encode.windows_table``."""

    def write_alerts(self, rows: Sequence[Row]) -> None: ...


class ClickHouseStore:
    def __init__(self, client: SerialClient) -> None:
        self.client = client

    def known_event_ids(self, ids: Sequence[str], t_min: datetime, t_max: datetime) -> set[str]:
        # The time bounds let ClickHouse prune partitions and primary-key ranges;
        # a second of slack covers rounding to DateTime64(3).
        bounds = {"lo": t_min - timedelta(seconds=1), "hi": t_max + timedelta(seconds=1)}
        in_range = "timestamp >= {lo:DateTime64(3)} AND timestamp <= {hi:DateTime64(3)}"
        # Live traffic lands in a time range nothing covers yet: one count answers.
        stored = self.client.rows(f"SELECT count() FROM traces WHERE {in_range}", bounds)[0][0]
        if not stored:
            return set()
        wanted = set(ids)
        if stored <= max(_RANGE_FETCH, 4 * len(ids)):
            rows = self.client.rows(f"SELECT event_id FROM traces WHERE {in_range}", bounds)
            return {r[0] for r in rows if r[0] in wanted}
        found: set[str] = set()
        by_id = (
            f"SELECT event_id FROM traces WHERE {in_range} AND event_id IN {{ids:Array(String)}}"
        )
        for i in range(0, len(ids), _ID_CHUNK):
            rows = self.client.rows(
                by_id,
                {**bounds, "ids": list(ids[i : i + _ID_CHUNK])},
            )
            found.update(r[0] for r in rows)
        return found

    def known_rejection_ids(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        rows = self.client.rows(
            "SELECT rejection_id FROM rejected_events WHERE rejection_id IN {ids:Array(String)}",
            {"ids": list(ids)},
        )
        return {r[0] for r in rows}

    def write_traces(self, table: pa.Table, token: str) -> None:
        if table.num_rows:
            self.client.insert_arrow(
                "traces", table, settings={"insert_deduplication_token": token}
            )

    def write_rejected(self, rows: Sequence[Row], token: str) -> None:
        if rows:
            self.client.insert(
                "rejected_events",
                rows,
                _REJECTED_NAMES,
                settings={"insert_deduplication_token": token},
            )

    def known_window_ids(
        self, ids: Sequence[str], start_min: datetime, start_max: datetime
    ) -> set[str]:
        if not ids:
            return set()
        rows = self.client.rows(
            "SELECT window_id FROM window_stats WHERE window_start >= {lo:DateTime} "
            "AND window_start <= {hi:DateTime} AND window_id IN {ids:Array(String)}",
            {"lo": start_min, "hi": start_max, "ids": list(ids)},
        )
        return {r[0] for r in rows}

    def write_windows(self, table: pa.Table, token: str) -> None:
        if table.num_rows:
            self.client.insert_arrow(
                "window_stats", table, settings={"insert_deduplication_token": token}
            )

    def write_alerts(self, rows: Sequence[Row]) -> None:
        if rows:
            self.client.insert("alerts", rows, ALERT_COLUMNS)

    def known_drift_ids(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        rows = self.client.rows(
            "SELECT drift_id FROM drift_events WHERE drift_id IN {ids:Array(String)}",
            {"ids": list(ids)},
        )
        return {r[0] for r in rows}

    def write_drift(self, table: str, rows: Sequence[Row]) -> None:
        if rows:
            self.client.insert(table, rows, _DRIFT_COLUMNS[table])

    def write_prices(self, rows: Sequence[Row]) -> None:
        if rows:
            self.client.insert("model_prices", rows, _PRICE_NAMES)


class MemoryStore:
    """In-memory ``EventStore`` for unit tests of the pipeline and its callers."""

    def __init__(self, *, fail_next_writes: int = 0) -> None:
        self.traces: dict[str, Row] = {}
        self.rejected: dict[str, Row] = {}
        self.windows: dict[str, Row] = {}
        self.alerts: list[Row] = []
        self.drift: dict[str, list[Row]] = {}
        self.fail_next_writes = fail_next_writes
        self.writes = 0

    def known_event_ids(self, ids: Sequence[str], t_min: datetime, t_max: datetime) -> set[str]:
        return {i for i in ids if i in self.traces}

    def known_rejection_ids(self, ids: Sequence[str]) -> set[str]:
        return {i for i in ids if i in self.rejected}

    def _maybe_fail(self) -> None:
        if self.fail_next_writes > 0:
            self.fail_next_writes -= 1
            raise ConnectionError("MemoryStore: injected write failure")
        self.writes += 1

    def write_traces(self, table: pa.Table, token: str) -> None:
        self._maybe_fail()
        for r in table.to_pylist():
            self.traces.setdefault(r["event_id"], tuple(r.values()))

    def write_rejected(self, rows: Sequence[Row], token: str) -> None:
        self._maybe_fail()
        for r in rows:
            self.rejected.setdefault(r[0], r)

    def known_window_ids(
        self, ids: Sequence[str], start_min: datetime, start_max: datetime
    ) -> set[str]:
        return {i for i in ids if i in self.windows}

    def write_windows(self, table: pa.Table, token: str) -> None:
        self._maybe_fail()
        for r in table.to_pylist():
            self.windows.setdefault(r["window_id"], tuple(r.values()))

    def write_alerts(self, rows: Sequence[Row]) -> None:
        self._maybe_fail()
        self.alerts.extend(rows)

    def known_drift_ids(self, ids: Sequence[str]) -> set[str]:
        stored = {r[0] for r in self.drift.get("drift_events", [])}
        return {i for i in ids if i in stored}

    def write_drift(self, table: str, rows: Sequence[Row]) -> None:
        self._maybe_fail()
        self.drift.setdefault(table, []).extend(rows)
