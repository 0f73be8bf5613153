"""The ingest pipeline shared by the worker and replay: process, dedup, write.

It glues the pure stages (``TraceProcessor``, ``WindowStage``, ``BudgetTracker``)
to an ``EventStore``. Each event reaches the stages once, after it is durably
stored, so redeliveries and replays never count twice. Time is injected
(``clock`` for row stamps, ``wall`` for window idleness) so replays and tests are
deterministic.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from llmpulse.alerts.stage import AlertStage
from llmpulse.alerts.state import Transition
from llmpulse.detectors.stage import DriftStage
from llmpulse.processors.batch_cost import price_batch
from llmpulse.processors.batch_validate import validate_batch
from llmpulse.processors.budgets import BudgetStatus, BudgetTracker
from llmpulse.processors.dedup import RecentIds
from llmpulse.processors.traces import RawMessage, Rejection, TraceProcessor
from llmpulse.processors.window_stage import WindowStage
from llmpulse.processors.windows import WindowResult, window_id
from llmpulse.schemas.batch import TraceBatch, from_ms
from llmpulse.store.encode import traces_table, windows_table
from llmpulse.store.writer import EventStore


@dataclass
class IngestStats:
    messages: int = 0
    accepted: int = 0
    duplicates: int = 0
    windows: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    cost_sources: Counter[str] = field(default_factory=Counter)
    unpriced_models: Counter[str] = field(default_factory=Counter)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def add(self, other: IngestStats) -> None:
        self.messages += other.messages
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.windows += other.windows
        self.rejected.update(other.rejected)
        self.cost_sources.update(other.cost_sources)
        self.unpriced_models.update(other.unpriced_models)


@dataclass
class BatchOutcome:
    written: TraceBatch
    rejections: list[Rejection]
    stats: IngestStats
    windows: list[WindowResult] = field(default_factory=list)
    budgets: list[BudgetStatus] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)


@dataclass(frozen=True)
class PreparedBatch:
    messages: int
    batch: TraceBatch
    rejections: list[Rejection]
    duplicates: int


def _without(batch: TraceBatch, ids: Container[str]) -> tuple[TraceBatch, int]:
    """``batch`` without the events whose id is in ``ids``, and how many those were."""
    if not len(batch):
        return batch, 0
    hit = np.fromiter((i in ids for i in batch.event_id.tolist()), np.bool_, len(batch))
    n = int(hit.sum())
    return (batch.select(~hit), n) if n else (batch, 0)


def _token(kind: str, ids: Sequence[str]) -> str:
    h = hashlib.blake2b(kind.encode(), digest_size=16)
    for i in sorted(ids):
        h.update(i.encode())
        h.update(b"\0")
    return h.hexdigest()


def utc_now() -> datetime:
    return datetime.now(UTC)


class IngestPipeline:
    def __init__(
        self,
        processor: TraceProcessor,
        store: EventStore,
        *,
        store_text: bool = False,
        recent: RecentIds | None = None,
        clock: Callable[[], datetime] = utc_now,
        wall: Callable[[], float] = time.time,
        windows: WindowStage | None = None,
        budgets: BudgetTracker | None = None,
        alerts: AlertStage | None = None,
        drift: DriftStage | None = None,
    ) -> None:
        self.processor = processor
        self.store = store
        self.store_text = store_text
        self.recent = recent if recent is not None else RecentIds()
        self.clock = clock
        self.wall = wall
        self.windows = windows
        self.budgets = budgets
        self.alerts = alerts
        self.drift = drift
        self.stats = IngestStats()

    def handle(self, messages: Sequence[RawMessage]) -> BatchOutcome:
        """Process one batch and write it; raises if the store fails (nothing is
        marked as seen then, so the caller can retry or let Kafka redeliver)."""
        return self.commit(self.prepare(messages))

    def prepare(self, messages: Sequence[RawMessage]) -> PreparedBatch:
        """Validation, which needs no state: may run while the previous batch commits."""
        checked = validate_batch([m.value for m in messages], [m.source for m in messages])
        rejections = [self.processor.reject(messages[i], err) for i, err in checked.rejected]
        return PreparedBatch(len(messages), checked.batch, rejections, checked.duplicates)

    def commit(self, prepared: PreparedBatch) -> BatchOutcome:
        """Dedup against what is stored, price, write, then feed the stages. Batches
        must be committed one at a time, in order."""
        rejections = prepared.rejections
        batch, seen = _without(prepared.batch, self.recent)
        stored = 0
        if len(batch):
            lo, hi = batch.time_range()
            batch, stored = _without(
                batch, self.store.known_event_ids(batch.event_id.tolist(), lo, hi)
            )
        duplicates = prepared.duplicates + seen + stored

        now = self.clock()
        ids = batch.event_id.tolist()
        if ids:
            price_batch(self.processor.prices, batch)
            self.store.write_traces(
                traces_table(batch, now, store_text=self.store_text), _token("traces", ids)
            )

        if rejections:
            known_rej = self.store.known_rejection_ids([r.rejection_id for r in rejections])
            new_rej = [r for r in rejections if r.rejection_id not in known_rej]
            if new_rej:
                self.store.write_rejected(
                    [
                        (
                            r.rejection_id,
                            now,
                            r.source,
                            r.reason,
                            r.category,
                            r.field,
                            r.event_id,
                            r.raw_text,
                        )
                        for r in new_rej
                    ],
                    _token("rejected", [r.rejection_id for r in new_rej]),
                )

        self.recent.add_all(ids)
        closed = self.windows.observe(batch, self.wall()) if self.windows and ids else []
        written_windows = self.write_windows(closed, now)
        budgets = self._account(batch)
        drift_signals = self.drift.process(batch, now) if self.drift and ids else []
        transitions = (
            self.alerts.process(
                written_windows,
                budgets,
                now,
                event_time=batch.time_range()[1] if ids else None,
                signals=drift_signals,
            )
            if self.alerts
            else []
        )

        stats = IngestStats(
            messages=prepared.messages,
            accepted=len(ids),
            duplicates=duplicates,
            windows=len(written_windows),
        )
        stats.rejected.update(r.category for r in rejections)
        if ids:
            sources = batch.cost_source.tolist()
            stats.cost_sources.update(sources)
            if "unpriced" in stats.cost_sources:
                stats.unpriced_models.update(
                    batch.objects["model"][batch.cost_source == "unpriced"]
                )
        self.stats.add(stats)
        return BatchOutcome(batch, rejections, stats, written_windows, budgets, transitions)

    def _account(self, batch: TraceBatch) -> list[BudgetStatus]:
        if not self.budgets or not len(batch):
            return []
        changed: dict[tuple[object, object], BudgetStatus] = {}
        rows = np.flatnonzero(batch.cost > 0)  # NaN (unpriced) compares False
        tenants = batch.objects["tenant"][rows].tolist()
        teams = batch.objects["team"][rows].tolist()
        days = (batch.timestamp_ms[rows] // 86_400_000).tolist()
        for tenant, team, day, cost in zip(
            tenants, teams, days, batch.cost[rows].tolist(), strict=True
        ):
            for st in self.budgets.add(tenant, team, from_ms(day * 86_400_000).date(), cost):
                changed[(st.budget, st.period_start)] = st
        return list(changed.values())

    def write_windows(self, results: Sequence[WindowResult], now: datetime) -> list[WindowResult]:
        """Store closed windows once: a window already stored (a restart rebuilt
        it, a replay repeated it) is skipped. Returns the windows written now."""
        if not results:
            return []
        ids = [window_id(r) for r in results]
        starts = [r.window_start for r in results]
        known = self.store.known_window_ids(ids, min(starts), max(starts))
        fresh = [(i, r) for i, r in zip(ids, results, strict=True) if i not in known]
        if fresh:
            ids = [i for i, _ in fresh]
            self.store.write_windows(
                windows_table([r for _, r in fresh], ids, now), _token("windows", ids)
            )
        return [r for _, r in fresh]

    def tick(self) -> list[WindowResult]:
        """Wall-clock tick: close the windows of a quiet stream."""
        if self.windows is None:
            return []
        now = self.clock()
        written = self.write_windows(self.windows.tick(self.wall()), now)
        self.stats.windows += len(written)
        if self.alerts and written:
            self.alerts.process(written, (), now)
        return written

    def flush(self) -> list[WindowResult]:
        """Close every open window (end of a replay)."""
        if self.windows is None:
            return []
        now = self.clock()
        written = self.write_windows(self.windows.flush(), now)
        self.stats.windows += len(written)
        if self.alerts and written:
            self.alerts.process(written, (), now)
        return written

    def close(self, timeout: float = 10.0) -> None:
        """Deliver queued alert notifications (bounded by ``timeout``)."""
        if self.alerts is not None:
            self.alerts.close(timeout)
