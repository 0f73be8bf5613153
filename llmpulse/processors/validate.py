"""Raw bytes or dicts -> ``TraceEvent``, or a rejection that names field, rule and value.

>>> validate_raw(b'{"schema_version":1,"event_id":"x","timestamp":1767225600000,'
...              b'"service":"s","model":"m","latency_ms":-5}')
Traceback (most recent call last):
...
llmpulse.errors.ValidationError: latency_ms: must be >= 0, got -5
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson
import pydantic
from pydantic_core import ErrorDetails

from llmpulse.errors import MISSING, FieldProblem, ValidationError
from llmpulse.schemas.event import DEFAULT_LIMITS, SCHEMA_VERSION, EventLimits, TraceEvent

_TYPE_RULES: dict[str, str] = {
    "missing": "is required",
    "finite_number": "must be a finite number",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "string_type": "must be a string",
    "dict_type": "must be an object",
    "list_type": "must be an array",
    "timezone_aware": "must include a time zone offset (RFC 3339, e.g. 2026-01-01T12:00:00Z)",
    "datetime_type": "must be an RFC 3339 timestamp with zone or epoch milliseconds",
    "datetime_parsing": "must be an RFC 3339 timestamp with zone or epoch milliseconds",
    "datetime_from_date_parsing": "must be an RFC 3339 timestamp with zone or epoch milliseconds",
    "json_invalid": "must be valid JSON",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
}


def _num(v: Any) -> Any:
    return int(v) if isinstance(v, float) and v.is_integer() else v


# Rules that carry a limit: pydantic's error context fills the template.
_LIMIT_RULES: Final = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "string_too_short": "must not be empty",
    "string_too_long": "must be at most {max_length} characters",
    "too_short": "must have at least {min_length} items",
    "too_long": "must have at most {max_length} items",
    "literal_error": "must be {expected}",
}


def _rule(err: ErrorDetails) -> str:
    kind = err["type"]
    ctx: dict[str, Any] = {k: _num(v) for k, v in (err.get("ctx") or {}).items()}
    template = _LIMIT_RULES.get(kind)
    if template is not None:
        return template.format(**ctx)
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return _TYPE_RULES.get(kind, err["msg"])


def _field(err: ErrorDetails) -> str:
    loc = [str(p) for p in err["loc"]]
    # A list element or map key shows as prompt_embedding[3], scores.relevance.
    parts: list[str] = []
    for p in loc:
        if p.isdigit() and parts:
            parts[-1] += f"[{p}]"
        elif p in ("[key]",):
            parts[-1] += "(key)"
        else:
            parts.append(p)
    return ".".join(parts) or "$"


def problems_from(exc: pydantic.ValidationError) -> list[FieldProblem]:
    out: list[FieldProblem] = []
    for err in exc.errors(include_url=False):
        kind = err["type"]
        value = MISSING if kind == "missing" else err.get("input", MISSING)
        if kind in ("json_invalid", "model_type", "model_attributes_type"):
            field, value = "$", _preview(err.get("input", MISSING))
        else:
            field = _field(err)
        out.append(FieldProblem(field, _rule(err), value))
    # The schema version is checked first: for a future version every other
    # complaint would be noise.
    version = [p for p in out if p.field == "schema_version" and p.value is not MISSING]
    return version or out


def _preview(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        value = bytes(value[:60]).decode("utf-8", "replace")
    if isinstance(value, str) and len(value) > 60:
        return value[:57] + "..."
    if isinstance(value, list | dict):
        return type(value).__name__
    return value


def validate_raw(raw: bytes | str, limits: EventLimits = DEFAULT_LIMITS) -> TraceEvent:
    """Parse and validate one JSON message; raises ``ValidationError`` with every problem."""
    if len(raw) > limits.max_event_bytes:
        # Checked before parsing: an oversized message costs nothing more. (Its
        # size is not shown: a reader may have cut it at the limit already.)
        raise ValidationError([size_problem(limits)])
    # orjson then a dict is faster than pydantic's own JSON parser here, because
    # the model's one Python pre-validator would otherwise force a slow path.
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValidationError([FieldProblem("$", "must be valid JSON", _preview(raw))]) from None
    return validate_mapping(data, limits)


def size_problem(limits: EventLimits) -> FieldProblem:
    return FieldProblem("$", f"must be at most {limits.max_event_bytes} bytes", MISSING)


def validate_mapping(data: Mapping[str, Any], limits: EventLimits = DEFAULT_LIMITS) -> TraceEvent:
    """Validate an already decoded event (used by decoders of other formats)."""
    if not isinstance(data, Mapping):
        raise ValidationError([FieldProblem("$", "must be a JSON object", _preview(data))])
    try:
        event = TraceEvent.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ValidationError(problems_from(exc)) from None
    problems = limit_problems(event, limits)
    if problems:
        raise ValidationError(problems)
    return event


def limit_problems(event: TraceEvent, limits: EventLimits) -> list[FieldProblem]:
    """The configurable limits a valid event breaks (text length, embedding size)."""
    out: list[FieldProblem] = []
    for name in ("prompt", "response"):
        text = getattr(event, name)
        if text is not None and len(text) > limits.max_text_chars:
            out.append(
                FieldProblem(name, f"must be at most {limits.max_text_chars} characters", text)
            )
    for name in ("prompt_embedding", "response_embedding"):
        vec = getattr(event, name)
        if vec is not None and len(vec) > limits.max_embedding_dim:
            out.append(
                FieldProblem(name, f"must have at most {limits.max_embedding_dim} items", len(vec))
            )
    return out


__all__ = [
    "SCHEMA_VERSION",
    "limit_problems",
    "problems_from",
    "size_problem",
    "validate_mapping",
    "validate_raw",
]
