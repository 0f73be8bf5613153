"""Alerting inside the pipeline: evaluate, record every transition, notify.

Transitions are recorded in the ``alerts`` table and notifications handed to the
``Dispatcher``, which delivers them in the background (never blocking the
stream). PagerDuty deduplicates by ``dedup_key``, so the rare repeat after a
crash between the two is harmless, while a lost page would not be.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from llmpulse.alerts.engine import AlertEngine
from llmpulse.alerts.signals import Signal, signals_from_budget
from llmpulse.alerts.sinks import Dispatcher
from llmpulse.alerts.state import Transition, transition_row
from llmpulse.processors.budgets import BudgetStatus
from llmpulse.processors.windows import WindowResult


class TransitionStore(Protocol):
    def write_alerts(self, rows: Sequence[Sequence[Any]]) -> None: ...


class AlertStage:
    def __init__(
        self,
        engine: AlertEngine,
        dispatcher: Dispatcher,
        store: TransitionStore,
        *,
        send: bool = True,
    ) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self.store = store
        self.send = send
        self.transitions = 0

    def process(
        self,
        windows: Sequence[WindowResult],
        budgets: Sequence[BudgetStatus],
        wall_now: datetime,
        *,
        event_time: datetime | None = None,
        signals: Sequence[Signal] = (),
    ) -> list[Transition]:
        found = self.engine.evaluate_windows(windows, wall_now) if windows else []
        extra = list(signals)
        if budgets and event_time is not None:
            extra.extend(signals_from_budget(b, event_time) for b in budgets)
        if extra:
            found.extend(self.engine.evaluate(extra, wall_now))
        if not found:
            return []
        self.store.write_alerts([transition_row(t, notified=t.notify and self.send) for t in found])
        for t in found:
            self.dispatcher.submit(t)
        self.transitions += len(found)
        return found

    def close(self, timeout: float = 10.0) -> None:
        self.dispatcher.close(timeout)
