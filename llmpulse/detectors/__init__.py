"""Drift detection, pure core: plain Python and numpy (with scipy and river).

No Kafka, Faust or ClickHouse here: the worker and ``llmpulse replay`` feed
events in and write what comes out (``storage`` has the DDL and row builders).
Time is the events' own time, so a replay reproduces the live detections.

* ``HashingEmbedder``: deterministic text embeddings without a model download,
  for events that carry text but no embedding.
* ``Reference``: what normal embeddings of one series look like (warm-up or
  pinned), serialisable to ``drift_baselines``.
* ``OnlineEmbeddingDetector``: per-event scalars fed to river detectors (ADWIN
  by default).
* ``MMDTest``: windowed two-sample test against the reference.
* ``DriftDetector`` (``embedding``) / ``ScalarDriftDetector`` (``scalar``): both
  kinds of evidence combined by their shared engine (``evidence``), with cool-down
  and re-baselining; ``DriftEvent`` (``results``) is what they report.
* ``DriftMonitor``: every series and signal of a stream of trace events.
"""

from __future__ import annotations

from llmpulse.detectors.embedder import Embedder, HashingEmbedder, SentenceTransformerEmbedder
from llmpulse.detectors.embedding import DriftDetector
from llmpulse.detectors.online import DetectorBank, OnlineEmbeddingDetector
from llmpulse.detectors.reference import Reference
from llmpulse.detectors.results import DriftEvent, WindowScore
from llmpulse.detectors.scalar import ScalarDriftDetector
from llmpulse.detectors.series import BaselineRecord, DriftMonitor, alert_signals
from llmpulse.detectors.windowed import MMDTest, TestResult, category_test, z_test

__all__ = [
    "BaselineRecord",
    "DetectorBank",
    "DriftDetector",
    "DriftEvent",
    "DriftMonitor",
    "Embedder",
    "HashingEmbedder",
    "MMDTest",
    "OnlineEmbeddingDetector",
    "Reference",
    "ScalarDriftDetector",
    "SentenceTransformerEmbedder",
    "TestResult",
    "WindowScore",
    "alert_signals",
    "category_test",
    "z_test",
]
