"""The ClickHouse side of the score path: lookups and idempotent writes.

``ClickHouseScoreStore`` implements ``stage.ScoreStore`` over a ``SerialClient``
(chDB or a server); ``MemoryScoreStore`` is the in-memory fake for unit tests
of callers, as ``store.writer.MemoryStore`` is for the trace pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]

from llmpulse.schemas.event import DIMENSIONS
from llmpulse.schemas.rows import REJECTED_COLUMNS, names
from llmpulse.scores.records import SCORE_NAMES, CallInfo, ScoreRecord, record_from_row
from llmpulse.store.client import SerialClient

_CHUNK = 5000
_DIMS = ", ".join(DIMENSIONS)
_CALL_SQL = (
    f"SELECT event_id, trace_id, span_id, toUnixTimestamp64Milli(timestamp), {_DIMS} "
    "FROM traces WHERE {cond}"
)


# Id lists are written into the SQL here, escaped as the client's own binding
# escapes strings (backslash, quote, backtick, tab, newline): the client does it
# a character at a time in Python, 0.4 s for the ids of 12,000 scores.
_ESCAPES = str.maketrans({c: "\\" + c for c in ("\\", "'", "`", "\t", "\n")})


def strings_literal(values: Iterable[str]) -> str:
    """A ClickHouse ``Array(String)`` literal of ``values``.

    >>> print(strings_literal(["a", "it's", "{x:String}"]))
    ['a', 'it\\'s', '{x:String}']
    """
    return "[" + ", ".join(["'" + v.translate(_ESCAPES) + "'" for v in values]) + "]"


def _seconds(t: datetime) -> int:
    """Whole epoch seconds of ``t`` (what a bound ``DateTime`` keeps of it)."""
    return math.floor(t.timestamp())


def _call(row: Sequence[Any]) -> tuple[str, str, str, CallInfo]:
    eid, trace, span, ms = row[0], row[1], row[2], int(row[3])
    dims = {d: str(v) for d, v in zip(DIMENSIONS, row[4:], strict=True) if v}
    return eid, trace, span, CallInfo(eid, ms, dims)


class ClickHouseScoreStore:
    def __init__(self, client: SerialClient) -> None:
        self.client = client

    def known_score_ids(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(ids), _CHUNK):
            rows = self.client.rows(
                "SELECT score_id FROM scores WHERE score_id IN "
                + strings_literal(ids[i : i + _CHUNK])
            )
            found.update(r[0] for r in rows)
        return found

    def folded_score_ids(
        self, ids: Sequence[str], start_min: datetime, start_max: datetime
    ) -> set[str]:
        if not ids:
            return set()
        wanted = set(ids)
        found: set[str] = set()
        lo = _seconds(start_min - timedelta(seconds=1))
        hi = _seconds(start_max + timedelta(seconds=1))
        for i in range(0, len(ids), _CHUNK):
            # ARRAY JOIN then IN (a hash set) rather than hasAny(score_ids, ids): with
            # 5,000 ids hasAny took seconds per query once the windows held partials.
            rows = self.client.rows(
                "SELECT DISTINCT id FROM window_scores ARRAY JOIN score_ids AS id "
                f"WHERE window_start >= toDateTime({lo}) AND window_start <= toDateTime({hi}) "
                f"AND id IN {strings_literal(ids[i : i + _CHUNK])}"
            )
            found.update(r[0] for r in rows if r[0] in wanted)
        return found

    def lookup_calls(
        self, event_ids: Sequence[str], spans: Sequence[tuple[str, str]]
    ) -> tuple[dict[str, CallInfo], dict[tuple[str, str], CallInfo]]:
        by_id: dict[str, CallInfo] = {}
        by_span: dict[tuple[str, str], CallInfo] = {}
        for i in range(0, len(event_ids), _CHUNK):
            sql = _CALL_SQL.format(cond="event_id IN " + strings_literal(event_ids[i : i + _CHUNK]))
            for row in self.client.rows(sql):
                eid, _, _, info = _call(row)
                by_id[eid] = info
        wanted = set(spans)
        traces = sorted({t for t, _ in spans})
        for i in range(0, len(traces), _CHUNK):
            sql = _CALL_SQL.format(cond="trace_id IN " + strings_literal(traces[i : i + _CHUNK]))
            for row in self.client.rows(sql):
                _, trace, span, info = _call(row)
                if (trace, span) in wanted:
                    by_span[(trace, span)] = info
        return by_id, by_span

    def write_scores(self, rows: Sequence[Sequence[Any]], token: str) -> None:
        if rows:
            self.client.insert(
                "scores", rows, SCORE_NAMES, settings={"insert_deduplication_token": token}
            )

    def write_window_scores(self, table: pa.Table, token: str) -> None:
        if table.num_rows:
            self.client.insert_arrow(
                "window_scores", table, settings={"insert_deduplication_token": token}
            )

    def known_rejection_ids(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        rows = self.client.rows(
            "SELECT rejection_id FROM rejected_events WHERE rejection_id IN {ids:Array(String)}",
            {"ids": list(ids)},
        )
        return {r[0] for r in rows}

    def write_rejected(self, rows: Sequence[Sequence[Any]], token: str) -> None:
        if rows:
            self.client.insert(
                "rejected_events",
                rows,
                names(REJECTED_COLUMNS),
                settings={"insert_deduplication_token": token},
            )

    def unresolved_scores(self, since: datetime, limit: int) -> list[ScoreRecord]:
        rows = self.client.rows(
            f"SELECT {', '.join(SCORE_NAMES)} FROM scores FINAL "
            "WHERE call_known = 0 AND timestamp >= {since:DateTime64(3)} "
            "ORDER BY timestamp DESC LIMIT {n:UInt64}",
            {"since": since, "n": int(limit)},
        )
        return [record_from_row(r) for r in reversed(rows)]


class MemoryScoreStore:
    """In-memory ``ScoreStore`` for unit tests of callers."""

    def __init__(self, calls: Sequence[CallInfo | tuple[str, str, CallInfo]] = ()) -> None:
        self.scores: dict[str, tuple[Any, ...]] = {}
        self.partials: dict[str, dict[str, Any]] = {}
        self.rejected: dict[str, Sequence[Any]] = {}
        self.calls: dict[str, CallInfo] = {}
        self.spans: dict[tuple[str, str], CallInfo] = {}
        for c in calls:
            if isinstance(c, CallInfo):
                self.calls[c.event_id] = c
            else:
                self.spans[(c[0], c[1])] = c[2]
                self.calls[c[2].event_id] = c[2]

    def known_score_ids(self, ids: Sequence[str]) -> set[str]:
        return {i for i in ids if i in self.scores}

    def folded_score_ids(
        self, ids: Sequence[str], start_min: datetime, start_max: datetime
    ) -> set[str]:
        folded = {s for p in self.partials.values() for s in p["score_ids"]}
        return {i for i in ids if i in folded}

    def lookup_calls(
        self, event_ids: Sequence[str], spans: Sequence[tuple[str, str]]
    ) -> tuple[dict[str, CallInfo], dict[tuple[str, str], CallInfo]]:
        return (
            {e: self.calls[e] for e in event_ids if e in self.calls},
            {s: self.spans[s] for s in spans if s in self.spans},
        )

    def write_scores(self, rows: Sequence[Sequence[Any]], token: str) -> None:
        version = SCORE_NAMES.index("version")
        for r in rows:
            old = self.scores.get(r[0])
            if old is None or old[version] <= r[version]:
                self.scores[r[0]] = tuple(r)

    def write_window_scores(self, table: pa.Table, token: str) -> None:
        for r in table.to_pylist():
            self.partials.setdefault(r["partial_id"], r)

    def known_rejection_ids(self, ids: Sequence[str]) -> set[str]:
        return {i for i in ids if i in self.rejected}

    def write_rejected(self, rows: Sequence[Sequence[Any]], token: str) -> None:
        for r in rows:
            self.rejected.setdefault(r[0], r)

    def unresolved_scores(self, since: datetime, limit: int) -> list[ScoreRecord]:
        known = SCORE_NAMES.index("call_known")
        ts = SCORE_NAMES.index("timestamp")
        rows = [r for r in self.scores.values() if not r[known] and r[ts] >= since]
        return [record_from_row(r) for r in rows[-limit:]]
