"""Keeping personal data out of the store: PII recognizers, redaction policy, and
batch redaction for the ingest path (docs/security.md)."""

from llmpulse.privacy.batch import RedactionCounts, redact_batch, scrub_raw, scrub_rejections
from llmpulse.privacy.policy import MODES, Mode, Redacted, RedactionPolicy, Redactor
from llmpulse.privacy.recognizers import PII_TYPES, Match, Recognizer

__all__ = [
    "MODES",
    "PII_TYPES",
    "Match",
    "Mode",
    "Recognizer",
    "Redacted",
    "RedactionCounts",
    "RedactionPolicy",
    "Redactor",
    "redact_batch",
    "scrub_raw",
    "scrub_rejections",
]
