"""The score path as one stage: validate, dedup, find the call, store, fold, signal.

The worker feeds it score messages from ``llm.scores`` (``handle``), the trace
batches it stored (``observe_calls``, so scores that came before their call
are folded once the call is known) and evaluator results (``add``). Time is
injected (``clock``); all I/O goes through the ``ScoreStore`` protocol.

Exactly once in effect, for a score delivered any number of times in any
batches:

1. a score id already in ``scores`` (or seen recently) is a duplicate;
2. the window partials of the resolved scores are written *before* the score
   rows, and carry the score ids; a score whose id is already in a partial of
   its windows is not folded again. A crash between the two writes therefore
   leaves a partial without its score row: the redelivery writes the row and
   folds nothing;
3. every insert has a deduplication token and every table is a
   ReplacingMergeTree on a deterministic id, for retried inserts.

A score whose call is unknown (not in the recent-call cache nor in ``traces``)
is stored with ``call_known = 0`` and counted (``unknown_calls``), and waits in
memory (``pending_max`` at most, ``pending_ms`` of event time) for its call.
When the call arrives its score row is written again with the call (version 1,
which replaces version 0) and folded. Scores that waited too long, or that a
restart forgot, stay in ``scores``; ``sweep`` folds those whose call is stored
by now (run it at start-up and now and then).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import pyarrow as pa  # type: ignore[import-untyped]

from llmpulse.alerts.signals import Signal
from llmpulse.processors.dedup import RecentIds
from llmpulse.processors.score_validate import validate_scores
from llmpulse.processors.traces import RawMessage, Rejection, reject
from llmpulse.schemas.batch import TraceBatch, from_ms
from llmpulse.schemas.event import DIMENSIONS
from llmpulse.scores.quality import QualityFolder, QualityPartial, Scored, partials_table
from llmpulse.scores.records import CallInfo, ScoreRecord, score_row
from llmpulse.stages.intake import batch_token


class ScoreStore(Protocol):
    def known_score_ids(self, ids: Sequence[str]) -> set[str]: ...

    def folded_score_ids(
        self, ids: Sequence[str], start_min: datetime, start_max: datetime
    ) -> set[str]: ...

    def lookup_calls(
        self, event_ids: Sequence[str], spans: Sequence[tuple[str, str]]
    ) -> tuple[dict[str, CallInfo], dict[tuple[str, str], CallInfo]]: ...

    def write_scores(self, rows: Sequence[Sequence[Any]], token: str) -> None: ...

    def write_window_scores(self, table: pa.Table, token: str) -> None: ...

    def known_rejection_ids(self, ids: Sequence[str]) -> set[str]: ...

    def write_rejected(self, rows: Sequence[Sequence[Any]], token: str) -> None: ...

    def unresolved_scores(self, since: datetime, limit: int) -> list[ScoreRecord]: ...


@dataclass
class ScoreStats:
    messages: int = 0
    accepted: int = 0  # new scores stored
    duplicates: int = 0
    unknown_calls: int = 0  # stored before their call was known
    resolved_late: int = 0  # of those, folded once the call came
    expired: int = 0  # stopped waiting in memory (still stored; ``sweep`` may fold them)
    folded: int = 0
    partials: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def add(self, other: ScoreStats) -> None:
        for name in (
            "messages",
            "accepted",
            "duplicates",
            "unknown_calls",
            "resolved_late",
            "expired",
            "folded",
            "partials",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rejected.update(other.rejected)


@dataclass
class ScoreOutcome:
    stats: ScoreStats
    rejections: list[Rejection] = field(default_factory=list)
    partials: list[QualityPartial] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    folded: list[Scored] = field(default_factory=list)  # (score, call) folded now
    # Scores delivered again that were stored before (``resend_stored``), with their
    # call: a worker that crashed after storing them may not have passed them on.
    resent: list[Scored] = field(default_factory=list)


@dataclass(frozen=True)
class PreparedScores:
    messages: int
    records: list[ScoreRecord]
    rejections: list[Rejection]
    duplicates: int


class CallIndex:
    """Recently stored calls by event id and by (trace_id, span_id), bounded."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._by_id: OrderedDict[str, CallInfo] = OrderedDict()
        self._by_span: dict[tuple[str, str], str] = {}
        self._span_of: dict[str, tuple[str, str]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, call: CallInfo, span: tuple[str, str]) -> None:
        if self.capacity <= 0:
            return
        self._by_id[call.event_id] = call
        if span[0] and span[1]:
            self._by_span[span] = call.event_id
            self._span_of[call.event_id] = span
        while len(self._by_id) > self.capacity:
            eid, _ = self._by_id.popitem(last=False)
            old = self._span_of.pop(eid, None)
            if old is not None and self._by_span.get(old) == eid:
                del self._by_span[old]

    def get_all(self, records: Sequence[ScoreRecord]) -> list[CallInfo | None]:
        """``get`` of each record, in one loop (a call per score showed in profiles)."""
        by_id, by_span = self._by_id, self._by_span
        out: list[CallInfo | None] = []
        for rec in records:
            eid = rec.event_id or by_span.get(rec.span)
            out.append(None if eid is None else by_id.get(eid))
        return out

    def get(self, rec: ScoreRecord) -> CallInfo | None:
        if rec.event_id:
            return self._by_id.get(rec.event_id)
        eid = self._by_span.get(rec.span)
        return None if eid is None else self._by_id.get(eid)


def calls_of(batch: TraceBatch) -> list[tuple[CallInfo, tuple[str, str]]]:
    """The calls of a stored trace batch, with their (trace_id, span_id). Calls of
    one series share their (read-only) ``dims`` mapping: a batch has few series."""
    o = batch.objects
    shared: dict[tuple[str, ...], dict[str, str]] = {}
    out = []
    for eid, ts, trace, span, key in zip(
        batch.event_id.tolist(),
        batch.timestamp_ms.tolist(),
        o["trace_id"].tolist(),
        o["span_id"].tolist(),
        zip(*(o[d].tolist() for d in DIMENSIONS), strict=True),
        strict=True,
    ):
        dims = shared.get(key)
        if dims is None:
            dims = shared[key] = {n: v for n, v in zip(DIMENSIONS, key, strict=True) if v}
        out.append((CallInfo(eid, int(ts), dims), (trace, span)))
    return out


def utc_now() -> datetime:
    return datetime.now(UTC)


class ScoreStage:
    def __init__(
        self,
        folder: QualityFolder,
        store: ScoreStore,
        *,
        call_cache: int = 200_000,
        pending_max: int = 100_000,
        pending_ms: int = 3_600_000,
        recent: RecentIds | None = None,
        clock: Callable[[], datetime] = utc_now,
        resend_stored: bool = False,
    ) -> None:
        self.folder = folder
        self.resend_stored = resend_stored
        self.store = store
        self.calls = CallIndex(call_cache)
        self.pending_max = pending_max
        self.pending_ms = pending_ms
        self.recent = recent if recent is not None else RecentIds(1_000_000)
        self.clock = clock
        self._pending: OrderedDict[str, ScoreRecord] = OrderedDict()
        self.stats = ScoreStats()

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- input ------------------------------------------------------------------------

    def handle(self, messages: Sequence[RawMessage]) -> ScoreOutcome:
        """Score messages from the topic or a replay file (see the module doc)."""
        return self.commit(self.prepare(messages))

    def prepare(self, messages: Sequence[RawMessage]) -> PreparedScores:
        """Validation only (no state): may run while the previous batch commits."""
        checked = validate_scores([m.value for m in messages])
        rejections = [reject(messages[i], err) for i, err in checked.rejected]
        records = [
            ScoreRecord.from_event(s, messages[i].source)
            for s, i in zip(checked.scores, checked.positions, strict=True)
        ]
        return PreparedScores(len(messages), records, rejections, checked.duplicates)

    def commit(self, prepared: PreparedScores) -> ScoreOutcome:
        now = self.clock()
        out = self._ingest(prepared.records, now)
        out.stats.messages = prepared.messages
        out.stats.duplicates += prepared.duplicates
        if prepared.rejections:
            self._write_rejections(prepared.rejections, now)
            out.rejections = prepared.rejections
            out.stats.rejected.update(r.category for r in prepared.rejections)
        self.stats.add(out.stats)
        return out

    def add(self, records: Sequence[ScoreRecord]) -> ScoreOutcome:
        """Scores made inside llmpulse (evaluators, the scores a trace carried inline)."""
        out = self._ingest(records, self.clock())
        out.stats.messages = len(records)
        self.stats.add(out.stats)
        return out

    def observe_calls(self, batch: TraceBatch) -> ScoreOutcome:
        """Calls just stored: remember them, fold the scores that waited for them, and
        move event time on (signals of windows whose alert delay has passed)."""
        out = ScoreOutcome(ScoreStats())
        if not len(batch):
            return out
        found: list[Scored] = []
        for call, span in calls_of(batch):
            self.calls.add(call, span)
        if self._pending:
            for sid, rec in list(self._pending.items()):
                hit = self.calls.get(rec)
                if hit is not None:
                    del self._pending[sid]
                    found.append((rec, hit))
        now = self.clock()
        if found:
            self._fold_and_write(found, [], now, out)
            out.stats.resolved_late += len(found)
        watermark = int(batch.timestamp_ms.max())
        out.signals = self.folder.advance(watermark)
        self._expire(watermark, out.stats)
        self.stats.add(out.stats)
        return out

    def flush(self) -> list[Signal]:
        """The signals of every window still held for alerting (end of a replay)."""
        return self.folder.advance(2**62)

    def sweep(self, since: datetime, limit: int = 100_000) -> ScoreOutcome:
        """Fold stored scores whose call was unknown when they came and is stored now;
        the others wait in memory (restores the pending scores after a restart)."""
        out = ScoreOutcome(ScoreStats())
        records = [
            r for r in self.store.unresolved_scores(since, limit) if r.score_id not in self._pending
        ]
        if not records:
            return out
        resolved, unresolved = self._resolve(records)
        if resolved:
            self._fold_and_write(resolved, [], self.clock(), out)
            out.stats.resolved_late += len(resolved)
        for r in unresolved:
            self._hold(r, out.stats)
        self.stats.add(out.stats)
        return out

    # -- internals ----------------------------------------------------------------------

    def _ingest(self, records: Sequence[ScoreRecord], now: datetime) -> ScoreOutcome:
        out = ScoreOutcome(ScoreStats())
        fresh: dict[str, ScoreRecord] = {}
        for r in records:
            if r.score_id in self.recent or r.score_id in fresh or r.score_id in self._pending:
                out.stats.duplicates += 1
            else:
                fresh[r.score_id] = r
        if fresh:
            stored = self.store.known_score_ids(list(fresh))
            out.stats.duplicates += len(stored)
            again = [fresh.pop(sid) for sid in sorted(stored)]
            if again and self.resend_stored:
                self._again(again, now, out)
        if not fresh:
            return out
        resolved, unresolved = self._resolve(list(fresh.values()))
        self._fold_and_write(resolved, unresolved, now, out)
        out.stats.accepted += len(fresh)
        out.stats.unknown_calls += len(unresolved)
        for r in unresolved:
            self._hold(r, out.stats)
        self.recent.add_all(fresh)
        return out

    def _again(self, records: list[ScoreRecord], now: datetime, out: ScoreOutcome) -> None:
        """Stored scores delivered again (a redelivery after a crash): fold those whose
        fold the crash interrupted, hold those still waiting for their call, and list
        the resolved ones in ``out.resent`` for whatever the caller passes on."""
        resolved, unresolved = self._resolve(records)
        if resolved:
            todo = self._not_folded(resolved)
            if todo:
                self._fold_and_write(todo, [], now, out)
            out.resent.extend(resolved)
        for r in unresolved:
            self._hold(r, out.stats)
        self.recent.add_all(r.score_id for r in records)

    def _not_folded(self, resolved: list[Scored]) -> list[Scored]:
        """The scores not yet in any stored window (``resolved`` is not empty)."""
        times = [c.timestamp_ms for _, c in resolved]
        longest = max((s.length_ms for s in self.folder.config.specs), default=0)
        already = self.store.folded_score_ids(
            [r.score_id for r, _ in resolved],
            from_ms(min(times) - longest),
            from_ms(max(times)),
        )
        return [(r, c) for r, c in resolved if r.score_id not in already]

    def _resolve(self, records: Sequence[ScoreRecord]) -> tuple[list[Scored], list[ScoreRecord]]:
        resolved: list[Scored] = []
        missing: list[ScoreRecord] = []
        for r, call in zip(records, self.calls.get_all(records), strict=True):
            if call is None:
                missing.append(r)
            else:
                resolved.append((r, call))
        if not missing:
            return resolved, []
        by_id, by_span = self.store.lookup_calls(
            sorted({r.event_id for r in missing if r.event_id}),
            sorted({r.span for r in missing if not r.event_id}),
        )
        unresolved = []
        for r in missing:
            hit = by_id.get(r.event_id) if r.event_id else by_span.get(r.span)
            if hit is None:
                unresolved.append(r)
            else:
                resolved.append((r, hit))
        return resolved, unresolved

    def _fold_and_write(
        self,
        resolved: list[Scored],
        unresolved: list[ScoreRecord],
        now: datetime,
        out: ScoreOutcome,
    ) -> None:
        if resolved:
            todo = self._not_folded(resolved)
            partials = self.folder.fold(todo)
            if partials:
                ids = [p.partial_id for p in partials]
                self.store.write_window_scores(
                    partials_table(partials, now), batch_token("window_scores", ids)
                )
            out.partials.extend(partials)
            out.folded.extend(todo)
            out.stats.folded += len(todo)
            out.stats.partials += len(partials)
        rows = [score_row(r, c, received_at=now) for r, c in resolved]
        rows += [score_row(r, None, received_at=now) for r in unresolved]
        if rows:
            keys = [f"{row[0]}:{row[-1]}" for row in rows]
            self.store.write_scores(rows, batch_token("scores", keys))

    def _hold(self, rec: ScoreRecord, stats: ScoreStats) -> None:
        if self.pending_max <= 0:
            stats.expired += 1
            return
        self._pending[rec.score_id] = rec
        while len(self._pending) > self.pending_max:
            self._pending.popitem(last=False)
            stats.expired += 1

    def _expire(self, watermark_ms: int, stats: ScoreStats) -> None:
        limit = watermark_ms - self.pending_ms
        while self._pending:
            sid, rec = next(iter(self._pending.items()))
            if rec.timestamp_ms >= limit:
                break
            del self._pending[sid]
            stats.expired += 1

    def _write_rejections(self, rejections: Sequence[Rejection], now: datetime) -> None:
        known = self.store.known_rejection_ids([r.rejection_id for r in rejections])
        new = [r for r in rejections if r.rejection_id not in known]
        if new:
            self.store.write_rejected(
                [
                    (r.rejection_id, now, r.source, r.reason, r.category, r.field, r.event_id,
                     r.raw_text)
                    for r in new
                ],
                batch_token("rejected", [r.rejection_id for r in new]),
            )  # fmt: skip


__all__ = [
    "CallIndex",
    "PreparedScores",
    "ScoreOutcome",
    "ScoreStage",
    "ScoreStats",
    "ScoreStore",
    "calls_of",
]
