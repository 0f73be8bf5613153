"""Drift detection inside the pipeline: observe stored events, record what the
detectors found (``drift_events``, ``drift_scores``, ``drift_baselines``) and hand
drift and quality signals to the alert rules.

Writes go through the small ``DriftStore`` protocol; the detectors stay pure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from llmpulse.alerts.signals import Signal, signal_from_drift
from llmpulse.detectors.combine import WindowScore
from llmpulse.detectors.series import EMBEDDING_SIGNALS, DriftMonitor, alert_signals
from llmpulse.detectors.storage import (
    baseline_row,
    drift_event_row,
    drift_score_row,
)
from llmpulse.schemas.batch import TraceBatch


class DriftStore(Protocol):
    def known_drift_ids(self, ids: Sequence[str]) -> set[str]: ...

    def write_drift(self, table: str, rows: Sequence[Sequence[Any]]) -> None: ...


class DriftStage:
    def __init__(self, monitor: DriftMonitor, store: DriftStore) -> None:
        self.monitor = monitor
        self.store = store
        self.detections = 0

    def process(self, events: Sequence[Any] | TraceBatch, now: datetime) -> list[Signal]:
        """Feed newly stored events; returns signals for the alert rules."""
        drifts = self.monitor.observe(events) if len(events) else []
        baselines = self.monitor.drain_baselines()
        scores = self.monitor.drain_window_scores()
        if baselines:
            self.store.write_drift(
                "drift_baselines",
                [
                    baseline_row(
                        b.reference, labels=b.labels, grouping=b.grouping, signal=b.signal,
                        created_at=now,
                    )
                    for b in baselines
                ],
            )  # fmt: skip
        if scores:
            self.store.write_drift("drift_scores", [drift_score_row(s, now) for s in scores])
        if drifts:
            # A replay of the same events finds the same drifts: store each once.
            known = self.store.known_drift_ids([d.drift_id for d in drifts])
            new = [d for d in drifts if d.drift_id not in known]
            if new:
                self.store.write_drift("drift_events", [drift_event_row(d, now) for d in new])
                self.detections += len(new)
            drifts = new
        return self._quiet_windows(scores) + [
            signal_from_drift(
                a.name,
                # One alert per series and signal, whichever detector spoke.
                {k: str(v) for k, v in a.labels.items() if v != "" and k != "detector"},
                a.event_time,
                a.value,
                requests=int(a.details.get("n", 0) or 0),
                extra={
                    k: float(v)
                    for k, v in a.details.items()
                    if isinstance(v, int | float) and math.isfinite(v)
                },
            )
            for a in alert_signals(drifts, scores)
        ]

    @staticmethod
    def _quiet_windows(scores: Sequence[WindowScore]) -> list[Signal]:
        """``drift_detected = 0`` for embedding windows that look like the baseline,
        so a drift alert resolves once traffic is back (or re-baselined). A window
        that rejects sends nothing: only a confirmed detection raises the alert."""
        out = []
        for w in scores:
            if w.signal not in EMBEDDING_SIGNALS or not w.baseline_id:
                continue
            if not w.statistic > w.threshold:
                labels = {k: str(v) for k, v in w.labels.items() if v != ""}
                labels["signal"] = w.signal
                out.append(
                    signal_from_drift("drift_detected", labels, w.window_end, 0.0, requests=w.n)
                )
        return out
