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

from llmpulse.processors.batch_validate import validate_batch
from llmpulse.processors.traces import RawMessage, Rejection, TraceProcessor
from llmpulse.schemas.batch import TraceBatch
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
    def __init__(self, processor: TraceProcessor, *, known: KnownRejections | None = None) -> None:
        self.processor = processor
        self.known = known

    def validate(self, messages: Sequence[RawMessage]) -> Validated:
        checked = validate_batch([m.value for m in messages], [m.source for m in messages])
        rejections = [self.processor.reject(messages[i], err) for i, err in checked.rejected]
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
        rows = [
            (r.rejection_id, ctx.now, r.source, r.reason, r.category, r.field, r.event_id,
             r.raw_text)
            for r in rejections
        ]  # fmt: skip
        return Output(
            rows=[Rows("rejected_events", rows, names(REJECTED_COLUMNS))], batch=validated.batch
        )
