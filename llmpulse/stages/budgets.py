"""The budget stage: running spend per budget and period, and the budget signals.

Owner: the budget (``tenant:<name>`` or ``team:<name>``), so one task sums every
call of a tenant whatever partition it came through. The totals are small and
snapshotted at each checkpoint; the store's ``budget_usage`` view stays the
analyst's truth.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import orjson

from llmpulse._types import IntArray, ObjArray
from llmpulse.alerts.signals import signals_from_budget
from llmpulse.processors.budgets import Budget, BudgetStatus, BudgetTracker
from llmpulse.schemas.batch import TraceBatch, from_ms
from llmpulse.stages.base import BoolMatrix, Context, Output, Stage, StoreReader

_SCOPES = ("tenant", "team")
_DAY_MS = 86_400_000


class BudgetStage(Stage):
    name = "budgets"

    def __init__(self, budgets: list[Budget]) -> None:
        self.tracker = BudgetTracker(budgets)
        self._names = {s: {b.name for b in budgets if b.scope == s} for s in _SCOPES}

    def keys(self, batch: TraceBatch) -> list[ObjArray]:
        out = []
        for scope in _SCOPES:
            names = self._names[scope]
            col = batch.objects[scope]
            keys = np.full(len(batch), None, dtype=object)
            if names:
                # Only rows of a tenant or team with a budget travel to an owner.
                hit = np.fromiter((v in names for v in col.tolist()), np.bool_, len(batch))
                keys[hit] = [f"{scope}:{v}" for v in col[hit].tolist()]
            out.append(keys)
        return out

    def process(self, batch: TraceBatch, ctx: Context) -> Output:
        if not self.tracker or not len(batch):
            return Output()
        owned = ctx.ownership(self.name, len(batch), len(_SCOPES))
        rows = np.flatnonzero((batch.cost > 0) & owned.any(axis=1))  # NaN compares False
        if not rows.size:
            return Output()
        saved = self.tracker.statuses()
        try:
            return self._add(batch, rows, owned)
        except Exception:
            # The totals as they were (llmpulse.topology.isolation retries the batch,
            # then its halves: spend added before the raise would count twice).
            self.tracker = BudgetTracker(self.tracker.budgets)
            for st in saved:
                self.tracker.restore(st.budget, st.period_start, st.spent_usd)
            raise

    def _add(self, batch: TraceBatch, rows: IntArray, owned: BoolMatrix) -> Output:
        changed: dict[tuple[object, object], BudgetStatus] = {}
        tenants = batch.objects["tenant"][rows].tolist()
        teams = batch.objects["team"][rows].tolist()
        own_t = owned[rows, 0].tolist()
        own_m = owned[rows, 1].tolist()
        days = (batch.timestamp_ms[rows] // _DAY_MS).tolist()
        costs = batch.cost[rows].tolist()
        for tenant, team, ot, om, day, cost in zip(
            tenants, teams, own_t, own_m, days, costs, strict=True
        ):
            # "" matches no budget (names are never empty): a scope owned elsewhere.
            for st in self.tracker.add(
                tenant if ot else "", team if om else "", from_ms(day * _DAY_MS).date(), cost
            ):
                changed[(st.budget, st.period_start)] = st
        event_time = from_ms(int(batch.timestamp_ms.max()))
        return Output(signals=[signals_from_budget(st, event_time) for st in changed.values()])

    def resume(self, store: StoreReader, ctx: Context) -> Output:
        """Spend of this and last month from the store's ``budget_usage`` view."""
        today = ctx.now.date()
        since = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
        rows = store.rows(
            "SELECT scope, name, period, period_start, spent_usd FROM budget_usage "
            "WHERE period_start >= {since:Date}",
            {"since": since},
        )
        by_key = {(b.scope, b.name, b.period): b for b in self.tracker.budgets}
        for scope, name, period, start, spent in rows:
            budget = by_key.get((scope, name, period))
            if budget is not None:
                self.tracker.restore(budget, start, float(spent))
        return Output()

    def snapshot(self) -> bytes:
        return orjson.dumps(
            [
                [
                    s.budget.scope,
                    s.budget.name,
                    s.budget.period,
                    s.period_start.isoformat(),
                    s.spent_usd,
                ]
                for s in self.tracker.statuses()
            ]
        )

    def restore(self, blob: bytes) -> None:
        by_key = {(b.scope, b.name, b.period): b for b in self.tracker.budgets}
        for scope, name, period, start, spent in orjson.loads(blob):
            budget = by_key.get((scope, name, period))
            if budget is not None:  # a budget removed from the config is forgotten
                self.tracker.restore(budget, date.fromisoformat(start), float(spent))
