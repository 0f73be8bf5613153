"""The trace event, schema version 1: one JSON object per LLM call.

This is the public contract between services and llmpulse; field names follow
the OpenTelemetry GenAI semantic conventions where they name the same thing
(see ``OTEL_GENAI_MAPPING`` and docs/event-schema.md).

Token convention (as in OpenTelemetry GenAI): ``input_tokens`` is the total
input including cache reads and cache creation; ``output_tokens`` is the total
output including reasoning tokens. The cost module prices each part at its rate.

>>> e = TraceEvent.model_validate_json(
...     b'{"schema_version":1,"event_id":"a1","timestamp":1767225600000,'
...     b'"service":"chat","model":"gpt-4o","latency_ms":812.5}')
>>> (e.timestamp.isoformat(), e.status, e.input_tokens)
('2026-01-01T00:00:00+00:00', 'ok', None)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

# Re-exported: the validators import it from here.
from llmpulse.schemas.version import SCHEMA_VERSION as SCHEMA_VERSION  # noqa: PLC0414

MAX_ID_LEN = 256
MAX_LABEL_LEN = 512
MAX_EMBEDDING_DIM = 8192  # the hard cap; EventLimits may set a lower one
DEFAULT_MAX_EVENT_BYTES = 1_048_576  # Kafka's default message.max.bytes
DEFAULT_MAX_TEXT_CHARS = 524_288
# Event times outside this range are almost always a unit mistake (seconds vs
# milliseconds, microseconds), which would poison every window they touch.
MIN_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
MAX_EVENT_TIME = datetime(2200, 1, 1, tzinfo=UTC)


def _epoch_ms(value: Any) -> Any:
    """Numbers are epoch milliseconds (pydantic alone would guess seconds or ms)."""
    if isinstance(value, bool):
        return value  # rejected by the datetime validator with a clear message
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number of epoch milliseconds")
        try:
            return datetime.fromtimestamp(value / 1000.0, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError("epoch milliseconds out of range") from exc
    return value


def _normalise_input(data: Any, label_fields: Iterable[str]) -> Any:
    """The raw input of an event model, before field validation.

    One Python call per event instead of one per field keeps validation
    cheap: emitters commonly send null for "not set" labels (the store uses
    ""), and numeric timestamps are epoch milliseconds.
    """
    if not isinstance(data, dict):
        return data
    for name in label_fields:
        if name in data and data[name] is None:
            data[name] = ""
    ts = data.get("timestamp")
    if ts is not None and not isinstance(ts, str):
        data["timestamp"] = _epoch_ms(ts)
    return data


def _plausible_time(v: datetime) -> datetime:
    v = v.astimezone(UTC)
    if not MIN_EVENT_TIME <= v < MAX_EVENT_TIME:
        raise ValueError("must be between 2000-01-01 and 2200-01-01 (check the unit: epoch ms)")
    return v


@dataclass(frozen=True, slots=True)
class EventLimits:
    """Configurable limits on one event (settings section ``limits``): an event
    over them is rejected with the limit named, before it costs more memory."""

    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS  # prompt and response, each
    max_embedding_dim: int = MAX_EMBEDDING_DIM

    def __post_init__(self) -> None:
        if not 0 < self.max_embedding_dim <= MAX_EMBEDDING_DIM:
            raise ValueError(f"max_embedding_dim must be in 1..{MAX_EMBEDDING_DIM}")
        if self.max_event_bytes < 1 or self.max_text_chars < 0:
            raise ValueError("limits must be positive")


DEFAULT_LIMITS = EventLimits()

Label = Annotated[str, StringConstraints(max_length=MAX_LABEL_LEN)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LEN)]
Required = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL_LEN)]
Tokens = Annotated[int, Field(ge=0, le=2**40)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Embedding = Annotated[list[Annotated[float, Field(allow_inf_nan=False)]], Field(min_length=1)]
EventTime = Annotated[AwareDatetime, AfterValidator(_plausible_time)]
TOKEN_FIELDS: Final = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_creation_input_tokens",
    "reasoning_tokens",
)


class TraceEvent(BaseModel):
    """One LLM call. Unknown fields are ignored so newer emitters stay compatible."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=False)

    schema_version: Literal[1]
    event_id: Id
    timestamp: EventTime
    service: Required
    model: Required
    latency_ms: NonNegative

    endpoint: Label = ""
    tenant: Label = ""
    team: Label = ""
    user_id: Label = ""
    environment: Label = ""
    provider: Label = ""
    response_model: Label = ""
    operation: Label = ""
    prompt_version: Label = ""
    variant: Label = ""
    trace_id: Label = ""
    span_id: Label = ""
    parent_span_id: Label = ""
    ttft_ms: NonNegative | None = None
    status: Literal["ok", "error"] = "ok"
    error_type: Label = ""
    finish_reason: Label = ""
    input_tokens: Tokens | None = None
    output_tokens: Tokens | None = None
    cached_input_tokens: Tokens | None = None
    cache_creation_input_tokens: Tokens | None = None
    reasoning_tokens: Tokens | None = None
    cost_usd: NonNegative | None = None
    prompt: str | None = None
    response: str | None = None
    prompt_embedding: Embedding | None = Field(None, max_length=MAX_EMBEDDING_DIM)
    response_embedding: Embedding | None = Field(None, max_length=MAX_EMBEDDING_DIM)
    scores: dict[Label, Annotated[float, Field(allow_inf_nan=False)]] = Field(default_factory=dict)
    attributes: dict[Label, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        return _normalise_input(data, LABEL_FIELDS)

    # JSON true equals 1 in Python: pydantic would read it as version 1, one
    # millisecond or one token. A boolean where a number belongs is a wrong type.
    @field_validator("schema_version", mode="before")
    @classmethod
    def _version_not_bool(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("must be 1")
        return v

    @field_validator("latency_ms", "ttft_ms", "cost_usd", mode="before")
    @classmethod
    def _number_not_bool(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("must be a number")
        return v

    @field_validator(*TOKEN_FIELDS, mode="before")
    @classmethod
    def _count_not_bool(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("must be an integer")
        return v

    @property
    def is_error(self) -> bool:
        return self.status == "error"

    @property
    def timestamp_ms(self) -> int:
        return int(self.timestamp.timestamp() * 1000)


LABEL_FIELDS: tuple[str, ...] = (
    "endpoint",
    "tenant",
    "team",
    "user_id",
    "environment",
    "provider",
    "response_model",
    "operation",
    "prompt_version",
    "variant",
    "trace_id",
    "span_id",
    "parent_span_id",
    "error_type",
    "finish_reason",
)

# Dimensions by which series are grouped (windows, drift, alerts).
DIMENSIONS: tuple[str, ...] = (
    "service",
    "endpoint",
    "model",
    "provider",
    "tenant",
    "team",
    "prompt_version",
    "variant",
    "environment",
)

# OpenTelemetry GenAI span attribute -> trace event field.
OTEL_GENAI_MAPPING: dict[str, str] = {
    "gen_ai.request.model": "model",
    "gen_ai.response.model": "response_model",
    "gen_ai.provider.name": "provider",
    "gen_ai.system": "provider",
    "gen_ai.operation.name": "operation",
    "gen_ai.response.id": "event_id",
    "gen_ai.response.finish_reasons": "finish_reason",
    "gen_ai.response.time_to_first_chunk": "ttft_ms",
    "gen_ai.usage.input_tokens": "input_tokens",
    "gen_ai.usage.prompt_tokens": "input_tokens",
    "gen_ai.usage.output_tokens": "output_tokens",
    "gen_ai.usage.completion_tokens": "output_tokens",
    "gen_ai.usage.cache_read.input_tokens": "cached_input_tokens",
    "gen_ai.usage.cache_creation.input_tokens": "cache_creation_input_tokens",
    "gen_ai.usage.reasoning.output_tokens": "reasoning_tokens",
    "error.type": "error_type",
}
