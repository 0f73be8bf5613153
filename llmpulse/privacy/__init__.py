"""Keeping personal data out of the store: PII detectors, redaction policy, and
batch redaction for the ingest path (docs/security.md)."""

from llmpulse.privacy.batch import RedactionCounts, redact_batch, scrub_raw, scrub_rejections
from llmpulse.privacy.detectors import PII_TYPES, Detector, Match
from llmpulse.privacy.policy import MODES, Mode, Redacted, RedactionPolicy, Redactor

__all__ = [
    "MODES",
    "PII_TYPES",
    "Detector",
    "Match",
    "Mode",
    "Redacted",
    "RedactionCounts",
    "RedactionPolicy",
    "Redactor",
    "redact_batch",
    "scrub_raw",
    "scrub_rejections",
]
