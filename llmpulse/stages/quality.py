"""The quality stage: the alert signals of the score quality of the series a task owns.

Owner: the series of each grouping, by the same key as the window statistics
(``llmpulse.scores.alerting.series_key``), so a series' quality alerts live in
the task that also alerts on its latency and errors. Its input is not the trace
batch but the score contributions routed to the task (:meth:`add`, called
before ``process``/``tick``); time is the task's source watermark (the calls'
event time), and the signals of a tile of ``scores.signal_window_s`` leave
once that time is ``scores.alert_delay_s`` past the tile's end.

State is the open tiles, a fold over recent contributions: after a restart
the task replays them (:meth:`add` again, from the replayed input) with every
tile up to the checkpoint's ``emitted_ms`` already alerted on.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from llmpulse.schemas.batch import TraceBatch
from llmpulse.scores.alerting import Contribution, QualityAlerts
from llmpulse.scores.quality import QualityConfig
from llmpulse.stages.base import Context, Output, Stage
from llmpulse.stages.retention import Retention


class QualityStage(Stage):
    name = "quality"

    def __init__(self, config: QualityConfig) -> None:
        self.alerts = QualityAlerts(config)
        self._saved = self.alerts.emitted_ms

    def add(self, items: Iterable[Contribution]) -> int:
        """Contributions routed to this task (new input, or replayed on a rebuild)."""
        return self.alerts.add(items)

    def process(self, batch: TraceBatch, ctx: Context) -> Output:
        return self._advance(ctx)

    def tick(self, ctx: Context) -> Output:
        return self._advance(ctx)

    def flush(self, ctx: Context) -> Output:
        return Output(signals=self.alerts.flush())

    def _advance(self, ctx: Context) -> Output:
        if ctx.source_time_ms is None:
            return Output()
        return Output(signals=self.alerts.advance(ctx.source_time_ms))

    def retention(self) -> Retention:
        t = self.alerts.needed_from_ms()
        return Retention() if t is None else Retention(event_time_ms=t)

    def snapshot(self) -> bytes | None:
        if self.alerts.emitted_ms == self._saved:
            return None
        self._saved = self.alerts.emitted_ms
        return orjson.dumps(self.alerts.state())

    def restore(self, blob: bytes) -> None:
        self.alerts.load(orjson.loads(blob))
        self._saved = self.alerts.emitted_ms
