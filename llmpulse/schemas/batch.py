"""Accepted trace events as columns: the batch form of the event contract.

A ``TraceBatch`` holds the same values a ``TraceEvent`` would, one numpy column
per field, so the hot path (pricing, windows, the ClickHouse insert) never builds
a Python object per event. Conventions: timestamps are epoch milliseconds
(``timestamp_ms``); a missing ``ttft_ms`` or ``cost_usd`` is NaN; a missing token
count is -1 (valid counts are >= 0); labels are "" when not set.

>>> from llmpulse.schemas.event import TraceEvent
>>> e = TraceEvent.model_validate({"schema_version": 1, "event_id": "a", "service": "s",
...     "model": "m", "timestamp": 1767225600123, "latency_ms": 5, "input_tokens": 7})
>>> b = TraceBatch.from_events([e], ["test:1"])
>>> t = b.tokens
>>> len(b), int(b.timestamp_ms[0]), int(t("input_tokens")[0]), int(t("output_tokens")[0])
(1, 1767225600123, 7, -1)
>>> b.time_range()[0].isoformat()
'2026-01-01T00:00:00.123000+00:00'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from llmpulse._types import FloatArray, IntArray, ObjArray
from llmpulse.schemas.event import LABEL_FIELDS, TraceEvent

# Re-exported: a batch's token columns are the event's token fields.
from llmpulse.schemas.event import TOKEN_FIELDS as TOKEN_FIELDS  # noqa: PLC0414

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)

# Column kinds, in TraceEvent terms.
STRING_FIELDS: Final = ("event_id", "service", "model", *LABEL_FIELDS, "status")
FLOAT_FIELDS: Final = ("latency_ms",)
OPTIONAL_FLOAT_FIELDS: Final = ("ttft_ms", "cost_usd")
TEXT_FIELDS: Final = ("prompt", "response")
EMBEDDING_FIELDS: Final = ("prompt_embedding", "response_embedding")
MAP_FIELDS: Final = ("scores", "attributes")
OBJECT_FIELDS: Final = (*STRING_FIELDS, *TEXT_FIELDS, *EMBEDDING_FIELDS, *MAP_FIELDS)
NUMERIC_FIELDS: Final = ("timestamp_ms", *FLOAT_FIELDS, *OPTIONAL_FLOAT_FIELDS, *TOKEN_FIELDS)


def to_ms(t: datetime | float) -> int:
    """Epoch milliseconds of an aware datetime or of a number already in ms.

    Integer arithmetic on purpose: ``timestamp() * 1000`` can land one
    millisecond early, which would change ids derived from event times.

    >>> to_ms(datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=UTC))
    1767225600123
    """
    if isinstance(t, datetime):
        if t.tzinfo is None:
            raise ValueError("event times must be timezone-aware")
        return (t - EPOCH) // _MS
    return int(t)


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=int(ms))


def event_values(e: TraceEvent) -> dict[str, Any]:
    """One event in the column conventions above (used for events validated one by one)."""
    out: dict[str, Any] = {f: getattr(e, f) for f in (*STRING_FIELDS, *TEXT_FIELDS)}
    out["prompt_embedding"] = e.prompt_embedding
    out["response_embedding"] = e.response_embedding
    out["scores"] = dict(e.scores)
    out["attributes"] = dict(e.attributes)
    out["timestamp_ms"] = to_ms(e.timestamp)
    out["latency_ms"] = e.latency_ms
    out["ttft_ms"] = math.nan if e.ttft_ms is None else e.ttft_ms
    out["cost_usd"] = math.nan if e.cost_usd is None else e.cost_usd
    for f in TOKEN_FIELDS:
        v = getattr(e, f)
        out[f] = -1 if v is None else v
    return out


@dataclass
class TraceBatch:
    """Accepted events as columns, in arrival order, with where each came from,
    (once priced) what each cost, and (once redacted) the PII each had."""

    objects: dict[str, ObjArray]
    numbers: dict[str, npt.NDArray[Any]]
    source: ObjArray
    cost: FloatArray = field(default_factory=lambda: np.zeros(0))
    cost_source: ObjArray = field(default_factory=lambda: np.zeros(0, dtype=object))
    price_version: ObjArray = field(default_factory=lambda: np.zeros(0, dtype=object))
    # PII found per row, by type ({"email": 2}), or None: set by privacy.redact_batch.
    redactions: ObjArray = field(default_factory=lambda: np.zeros(0, dtype=object))

    def __post_init__(self) -> None:
        n = len(self.source)
        if self.cost.size != n:
            self.cost = np.full(n, math.nan)
            self.cost_source = np.full(n, "unpriced", dtype=object)
            self.price_version = np.full(n, "", dtype=object)
        if self.redactions.size != n:
            self.redactions = np.full(n, None, dtype=object)

    def __len__(self) -> int:
        return len(self.source)

    @property
    def event_id(self) -> ObjArray:
        return self.objects["event_id"]

    @property
    def timestamp_ms(self) -> IntArray:
        return self.numbers["timestamp_ms"]

    def tokens(self, name: str) -> IntArray:
        return self.numbers[name]

    def select(self, index: npt.NDArray[Any] | slice) -> TraceBatch:
        """The rows at ``index`` (integer indices, a boolean mask or a slice)."""
        return TraceBatch(
            {k: v[index] for k, v in self.objects.items()},
            {k: v[index] for k, v in self.numbers.items()},
            self.source[index],
            self.cost[index],
            self.cost_source[index],
            self.price_version[index],
            self.redactions[index],
        )

    def time_range(self) -> tuple[datetime, datetime]:
        return from_ms(int(self.timestamp_ms.min())), from_ms(int(self.timestamp_ms.max()))

    @classmethod
    def from_values(cls, rows: Sequence[dict[str, Any]], sources: Sequence[str]) -> TraceBatch:
        """From per-event dicts in the column conventions (``event_values``)."""
        n = len(rows)
        objects = {f: object_array([r[f] for r in rows]) for f in OBJECT_FIELDS}
        numbers: dict[str, npt.NDArray[Any]] = {
            "timestamp_ms": np.array([r["timestamp_ms"] for r in rows], dtype=np.int64),
        }
        for f in (*FLOAT_FIELDS, *OPTIONAL_FLOAT_FIELDS):
            numbers[f] = np.array([r[f] for r in rows], dtype=np.float64).reshape(n)
        for f in TOKEN_FIELDS:
            numbers[f] = np.array([r[f] for r in rows], dtype=np.int64).reshape(n)
        return cls(objects, numbers, object_array(list(sources)))

    @classmethod
    def empty(cls) -> TraceBatch:
        return cls.from_values([], [])

    @classmethod
    def from_events(cls, events: Sequence[TraceEvent], sources: Sequence[str]) -> TraceBatch:
        return cls.from_values([event_values(e) for e in events], sources)


def object_array(values: list[Any]) -> ObjArray:
    """A 1-D object array of ``values``."""
    # np.array would turn a list of equal-length lists into a 2-D array.
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def concat(batches: Sequence[TraceBatch]) -> TraceBatch:
    """One batch of the rows of ``batches``, in order (cost, provenance and
    redactions kept where every part has them)."""
    if len(batches) == 1:
        return batches[0]
    if not batches:
        return TraceBatch.empty()
    first = batches[0]
    out = TraceBatch(
        {k: np.concatenate([b.objects[k] for b in batches]) for k in first.objects},
        {k: np.concatenate([b.numbers[k] for b in batches]) for k in first.numbers},
        np.concatenate([b.source for b in batches]),
    )
    if all(b.cost.size == len(b) for b in batches):
        out.cost = np.concatenate([b.cost for b in batches])
        out.cost_source = np.concatenate([b.cost_source for b in batches])
        out.price_version = np.concatenate([b.price_version for b in batches])
    if all(b.redactions.size == len(b) for b in batches):
        out.redactions = np.concatenate([b.redactions for b in batches])
    return out
