"""The trace stage: each event id counted once, priced, and its ``traces`` row.

Owner: the event id. Every copy of an event, whatever partition or producer it
came from, reaches the one task that owns its id, which remembers the ids it
has stored (a bounded, insertion-ordered memory rebuilt after a restart from
the input it replays, see :meth:`TraceStage.retention`). A source that may
repeat data older than that memory (a replay of a file into a store that
already holds part of it) also asks the store (``lookup``).
"""

from __future__ import annotations

from collections.abc import Callable, Container
from datetime import datetime

import numpy as np

from llmpulse._types import ObjArray
from llmpulse.processors.batch_cost import price_batch
from llmpulse.processors.cost import PriceTable
from llmpulse.processors.dedup import RecentIds
from llmpulse.schemas.batch import TraceBatch
from llmpulse.stages.base import Context, Output, Rows, Stage
from llmpulse.stages.retention import Retention
from llmpulse.store.encode import traces_table

# ids (with event times within [t_min, t_max]) already stored
StoredIds = Callable[[list[str], datetime, datetime], Container[str]]


def without(batch: TraceBatch, ids: Container[str]) -> tuple[TraceBatch, int]:
    """``batch`` without the events whose id is in ``ids``, and how many those were."""
    if not len(batch):
        return batch, 0
    hit = np.fromiter((i in ids for i in batch.event_id.tolist()), np.bool_, len(batch))
    n = int(hit.sum())
    return (batch.select(~hit), n) if n else (batch, 0)


def first_of_each(batch: TraceBatch) -> tuple[TraceBatch, int]:
    """``batch`` with each event id once (its first row), and how many rows repeated one.
    A worker's batch joins several input messages: copies of one event may meet in it."""
    ids = batch.event_id.tolist()
    if len(set(ids)) == len(ids):
        return batch, 0
    first: dict[str, int] = {}
    for i, x in enumerate(ids):
        first.setdefault(x, i)
    keep = sorted(first.values())
    return batch.select(np.asarray(keep, dtype=np.int64)), len(ids) - len(keep)


class TraceStage(Stage):
    name = "traces"
    tables = ("traces",)

    def __init__(
        self,
        prices: PriceTable,
        *,
        store_text: bool = False,
        capacity: int = 1_000_000,
        lookup: StoredIds | None = None,
    ) -> None:
        self.prices = prices
        self.store_text = store_text
        self.recent = RecentIds(capacity)
        self.lookup = lookup

    def keys(self, batch: TraceBatch) -> list[ObjArray]:
        return [batch.event_id]

    def retention(self) -> Retention:
        return Retention(rows=self.recent.capacity)

    def process(self, batch: TraceBatch, ctx: Context) -> Output:
        batch, repeated = first_of_each(batch)
        batch, seen = without(batch, self.recent)
        stored = 0
        if self.lookup is not None and len(batch):
            lo, hi = batch.time_range()
            batch, stored = without(batch, self.lookup(batch.event_id.tolist(), lo, hi))
        stats = ctx.stats
        stats.duplicates += repeated + seen + stored
        if not len(batch):
            return Output(batch=batch)
        price_batch(self.prices, batch)
        # Compute first, then commit: an event that breaks the encoding raises here,
        # before its id is remembered, so the retry of llmpulse.topology.isolation
        # does not take the batch for duplicates and drop it.
        table = traces_table(batch, ctx.now, store_text=self.store_text)
        ids = batch.event_id.tolist()
        self.recent.add_all(ids)
        stats.accepted += len(ids)
        sources = batch.cost_source.tolist()
        stats.cost_sources.update(sources)
        if "unpriced" in stats.cost_sources:
            stats.unpriced_models.update(batch.objects["model"][batch.cost_source == "unpriced"])
        return Output(rows=[Rows("traces", table)], batch=batch)

    def rebuild(self, batch: TraceBatch, ctx: Context) -> None:
        self.recent.add_all(batch.event_id.tolist())
