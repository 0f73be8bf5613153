"""The alert stage: rules over the signals of the stages before it, in the same task.

Owner: the series of each signal, which is the key of the stage that produced
it (a window series, a budget, a drift series), so the alert of a series lives
where its signals are computed and needs no topic of its own. Every transition
becomes an ``alerts`` row; notifications leave only once the rows are written
(``Output.after_write``). After a crash the rows written past the checkpoint
are rolled back and the transitions happen again, notified again under the
same ``dedup_key``, which PagerDuty and the other sinks deduplicate, so a page
is never lost.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from llmpulse.alerts.engine import AlertEngine
from llmpulse.alerts.state import (
    ALERT_COLUMNS,
    LATEST_ALERTS_SQL,
    Transition,
    state_rows_from_alerts,
    transition_row,
)
from llmpulse.schemas.batch import TraceBatch
from llmpulse.stages.base import Context, Output, Rows, Stage, StoreReader
from llmpulse.stages.windows import STORED_WINDOW_FIELDS, window_from_row


class AlertStage(Stage):
    name = "alerts"
    tables = ("alerts",)

    def __init__(
        self,
        engine: AlertEngine,
        notify: Callable[[Transition], object] | None,
        *,
        send: bool = True,
        resume_hours: float = 6.0,
    ) -> None:
        self.engine = engine
        self.notify = notify
        self.send = send
        self.resume_hours = resume_hours
        self.transitions = 0
        self._dirty = False

    def process(self, batch: TraceBatch, ctx: Context) -> Output:
        return self._evaluate(ctx)

    def tick(self, ctx: Context) -> Output:
        return self._evaluate(ctx)

    def flush(self, ctx: Context) -> Output:
        return self._evaluate(ctx)

    def _evaluate(self, ctx: Context) -> Output:
        if not ctx.signals and not self.engine.has_orphans:
            return Output()
        # Compute, then commit (llmpulse.topology.isolation): the engine moves its
        # states as it evaluates, so a raise half-way (a summary template, a row)
        # must put them back, or the retry finds no transition and the page is lost.
        saved = self.engine.export_state()
        try:
            found = self.engine.evaluate(ctx.signals, ctx.now)
            rows = [transition_row(t, notified=t.notify and self.send) for t in found]
        except Exception:
            self.engine.import_state(saved)
            raise
        self._dirty = True
        if not found:
            return Output()
        self.transitions += len(found)
        ctx.stats.alert_transitions += len(found)
        out = Output(rows=[Rows("alerts", rows, ALERT_COLUMNS)])
        if self.notify is not None:
            out.after_write = [partial(self.notify, t) for t in found]
        return out

    def resume(self, store: StoreReader, ctx: Context) -> Output:
        """Alert states from the ``alerts`` table; baselines and SLO burn sums warmed
        from the windows stored in the last ``resume_hours``."""
        state = state_rows_from_alerts(store.rows(LATEST_ALERTS_SQL))
        self.engine = AlertEngine.from_snapshot(
            self.engine.rules, state, dashboard_base_url=self.engine.dashboard_base_url
        )
        windows = sorted(self.engine.rules.windows)
        rows = store.rows(
            f"SELECT {STORED_WINDOW_FIELDS} FROM window_stats "
            "WHERE window_end >= (SELECT max(window_end) FROM window_stats) "
            "- toIntervalSecond({s:UInt32})"
            + (" AND window_seconds IN {w:Array(UInt32)}" if windows else "")
            + " ORDER BY window_end",
            {"s": int(self.resume_hours * 3600), "w": windows},
        )
        results = [window_from_row(r) for r in rows]
        self.engine.warm(s for r in results for s in self.engine.signals_for(r))
        return Output()

    def snapshot(self) -> bytes | None:
        if not self._dirty:
            return None  # unchanged since the last checkpoint, which keeps it
        self._dirty = False
        return self.engine.export_state()

    def restore(self, blob: bytes) -> None:
        self.engine.import_state(blob)
