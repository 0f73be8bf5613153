"""The intake: raw messages become a ``TraceBatch``; bad ones become ``rejected_events`` rows.

Owner: the input partition a message was read from (stateless apart from its
rejections, whose ids come from the message's position, so a redelivered bad
message is the same row). Validation needs no state, so a runner may validate
the next batch while the previous one is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from llmpulse.privacy import RedactionCounts, RedactionPolicy, redact_batch, scrub_rejections
from llmpulse.processors.batch_validate import validate_batch
from llmpulse.processors.traces import RawMessage, Rejection, TraceProcessor
from llmpulse.schemas.batch import TraceBatch
from llmpulse.schemas.event import DEFAULT_LIMITS, EventLimits
from llmpulse.schemas.rows import REJECTED_COLUMNS, names
from llmpulse.stages.base import Context, Output, Rows

KnownRejections = Callable[[Sequence[str]], Collection[str]]


@dataclass(frozen=True)
class Validated:
    """One batch of messages after validation (no state touched yet)."""

    messages: int
    batch: TraceBatch
    rejections: list[Rejection]
    duplicates: int  # repeated ids inside the batch (the first copy is kept)

    @property
    def max_time_ms(self) -> int | None:
        return int(self.batch.timestamp_ms.max()) if len(self.batch) else None


def batch_token(kind: str, ids: Sequence[str]) -> str:
    """A deduplication token for an insert of these ids (a retried insert is dropped)."""
    h = hashlib.blake2b(kind.encode(), digest_size=16)
    for i in sorted(ids):
        h.update(i.encode())
        h.update(b"\0")
    return h.hexdigest()


class Intake:
    """Validation under the configured limits, then PII redaction before anything is
    written: every entrance (JSON events, OTLP spans, replay files) passes here."""

    def __init__(
        self,
        processor: TraceProcessor,
        *,
        known: KnownRejections | None = None,
        limits: EventLimits = DEFAULT_LIMITS,
        privacy: RedactionPolicy | None = None,
        store_text: bool = False,
    ) -> None:
        self.processor = processor
        self.known = known
        self.limits = limits
        self.privacy = privacy
        self.store_text = store_text
        self.redactions = RedactionCounts()

    def validate(
        self, messages: Sequence[RawMessage], rejected: Sequence[Rejection] = ()
    ) -> Validated:
        """``rejected``: rejections made before validation (an undecodable OTLP payload)."""
        checked = validate_batch(
            [m.value for m in messages], [m.source for m in messages], self.limits
        )
        rejections = [
            *rejected,
            *(self.processor.reject(messages[i], err) for i, err in checked.rejected),
        ]
        if self.privacy is not None:
            self.redactions.add(redact_batch(checked.batch, self.privacy))
            rejections = scrub_rejections(rejections, self.privacy, store_text=self.store_text)
        return Validated(len(messages), checked.batch, rejections, checked.duplicates)

    def process(self, validated: Validated, ctx: Context) -> Output:
        stats = ctx.stats
        stats.messages += validated.messages
        stats.duplicates += validated.duplicates
        rejections = validated.rejections
        stats.rejected.update(r.category for r in rejections)
        if rejections and self.known is not None:
            known = self.known([r.rejection_id for r in rejections])
            rejections = [r for r in rejections if r.rejection_id not in known]
        if not rejections:
            return Output(batch=validated.batch)
        return Output(rows=[rejection_rows(rejections, ctx.now)], batch=validated.batch)


def rejection_rows(rejections: Sequence[Rejection], now: datetime) -> Rows:
    """``rejected_events`` rows of ``rejections``, received ``now``."""
    rows = [
        (r.rejection_id, now, r.source, r.reason, r.category, r.field, r.event_id, r.raw_text)
        for r in rejections
    ]
    return Rows("rejected_events", rows, names(REJECTED_COLUMNS))
