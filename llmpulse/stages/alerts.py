"""The alert stage: rules over the signals of the stages before it, in the same task.

Owner: the series of each signal, which is the key of the stage that produced
it (a window series, a budget, a drift series), so the alert of a series lives
where its signals are computed and needs no topic of its own. Every transition
becomes an ``alerts`` row; notifications leave only once the rows are written
(``Output.after_write``). After a crash the rows written past the checkpoint
are rolled back and the transitions happen again, notified again under the
same ``dedup_key``, which PagerDuty and the other sinks deduplicate, so a page
is never lost.

``no_data`` rules run beside the engine (:class:`NoDataMonitor`): silence makes
no signal, so they also need the window watermark (the task's event-time
frontier, ``Context.source_time_ms``, less ``lateness_ms``), and they are
evaluated on every call, ticks included, even when no window closed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import orjson

from llmpulse.alerts.engine import AlertEngine
from llmpulse.alerts.nodata import NoDataMonitor
from llmpulse.alerts.rules import NoDataRule
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
        lateness_ms: int = 0,
    ) -> None:
        self.engine = engine
        self.notify = notify
        self.send = send
        self.resume_hours = resume_hours
        self.transitions = 0
        self._dirty = False
        self.no_data = NoDataMonitor(
            [r for r in engine.rules if isinstance(r, NoDataRule)],
            dashboard_base_url=engine.dashboard_base_url,
        )
        self._frontier_ms: int | None = None
        # The windows' allowed lateness: frontier - lateness is the watermark up
        # to which every window is closed, the no_data rules' clock.
        self.lateness_ms = lateness_ms

    def process(self, batch: TraceBatch, ctx: Context) -> Output:
        return self._evaluate(ctx)

    def tick(self, ctx: Context) -> Output:
        return self._evaluate(ctx)

    def flush(self, ctx: Context) -> Output:
        return self._evaluate(ctx)

    def _evaluate(self, ctx: Context) -> Output:
        moved = ctx.source_time_ms is not None and ctx.source_time_ms != self._frontier_ms
        rules = bool(ctx.signals or self.engine.has_orphans)
        silence = bool(self.no_data and (ctx.signals or moved))
        if not rules and not silence:
            return Output()
        # Compute, then commit (llmpulse.topology.isolation): the engine and the
        # silence monitor move their states as they evaluate, so a raise half-way (a
        # summary template, a row) must put them back, or the retry finds no
        # transition and the page is lost.
        saved = self.engine.save_point(ctx.signals) if rules else None
        saved_silence = self.no_data.export_state() if silence else None
        try:
            found = self.engine.evaluate(ctx.signals, ctx.now) if rules else []
            if silence:
                wm = None if ctx.source_time_ms is None else ctx.source_time_ms - self.lateness_ms
                found.extend(self.no_data.evaluate(ctx.signals, wm, ctx.now))
            rows = [transition_row(t, notified=t.notify and self.send) for t in found]
        except Exception:
            if saved is not None:
                self.engine.roll_back(saved)
            if saved_silence is not None:
                self.no_data.import_state(saved_silence)
            raise
        self._dirty = True
        if silence:
            self._frontier_ms = ctx.source_time_ms
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
        rules = self.engine.rules
        silent = {r.name for r in rules if isinstance(r, NoDataRule)}
        self.engine = AlertEngine.from_snapshot(
            rules,
            [row for row in state if row["rule"] not in silent],
            dashboard_base_url=self.engine.dashboard_base_url,
        )
        self.no_data.restore_firing(row for row in state if row["rule"] in silent)
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
        if not self.no_data:
            return self.engine.export_state()
        return orjson.dumps(
            {
                "engine": orjson.Fragment(self.engine.export_state()),
                "no_data": self.no_data.export_state(),
            }
        )

    def restore(self, blob: bytes) -> None:
        doc = orjson.loads(blob)
        if "engine" not in doc:  # a checkpoint of the engine alone (no no_data rule)
            self.engine.import_state(blob)
            return
        self.engine.import_state(orjson.dumps(doc["engine"]))
        self.no_data.import_state(doc["no_data"])
