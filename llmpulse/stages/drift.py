"""The drift stage: detectors per drift series, their rows and their alert signals.

Owner: the drift series (default endpoint + model + prompt_version). Writes
``drift_events``, ``drift_scores`` and ``drift_baselines``; hands
``drift_detected`` to the alert rules, and ``score_mean:<name>`` and
``hallucination_rate`` of the scores its events carry unless the score path
publishes those (``quality_signals=False``: the worker and replay fold every
score, inline ones included, into the quality windows, whose signals page once
per series). The checkpoint keeps each series' baselines (a moved or restarted
series keeps its reference); the online detectors restart from it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import numpy as np
import orjson

from llmpulse._types import ObjArray
from llmpulse.alerts.signals import Signal, signal_from_drift
from llmpulse.detectors.combine import WindowScore
from llmpulse.detectors.reference import Reference
from llmpulse.detectors.series import (
    EMBEDDING_SIGNALS,
    BaselineRecord,
    DriftMonitor,
    alert_signals,
)
from llmpulse.detectors.storage import (
    DRIFT_BASELINE_COLUMNS,
    DRIFT_EVENT_COLUMNS,
    DRIFT_SCORE_COLUMNS,
    LATEST_BASELINES_SQL,
    baseline_row,
    drift_event_row,
    drift_score_row,
)
from llmpulse.errors import LlmpulseError
from llmpulse.schemas.batch import TraceBatch
from llmpulse.schemas.rows import names
from llmpulse.scores.quality import HALLUCINATION_SIGNAL, MEAN_PREFIX
from llmpulse.stages.base import Context, Output, Rows, Stage, StoreReader

KnownDrifts = Callable[[Sequence[str]], Collection[str]]


class DriftStage(Stage):
    name = "drift"
    tables = ("drift_events", "drift_scores", "drift_baselines")

    def __init__(
        self,
        monitor: DriftMonitor,
        *,
        known: KnownDrifts | None = None,
        quality_signals: bool = True,
    ) -> None:
        self.monitor = monitor
        self.known = known
        self.quality_signals = quality_signals
        self.detections = 0
        self._baselines: dict[tuple[tuple[tuple[str, str], ...], str], BaselineRecord] = {}
        self._dirty = False

    def keys(self, batch: TraceBatch) -> list[ObjArray]:
        cols = [batch.objects[d].tolist() for d in self.monitor.grouping]
        out = np.empty(len(batch), dtype=object)
        out[:] = ["\x1f".join(t) for t in zip(*cols, strict=True)]
        return [out]

    def process(self, batch: TraceBatch, ctx: Context) -> Output:
        owned = ctx.owned.get(self.name)
        if owned is not None and not owned[:, 0].all():
            batch = batch.select(np.flatnonzero(owned[:, 0]))
        drifts = self.monitor.observe(batch) if len(batch) else []
        baselines = self.monitor.drain_baselines()
        scores = self.monitor.drain_window_scores()
        if baselines:
            self._remember(baselines)
        if drifts and self.known is not None:
            # A replay of the same events finds the same drifts: store each once.
            known = self.known([d.drift_id for d in drifts])
            drifts = [d for d in drifts if d.drift_id not in known]
        self.detections += len(drifts)
        tables = (
            ("drift_baselines", DRIFT_BASELINE_COLUMNS, [
                baseline_row(
                    b.reference, labels=b.labels, grouping=b.grouping, signal=b.signal,
                    created_at=ctx.now,
                )
                for b in baselines
            ]),
            ("drift_scores", DRIFT_SCORE_COLUMNS, [drift_score_row(s, ctx.now) for s in scores]),
            ("drift_events", DRIFT_EVENT_COLUMNS, [drift_event_row(d, ctx.now) for d in drifts]),
        )  # fmt: skip
        rows = [Rows(table, data, names(columns)) for table, columns, data in tables if data]
        signals = _quiet_windows(scores) + alert_signals(drifts, scores)
        if not self.quality_signals:
            signals = [s for s in signals if not _is_quality(s.name)]
        return Output(rows=rows, signals=signals)

    def _remember(self, baselines: list[BaselineRecord]) -> None:
        for b in baselines:
            self._baselines[(tuple(sorted(b.labels.items())), b.signal)] = b
        self._dirty = True

    def resume(self, store: StoreReader, ctx: Context) -> Output:
        """The newest stored baseline of every series: learnt by an earlier run or
        pinned with ``llmpulse baseline set``."""
        grouping = self.monitor.grouping_name
        items = [
            {"labels": dict(labels), "signal": str(signal), "reference": payload}
            for group, _series, signal, labels, _bid, payload in store.rows(LATEST_BASELINES_SQL)
            if group == grouping  # learned under another grouping: does not name our series
        ]
        if items:
            self.restore(orjson.dumps(items))
        return Output()

    def snapshot(self) -> bytes | None:
        if not self._dirty:
            return None
        self._dirty = False
        return orjson.dumps(
            [
                {"labels": dict(b.labels), "signal": b.signal, "reference": b.reference.to_json()}
                for b in self._baselines.values()
            ]
        )

    def restore(self, blob: bytes) -> None:
        for item in orjson.loads(blob):
            try:
                ref = Reference.from_json(item["reference"])
                self.monitor.restore_baseline(item["labels"], item["signal"], ref)
            except LlmpulseError:
                continue  # more series than max_series now: they relearn
            self._baselines[(tuple(sorted(item["labels"].items())), item["signal"])] = (
                BaselineRecord(item["labels"], self.monitor.grouping_name, item["signal"], ref)
            )


def _is_quality(name: str) -> bool:
    return name.startswith(MEAN_PREFIX) or name == HALLUCINATION_SIGNAL


def _quiet_windows(scores: Sequence[WindowScore]) -> list[Signal]:
    """``drift_detected = 0`` for embedding windows that look like the baseline, so a
    drift alert resolves once traffic is back (or re-baselined). A window that
    rejects sends nothing: only a confirmed detection raises the alert."""
    out = []
    for w in scores:
        if w.signal not in EMBEDDING_SIGNALS or not w.baseline_id:
            continue
        if not w.statistic > w.threshold:
            labels = {k: str(v) for k, v in w.labels.items() if v != ""}
            labels["signal"] = w.signal
            out.append(signal_from_drift("drift_detected", labels, w.window_end, 0.0, requests=w.n))
    return out
