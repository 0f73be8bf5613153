"""The score event, schema version 1: a judgement of one LLM call, made after it.

Evaluations, human review and user feedback arrive seconds to days after the
call they judge. A score names its call by ``event_id`` (the trace event's id)
or by the OpenTelemetry pair ``trace_id`` + ``span_id``, and carries a score
``name``, a numeric or boolean ``value``, the ``source`` that produced it and the
``timestamp`` at which it was made. See docs/canary.md.

Scores are immutable: the same score sent twice (a redelivery, a second replay)
is stored once, under a deterministic ``score_id`` (the producer's own, or a hash
of the call, name, source, timestamp and value). A changed judgement is a new
score with a new timestamp; both count.

>>> s = ScoreEvent.model_validate({"event_id": "e1", "name": "helpful", "value": True,
...     "source": "user_feedback", "timestamp": 1767225600000})
>>> (s.numeric_value, s.data_type, s.timestamp.isoformat(), len(s.score_id))
(1.0, 'boolean', '2026-01-01T00:00:00+00:00', 32)
>>> ScoreEvent.model_validate({"trace_id": "t", "name": "x", "value": 1, "source": "eval",
...     "timestamp": 1767225600000}).target
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for ScoreEvent
  Value error, needs event_id, or trace_id and span_id [type=value_error, ...]
    For further information visit ...
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from llmpulse.schemas.batch import to_ms
from llmpulse.schemas.event import (
    MAX_ID_LEN,
    MAX_LABEL_LEN,
    EventTime,
    Label,
    _normalise_input,
)

SCORE_SCHEMA_VERSION: Final = 1
MAX_COMMENT_LEN: Final = 4096
# The record marker of a score in a mixed replay file (trace events have no ``kind``).
SCORE_KIND: Final = "score"
# Sources llmpulse itself produces or documents; any other non-empty label is accepted.
KNOWN_SOURCES: Final = ("eval", "human", "user_feedback", "llm_judge", "api")
DATA_TYPES: Final = ("numeric", "boolean")

Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL_LEN)]
Comment = Annotated[str, StringConstraints(max_length=MAX_COMMENT_LEN)]
# bool first: pydantic would otherwise read true as 1.0 and lose the data type.
Value = bool | Annotated[float, Field(allow_inf_nan=False)]


class ScoreEvent(BaseModel):
    """One score of one call. Unknown fields are ignored, as for trace events."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=False)

    schema_version: Literal[1] = 1
    kind: Literal["score"] = "score"
    event_id: Label = ""
    trace_id: Label = ""
    span_id: Label = ""
    name: Name
    value: Value
    source: Name
    timestamp: EventTime
    score_id: Label = ""
    comment: Comment = ""
    author: Label = ""
    attributes: dict[Label, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        return _normalise_input(
            data, ("event_id", "trace_id", "span_id", "score_id", "comment", "author")
        )

    @model_validator(mode="after")
    def _has_target(self) -> ScoreEvent:
        if not self.event_id and not (self.trace_id and self.span_id):
            raise ValueError("needs event_id, or trace_id and span_id")
        if len(self.score_id) > MAX_ID_LEN:
            raise ValueError(f"score_id must be at most {MAX_ID_LEN} characters")
        if not self.score_id:
            # Frozen model: the derived id is filled in once, here.
            derived = score_id_of(
                self.target, self.name, self.source, self.timestamp_ms, self.value
            )
            object.__setattr__(self, "score_id", derived)
        return self

    @property
    def numeric_value(self) -> float:
        return float(self.value)

    @property
    def data_type(self) -> str:
        return "boolean" if isinstance(self.value, bool) else "numeric"

    @property
    def timestamp_ms(self) -> int:
        return to_ms(self.timestamp)

    @property
    def target(self) -> str:
        """The call it scores, as one string: ``event:<id>`` or ``span:<trace>/<span>``."""
        if self.event_id:
            return f"event:{self.event_id}"
        return f"span:{self.trace_id}/{self.span_id}"


def score_id_of(target: str, name: str, source: str, timestamp_ms: int, value: float) -> str:
    """Deterministic score id (32 hex characters).

    >>> score_id_of("event:e1", "helpful", "human", 0, True) == score_id_of(
    ...     "event:e1", "helpful", "human", 0, 1.0)
    False
    """
    # The data type is part of the identity: true and 1.0 are different answers.
    shown = repr(value) if isinstance(value, bool) else repr(float(value))
    key = "\x1f".join((target, name, source, str(int(timestamp_ms)), shown))
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


__all__ = [
    "DATA_TYPES",
    "KNOWN_SOURCES",
    "SCORE_KIND",
    "SCORE_SCHEMA_VERSION",
    "ScoreEvent",
    "score_id_of",
]
