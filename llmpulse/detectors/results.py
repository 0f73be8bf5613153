"""What the drift detectors report: detections and window scores, plain frozen data.

Kept apart from the detectors so that the storage row builders and the drift
stage, which only read results, need not import the detection engine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llmpulse.schemas.batch import to_ms

__all__ = ["DriftEvent", "WindowScore"]


@dataclass(frozen=True)
class DriftEvent:
    """One confirmed drift of one signal of one series, at the event time it was seen."""

    event_time: datetime
    signal: str
    detector: str
    score: float
    threshold: float
    baseline_id: str
    details: dict[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    grouping: str = ""
    event_id: str = ""

    @property
    def drift_id(self) -> str:
        """Deterministic id: a replay of the same events gives the same ids (dedup key)."""
        key = "\x1f".join(
            [
                self.grouping,
                *(f"{k}={v}" for k, v in sorted(self.labels.items())),
                self.signal,
                self.detector,
                self.baseline_id,
                str(to_ms(self.event_time)),
            ]
        )
        return hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


@dataclass(frozen=True)
class WindowScore:
    """The windowed test of one tumbling window (a row of ``drift_scores``)."""

    window_start: datetime
    window_end: datetime
    signal: str
    detector: str
    statistic: float
    p_value: float
    threshold: float
    n: int
    value: float  # mean cosine distance, mean value, error share or mix distance
    baseline_id: str
    labels: Mapping[str, str] = field(default_factory=dict)
    grouping: str = ""
