"""Poison events: the few a stage cannot process are set aside, and the rest go on.

An event can pass validation and still break a later step (a price that
overflows, an embedding a drift detector chokes on). Redelivering its batch for
ever would stop the partition, so a stage that raises on a batch is tried again
(``retries`` times: the trouble may be passing), then on each half of the batch,
down to single events. An event that still fails after its retries is
*poisoned*: it leaves with the step and the error named (to ``rejected_events``
and the DLQ), and every other event of the batch is processed as usual.

This needs one thing of a stage: when ``process`` raises, its state is as it
was before the call (compute first, then commit), so a retry or a half never
counts an event twice. The stages of ``llmpulse.stages`` hold to it.

>>> import numpy as np
>>> from datetime import UTC, datetime
>>> from llmpulse.schemas.batch import TraceBatch
>>> from llmpulse.stages.base import Context, Output, Stage
>>> class Picky(Stage):
...     name = "picky"
...     def process(self, batch, ctx):
...         if any(i.startswith("bad") for i in batch.event_id.tolist()):
...             raise ValueError("cannot price this one")
...         return Output(batch=batch)
>>> ids = ["a", "bad-1", "b", "c"]
>>> batch = TraceBatch.from_values(
...     [dict(_example(), event_id=i) for i in ids], ["test"] * len(ids))
>>> out = isolate(Picky(), batch, Context(datetime.now(UTC), 0.0), retries=1)
>>> out.batch.event_id.tolist(), [(p.step, p.error) for p in out.poisoned]
(['a', 'b', 'c'], [('picky', 'ValueError: cannot price this one')])
"""

from __future__ import annotations

import dataclasses
import logging
import math
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from llmpulse.processors.traces import Rejection, rejection_id
from llmpulse.schemas.batch import TraceBatch, concat
from llmpulse.stages.base import Context, IngestStats, Output, Poisoned, Stage
from llmpulse.stages.intake import rejection_rows

__all__ = ["DEFAULT_RETRIES", "isolate", "poison_rejection", "rebuild", "set_aside"]

log = logging.getLogger("llmpulse.topology")

# Attempts beyond the first, for a whole batch and again for a single event.
DEFAULT_RETRIES = 2


def isolate(stage: Stage, batch: TraceBatch, ctx: Context, *, retries: int) -> Output:
    """``stage.process(batch, ctx)``, with the events it cannot process set aside in
    ``poisoned`` (and left out of the output batch, if the stage passes one on)."""
    error: Exception | None = None
    for _ in range(retries + 1):
        try:
            return stage.process(batch, ctx)
        except Exception as exc:  # any step's failure: isolate it, never stop the partition
            error = exc
    assert error is not None
    if len(batch) == 1:
        return Output(
            batch=batch.select(np.zeros(0, dtype=np.int64)),
            poisoned=[Poisoned(batch, stage.name, f"{type(error).__name__}: {error}")],
        )
    middle = len(batch) // 2
    # Only the single events get retries again: halves either work or split further.
    parts = [
        _isolate_part(stage, batch, ctx, np.arange(0, middle), retries),
        _isolate_part(stage, batch, ctx, np.arange(middle, len(batch)), retries),
    ]
    out = Output()
    for part in parts:
        out.extend(part)
    passed = [p.batch for p in parts if p.batch is not None]
    out.batch = concat(passed) if len(passed) == len(parts) else None
    return out


def _isolate_part(
    stage: Stage, batch: TraceBatch, ctx: Context, rows: np.ndarray[Any, Any], retries: int
) -> Output:
    return isolate(
        stage, batch.select(rows), _part_ctx(ctx, rows), retries=retries if len(rows) == 1 else 0
    )


def _part_ctx(ctx: Context, rows: np.ndarray[Any, Any]) -> Context:
    """``ctx`` for the rows ``rows`` of its batch (their ownership, the rest shared)."""
    return dataclasses.replace(ctx, owned={k: v[rows] for k, v in ctx.owned.items()})


def rebuild(stage: Stage, batch: TraceBatch, ctx: Context) -> None:
    """``stage.rebuild(batch, ctx)`` without the events it fails on: those were set
    aside when they first came (by :func:`isolate`), and a takeover that replays
    them must not stop on them again."""
    try:
        stage.rebuild(batch, ctx)
        return
    except Exception as exc:
        if len(batch) == 1:
            log.warning("rebuild of %s skips event %s: %r", stage.name, batch.event_id[0], exc)
            return
    middle = len(batch) // 2
    for rows in (np.arange(0, middle), np.arange(middle, len(batch))):
        rebuild(stage, batch.select(rows), _part_ctx(ctx, rows))


def poison_rejection(p: Poisoned, retries: int) -> Rejection:
    """The rejection of a poisoned event: its columns as JSON, the step named. The
    same event from the same place gets the same id, so a redelivery after a crash
    is stored once."""
    raw = orjson.dumps(_event_dict(p.event), option=orjson.OPT_SERIALIZE_NUMPY)
    source = str(p.event.source[0])
    event_id = str(p.event.event_id[0])
    return Rejection(
        rejection_id=rejection_id(source, raw),
        raw=raw,
        reason=f"step {p.step!r} failed on this event {retries + 1} times: {p.error}"[:2000],
        category=f"{p.step}:poison",
        field=p.step,
        event_id=event_id,
        source=source,
    )


def set_aside(out: Output, *, now: datetime, stats: IngestStats, retries: int) -> list[Rejection]:
    """Turn ``out``'s poisoned events into ``rejected_events`` rows (added to its
    rows) and counted rejections; returns them (for the DLQ)."""
    if not out.poisoned:
        return []
    rejections = [poison_rejection(p, retries) for p in out.poisoned]
    for p in out.poisoned:
        log.error(
            "event %s set aside: step %r failed on it %d times: %s",
            p.event.event_id[0],
            p.step,
            retries + 1,
            p.error,
        )
    out.rows.append(rejection_rows(rejections, now))
    stats.rejected.update(r.category for r in rejections)
    out.poisoned = []
    return rejections


def _event_dict(event: TraceBatch) -> dict[str, Any]:
    out: dict[str, Any] = {k: _plain(v[0]) for k, v in event.objects.items()}
    for k, v in event.numbers.items():
        if not k.startswith("_"):  # runner bookkeeping (_origin), not the event
            out[k] = _plain(v[0])
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _example() -> dict[str, Any]:
    """A minimal event in the column conventions (for the doctest above)."""
    from llmpulse.schemas.batch import event_values
    from llmpulse.schemas.event import TraceEvent

    return event_values(
        TraceEvent.model_validate(
            {
                "schema_version": 1,
                "event_id": "x",
                "service": "s",
                "model": "m",
                "timestamp": "2026-01-01T00:00:00Z",
                "latency_ms": 10,
                "status": "ok",
            }
        )
    )
