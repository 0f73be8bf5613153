"""Scores as plain records, and the rows of the ``scores`` table.

``ScoreRecord`` is what the score path works on: built from a validated
``ScoreEvent`` (topic, replay), from an evaluator's result, or from the scores
a trace event carried inline. ``CallInfo`` is what a score needs to know about
its call to land in the call's windows.

>>> from llmpulse.schemas.score import ScoreEvent
>>> e = ScoreEvent.model_validate({"event_id": "e1", "name": "helpful", "value": False,
...     "source": "human", "timestamp": 1767225600000})
>>> r = ScoreRecord.from_event(e, "llm.scores/0@7")
>>> (r.value, r.data_type, r.target, r.origin)
(0.0, 'boolean', 'event:e1', 'llm.scores/0@7')
>>> call = CallInfo("e1", 1767225500000, {"model": "m"})
>>> row = score_row(r, call, received_at=from_ms(1767225600000))
>>> row[SCORE_NAMES.index("call_known")], row[SCORE_NAMES.index("version")]
(1, 1)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from llmpulse.schemas.batch import TraceBatch, from_ms, to_ms
from llmpulse.schemas.rows import SCORE_COLUMNS, names
from llmpulse.schemas.score import ScoreEvent, score_id_of

SCORE_NAMES: Final = names(SCORE_COLUMNS)
# Source of the scores a trace event carried in its own ``scores`` map.
INLINE_SOURCE: Final = "trace"


@dataclass(frozen=True, slots=True)
class ScoreRecord:
    score_id: str
    name: str
    value: float
    timestamp_ms: int
    source: str
    event_id: str = ""
    trace_id: str = ""
    span_id: str = ""
    data_type: str = "numeric"
    comment: str = ""
    author: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    origin: str = ""

    @property
    def target(self) -> str:
        if self.event_id:
            return f"event:{self.event_id}"
        return f"span:{self.trace_id}/{self.span_id}"

    @property
    def span(self) -> tuple[str, str]:
        return (self.trace_id, self.span_id)

    @classmethod
    def from_event(cls, e: ScoreEvent, origin: str) -> ScoreRecord:
        return cls(
            score_id=e.score_id,
            name=e.name,
            value=e.numeric_value,
            timestamp_ms=e.timestamp_ms,
            source=e.source,
            event_id=e.event_id,
            trace_id=e.trace_id,
            span_id=e.span_id,
            data_type=e.data_type,
            comment=e.comment,
            author=e.author,
            attributes=dict(e.attributes),
            origin=origin,
        )


@dataclass(frozen=True, slots=True)
class CallInfo:
    """The scored call: its id, event time and series dimensions."""

    event_id: str
    timestamp_ms: int
    dims: Mapping[str, str]


def inline_scores(batch: TraceBatch) -> list[ScoreRecord]:
    """The scores trace events carried inline, as records of their own calls.

    Their id depends on the call and the name only: the event is stored once, so
    are its scores, whichever way they reach the score path.
    """
    out: list[ScoreRecord] = []
    maps = batch.objects["scores"].tolist()
    if not any(maps):
        return out
    ids = batch.event_id.tolist()
    times = batch.timestamp_ms.tolist()
    sources = batch.source.tolist()
    for eid, ts, src, scores in zip(ids, times, sources, maps, strict=True):
        for name, value in (scores or {}).items():
            out.append(
                ScoreRecord(
                    score_id=score_id_of(f"event:{eid}", name, INLINE_SOURCE, 0, 0.0),
                    name=name,
                    value=float(value),
                    timestamp_ms=int(ts),
                    source=INLINE_SOURCE,
                    event_id=eid,
                    origin=src,
                )
            )
    return out


def score_row(r: ScoreRecord, call: CallInfo | None, *, received_at: datetime) -> tuple[Any, ...]:
    """Values in ``SCORE_COLUMNS`` order. ``version`` 1 once the call is known, so the
    row written when it becomes known replaces the one written before."""
    known = call is not None
    return (
        r.score_id,
        from_ms(r.timestamp_ms),
        r.name,
        r.value,
        r.data_type,
        r.source,
        r.event_id,
        r.trace_id,
        r.span_id,
        call.event_id if call is not None else r.event_id,
        from_ms(call.timestamp_ms) if call is not None else None,
        int(known),
        r.comment,
        r.author,
        dict(r.attributes),
        r.origin,
        received_at,
        int(known),
    )


def record_from_row(row: Sequence[Any]) -> ScoreRecord:
    """A stored ``scores`` row (``SCORE_COLUMNS`` order) back as a record."""
    v = dict(zip(SCORE_NAMES, row, strict=True))
    ts = v["timestamp"]
    return ScoreRecord(
        score_id=v["score_id"],
        name=v["name"],
        value=float(v["value"]),
        timestamp_ms=_ms(ts),
        source=v["source"],
        event_id=v["event_id"],
        trace_id=v["trace_id"],
        span_id=v["span_id"],
        data_type=v["data_type"],
        comment=v["comment"],
        author=v["author"],
        attributes=dict(v["attributes"] or {}),
        origin=v["origin"],
    )


def _ms(t: Any) -> int:
    # Rows read back through some drivers carry naive UTC datetimes.
    if isinstance(t, datetime) and t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return to_ms(t)
