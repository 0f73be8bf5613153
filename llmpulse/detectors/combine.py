"""The drift detectors' names where they were first defined, for existing importers.

The detectors used to live in this one module; they now have one module per job
(``results``: what they report, ``evidence``: the engine they share,
``embedding`` and ``scalar``: one detector each). Import from those in new code.
"""

from __future__ import annotations

from llmpulse.detectors.embedding import DriftDetector
from llmpulse.detectors.evidence import SEGMENTS, DetectorOptions, TimeLike, _Evidence
from llmpulse.detectors.results import DriftEvent, WindowScore
from llmpulse.detectors.scalar import ScalarDriftDetector
from llmpulse.schemas.batch import from_ms, to_ms

__all__ = [
    "SEGMENTS",
    "DetectorOptions",
    "DriftDetector",
    "DriftEvent",
    "ScalarDriftDetector",
    "TimeLike",
    "WindowScore",
    "_Evidence",
    "from_ms",
    "to_ms",
]
