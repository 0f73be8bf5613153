"""Spend against per-tenant and per-team budgets, per day or month. Pure.

The store keeps the truth (view ``budget_usage``); this tracker keeps the running
totals a worker needs to raise a budget signal without querying per batch.

>>> from datetime import date
>>> t = BudgetTracker([Budget("tenant", "acme", "day", 10.0)])
>>> s = t.add("acme", "", date(2026, 1, 1), 12.5)
>>> [(x.name, x.spent_usd, x.exceeded) for x in s]
[('acme', 12.5, True)]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Literal

Scope = Literal["tenant", "team"]
Period = Literal["day", "month"]


@dataclass(frozen=True, slots=True)
class Budget:
    scope: Scope
    name: str
    period: Period
    limit_usd: float


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    budget: Budget
    period_start: date
    spent_usd: float

    @property
    def name(self) -> str:
        return self.budget.name

    @property
    def usage_ratio(self) -> float:
        return self.spent_usd / self.budget.limit_usd

    @property
    def exceeded(self) -> bool:
        return self.spent_usd > self.budget.limit_usd


def period_start(day: date, period: Period) -> date:
    return day if period == "day" else day.replace(day=1)


class BudgetTracker:
    def __init__(self, budgets: Iterable[Budget]) -> None:
        self.budgets = list(budgets)
        self._by_key: dict[tuple[str, str], list[Budget]] = {}
        for b in self.budgets:
            self._by_key.setdefault((b.scope, b.name), []).append(b)
        self._spent: dict[tuple[Budget, date], float] = {}

    def __bool__(self) -> bool:
        return bool(self.budgets)

    def restore(self, budget: Budget, start: date, spent_usd: float) -> None:
        self._spent[(budget, start)] = spent_usd

    def add(self, tenant: str, team: str, day: date, cost_usd: float) -> list[BudgetStatus]:
        """Account one call's cost; returns the statuses it changed."""
        changed = []
        for scope, name in (("tenant", tenant), ("team", team)):
            for b in self._by_key.get((scope, name), ()):
                key = (b, period_start(day, b.period))
                self._spent[key] = self._spent.get(key, 0.0) + cost_usd
                changed.append(BudgetStatus(b, key[1], self._spent[key]))
        return changed

    def statuses(self) -> list[BudgetStatus]:
        return [BudgetStatus(b, start, spent) for (b, start), spent in self._spent.items()]

    def forget_before(self, day: date) -> None:
        """Drop totals of periods that ended before ``day`` (bounded memory)."""
        for key in [k for k in self._spent if k[1] < period_start(day, k[0].period)]:
            del self._spent[key]
