"""Validating a batch of raw messages column by column, with the per-event
validator as the judge of anything unusual.

Most traffic is canonical JSON: numbers as numbers, labels as strings, epoch-ms
timestamps. For those rows the rules of ``TraceEvent`` are checked on whole
columns (one type scan and a few numpy comparisons per field) instead of one
pydantic call per event, which is what lets replay run at hundreds of thousands
of events per second. Any row that is not plainly valid there -- a wrong type, a
value out of range, an RFC 3339 timestamp, an embedding, invalid JSON -- goes
through ``validate_raw`` exactly as before, which accepts it with the same
values or rejects it with the usual field, rule and value. The two paths agree
by construction and by a property test (tests/unit/processors/test_validate_batch.py).

>>> out = validate_batch([
...     b'{"schema_version":1,"event_id":"a","timestamp":1767225600000,'
...     b'"service":"s","model":"m","latency_ms":12.5,"tenant":null}',
...     b'{"schema_version":1,"event_id":"b","timestamp":"2026-01-01T00:00:01Z",'
...     b'"service":"s","model":"m","latency_ms":3}',
...     b'{"schema_version":1,"event_id":"c","timestamp":1767225600000,'
...     b'"service":"s","model":"m","latency_ms":-1}',
... ])
>>> list(out.batch.event_id), out.positions.tolist(), out.batch.objects["tenant"][0]
(['a', 'b'], [0, 1], '')
>>> [(i, str(err)) for i, err in out.rejected]
[(2, 'latency_ms: must be >= 0, got -1')]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

from llmpulse.errors import ValidationError
from llmpulse.processors.validate import validate_raw
from llmpulse.schemas.batch import (
    EMBEDDING_FIELDS,
    OPTIONAL_FLOAT_FIELDS,
    TEXT_FIELDS,
    TOKEN_FIELDS,
    TraceBatch,
    event_values,
    object_array,
)
from llmpulse.schemas.event import (
    DEFAULT_LIMITS,
    LABEL_FIELDS,
    MAX_EVENT_TIME,
    MAX_ID_LEN,
    MAX_LABEL_LEN,
    MIN_EVENT_TIME,
    EventLimits,
    TraceEvent,
)

_MIN_MS: Final = int(MIN_EVENT_TIME.timestamp()) * 1000
_MAX_MS: Final = int(MAX_EVENT_TIME.timestamp()) * 1000
_MAX_TOKENS: Final = float(2**40)
_NUM: Final = frozenset({int, float})


class _Absent:
    """A field not present in the JSON object (distinct from an explicit null)."""


_ABSENT: Final = _Absent()


@dataclass
class BatchValidation:
    """Accepted events (in arrival order, first of each event id), their positions
    in the input, rejected positions with the reason, and in-batch duplicates."""

    batch: TraceBatch
    positions: npt.NDArray[np.int64]
    rejected: list[tuple[int, ValidationError]] = field(default_factory=list)
    duplicates: int = 0


class _Columns:
    """Column extraction and the per-field checks; rows failing a check are marked
    for the per-event validator (``slow``)."""

    def __init__(self, records: list[Any], columns: dict[str, list[Any]], slow: set[int]) -> None:
        self.records = records
        self.columns = columns
        self.n = len(records)
        self.slow = slow

    def take(self, name: str, default: Any = None) -> list[Any]:
        """The field's values; ``default`` where it is absent (None is ambiguous:
        absent or an explicit null, so the records are asked only then)."""
        col = self.columns[name]
        if default is not None and None in col:
            records = self.records
            col = [
                default if v is None and name not in records[i] else v for i, v in enumerate(col)
            ]
        return col

    def mark(self, col: list[Any], ok: Callable[[Any], bool]) -> None:
        self.slow.update(i for i, v in enumerate(col) if not ok(v))

    def mark_mask(self, bad: npt.NDArray[np.bool_]) -> None:
        if bad.any():
            self.slow.update(np.flatnonzero(bad).tolist())

    def strings(self, name: str, *, required: bool, max_len: int) -> list[Any]:
        """A string field; a label's null or absence is "" (as the model's pre-validator)."""
        col = self.take(name)
        kinds = set(map(type, col))
        if kinds - {str}:
            if not required:
                col = ["" if v is None else v for v in col]
            self.mark(col, lambda v: type(v) is str)
        strs = col if kinds <= {str} else [v if type(v) is str else "" for v in col]
        if strs and max(map(len, strs)) > max_len:
            self.mark(strs, lambda v: len(v) <= max_len)
        if required and not all(strs):
            self.mark(strs, bool)
        return col

    def floats(self, name: str, *, optional: bool) -> npt.NDArray[np.float64]:
        """A float field, NaN when an optional value is absent or null."""
        col = self.take(name)
        allowed = _NUM | {type(None)} if optional else _NUM
        required = not optional
        kinds = set(map(type, col))
        if kinds - allowed:
            self.mark(col, lambda v: type(v) in allowed)
            col = [v if type(v) in allowed else None for v in col]
        try:
            # numpy turns None into NaN for a float column, as wanted here.
            arr = np.array(col, dtype=np.float64).reshape(self.n)
        except OverflowError:  # an integer beyond float range: let pydantic say so
            self.mark(col, lambda v: v is None or abs(v) < 1e308)
            arr = np.array([v if v is None or abs(v) < 1e308 else None for v in col], np.float64)
        # JSON has no NaN, so NaN here means absent (or a row already marked).
        present = ~np.isnan(arr)
        self.mark_mask(present & ~((arr >= 0.0) & (arr < np.inf)) | (~present & required))
        return arr

    def tokens(self, name: str) -> npt.NDArray[np.int64]:
        """A token count: an integer in [0, 2**40], -1 when absent or null."""
        col = self.take(name)
        kinds = set(map(type, col))
        if kinds - {int, type(None)}:
            self.mark(col, lambda v: v is None or type(v) is int)
            col = [v if type(v) is int else None for v in col]
        try:
            arr = np.array(col, dtype=np.float64).reshape(self.n)
        except OverflowError:
            self.mark(col, lambda v: v is None or abs(v) <= _MAX_TOKENS)
            arr = np.array([v if v is None or abs(v) <= _MAX_TOKENS else None for v in col])
        present = ~np.isnan(arr)
        self.mark_mask(present & ~((arr >= 0.0) & (arr <= _MAX_TOKENS)))
        # Counts up to 2**40 are exact in float64.
        return np.where(present & (arr >= 0.0) & (arr <= _MAX_TOKENS), arr, -1).astype(np.int64)

    def maps(self, name: str, value_ok: Callable[[Any], bool]) -> list[Any]:
        col = self.take(name, _ABSENT)
        out: list[Any] = []
        for i, d in enumerate(col):
            if d is _ABSENT:
                out.append({})
                continue
            if type(d) is not dict or not all(
                type(k) is str and len(k) <= MAX_LABEL_LEN and value_ok(v) for k, v in d.items()
            ):
                self.slow.add(i)
                out.append({})
                continue
            out.append(d)
        return out


def _score_ok(v: Any) -> bool:
    return (type(v) is float and math.isfinite(v)) or type(v) is int


def _as_float_values(d: dict[str, Any]) -> dict[str, float]:
    return d if all(type(v) is float for v in d.values()) else {k: float(v) for k, v in d.items()}


_FIELDS: Final = tuple(TraceEvent.model_fields)
# Records are parsed and read in small chunks: read right after parsing they are
# still in the CPU cache, which halves the cost of reading their fields.
_CHUNK: Final = 128


def _extract(values: Sequence[bytes]) -> tuple[list[Any], dict[str, list[Any]], set[int]]:
    """Parse every message; each field as a column (None where absent), and the
    rows that are not JSON objects (marked for the per-event validator)."""
    loads = orjson.loads
    records: list[Any] = []
    rows: list[tuple[Any, ...]] = []
    bad: set[int] = set()
    for a in range(0, len(values), _CHUNK):
        part = values[a : a + _CHUNK]
        try:
            recs = list(map(loads, part))
            rows.extend([tuple(map(r.get, _FIELDS)) for r in recs])
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            recs = []
            for j, v in enumerate(part):
                try:
                    r = loads(v)
                except orjson.JSONDecodeError:
                    r = None
                if type(r) is not dict:
                    bad.add(a + j)
                    r = {}
                recs.append(r)
                rows.append(tuple(map(r.get, _FIELDS)))
        records.extend(recs)
    if not rows:
        return records, {f: [] for f in _FIELDS}, bad
    return records, dict(zip(_FIELDS, map(list, zip(*rows, strict=True)), strict=True)), bad


def validate_batch(
    values: Sequence[bytes],
    sources: Sequence[str] | None = None,
    limits: EventLimits = DEFAULT_LIMITS,
) -> BatchValidation:
    """Validate raw JSON messages under ``limits``; see the module docstring."""
    n = len(values)
    # A message over the size limit is not even parsed: the per-event validator
    # rejects it by its length alone.
    cap = limits.max_event_bytes
    oversized = [i for i, v in enumerate(values) if len(v) > cap]
    parsed = values
    if oversized:
        parsed = list(values)
        for i in oversized:
            parsed[i] = b"null"
    c = _Columns(*_extract(parsed))

    version = c.take("schema_version")
    if version.count(1) != n or set(map(type, version)) != {int}:
        c.mark(version, lambda v: type(v) is int and v == 1)
    ts_col = c.take("timestamp")
    if set(map(type, ts_col)) - {int}:
        c.mark(ts_col, lambda v: type(v) is int)
        ts_col = [v if type(v) is int else 0 for v in ts_col]
    try:
        ts = np.array(ts_col, dtype=np.int64).reshape(n)
    except OverflowError:
        c.mark(ts_col, lambda v: _MIN_MS <= v < _MAX_MS)
        ts = np.array([v if _MIN_MS <= v < _MAX_MS else 0 for v in ts_col], dtype=np.int64)
    c.mark_mask((ts < _MIN_MS) | (ts >= _MAX_MS))

    objects: dict[str, list[Any]] = {
        "event_id": c.strings("event_id", required=True, max_len=MAX_ID_LEN),
        "service": c.strings("service", required=True, max_len=MAX_LABEL_LEN),
        "model": c.strings("model", required=True, max_len=MAX_LABEL_LEN),
    }
    for name in LABEL_FIELDS:
        objects[name] = c.strings(name, required=False, max_len=MAX_LABEL_LEN)
    status = c.take("status", "ok")
    if status.count("ok") + status.count("error") != n:
        c.mark(status, lambda v: type(v) is str and v in ("ok", "error"))
    objects["status"] = status
    max_chars = limits.max_text_chars
    for name in TEXT_FIELDS:
        col = c.take(name)
        kinds = set(map(type, col))
        if kinds - {str, type(None)}:
            c.mark(col, lambda v: v is None or type(v) is str)
        if str in kinds:
            texts = col if kinds == {str} else [v for v in col if type(v) is str]
            if max(map(len, texts)) > max_chars:
                c.mark(col, lambda v: type(v) is not str or len(v) <= max_chars)
        objects[name] = col
    for name in EMBEDDING_FIELDS:
        # Vectors are rare and long: the per-event validator checks them.
        col = c.take(name)
        if col.count(None) != n:
            c.mark(col, lambda v: v is None)
        objects[name] = col
    scores = c.maps("scores", _score_ok)
    objects["scores"] = [_as_float_values(d) if d else d for d in scores]
    objects["attributes"] = c.maps("attributes", lambda v: type(v) is str)

    numbers: dict[str, npt.NDArray[Any]] = {"timestamp_ms": ts}
    numbers["latency_ms"] = c.floats("latency_ms", optional=False)
    for name in OPTIONAL_FLOAT_FIELDS:
        numbers[name] = c.floats(name, optional=True)
    for name in TOKEN_FIELDS:
        numbers[name] = c.tokens(name)

    rejected: list[tuple[int, ValidationError]] = []
    c.slow.update(oversized)
    for i in sorted(c.slow):
        try:
            event = validate_raw(values[i], limits)
        except ValidationError as err:
            rejected.append((i, err))
            continue
        for name, value in event_values(event).items():
            if name in objects:
                objects[name][i] = value
            else:
                numbers[name][i] = value

    keep = _first_of_each_id(objects["event_id"], {i for i, _ in rejected})
    duplicates = n - len(rejected) - keep.size
    src = object_array(list(sources) if sources is not None else [""] * n)
    batch = TraceBatch({k: object_array(v) for k, v in objects.items()}, numbers, src)
    if keep.size != n:
        batch = batch.select(keep)
    return BatchValidation(batch, keep, rejected, duplicates)


def _first_of_each_id(ids: list[Any], rejected: set[int]) -> npt.NDArray[np.int64]:
    n = len(ids)
    if rejected:
        # a rejected row's id may be anything (even unhashable) and never counts
        ids = [object() if i in rejected else e for i, e in enumerate(ids)]
    if len(set(ids)) == n:
        keep = np.ones(n, dtype=np.bool_)
    else:
        # Reversed, so the first occurrence is the one the dict keeps.
        first = dict(zip(reversed(ids), range(n - 1, -1, -1), strict=True))
        keep = np.zeros(n, dtype=np.bool_)
        keep[list(first.values())] = True
    if rejected:
        keep[list(rejected)] = False
    return np.flatnonzero(keep).astype(np.int64)
