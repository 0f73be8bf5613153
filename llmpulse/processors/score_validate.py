"""Raw score messages -> ``ScoreEvent``, or a rejection naming field, rule and value.

The same rejection path as trace events: a ``ValidationError`` whose problems
are ``FieldProblem`` objects, turned into ``rejected_events`` rows and DLQ
messages by ``TraceProcessor.reject``. Scores are far fewer than calls, so the
batch validator checks one message at a time with the pydantic contract.

>>> out = validate_scores([
...     b'{"event_id":"e1","name":"helpful","value":true,"source":"human",'
...     b'"timestamp":1767225600000}',
...     b'{"event_id":"e1","name":"helpful","value":true,"source":"human",'
...     b'"timestamp":1767225600000}',
...     b'{"event_id":"e2","name":"relevance","value":"high","source":"eval",'
...     b'"timestamp":1767225600000}',
...     b'{"name":"x","value":1,"source":"eval","timestamp":1767225600000}',
... ])
>>> [s.event_id for s in out.scores], out.positions, out.duplicates
(['e1'], [0], 1)
>>> for i, err in out.rejected:
...     print(i, err)
2 value: must be a boolean or a finite number, got 'high'
3 event_id: needs event_id, or trace_id and span_id
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pydantic

from llmpulse.errors import MISSING, FieldProblem, ValidationError
from llmpulse.processors.validate import problems_from
from llmpulse.schemas.score import ScoreEvent

_VALUE_RULE = "must be a boolean or a finite number"
_TARGET_RULE = "needs event_id, or trace_id and span_id"


@dataclass
class ScoreValidation:
    """Accepted scores (first of each ``score_id``, in arrival order), their positions
    in the input, rejected positions with the reason, and in-batch duplicates."""

    scores: list[ScoreEvent]
    positions: list[int]
    rejected: list[tuple[int, ValidationError]] = field(default_factory=list)
    duplicates: int = 0


def _problems(exc: pydantic.ValidationError, data: Mapping[str, Any]) -> list[FieldProblem]:
    out: list[FieldProblem] = []
    value_seen = False
    for p in problems_from(exc):
        # ``bool | float`` reports one error per member of the union: say it once.
        if p.field.startswith("value"):
            if not value_seen:
                out.append(FieldProblem("value", _VALUE_RULE, data.get("value", MISSING)))
                value_seen = True
            continue
        if p.field == "$" and _TARGET_RULE in p.rule:
            out.append(FieldProblem("event_id", _TARGET_RULE, data.get("event_id", MISSING)))
            continue
        out.append(p)
    return out


def validate_score_mapping(data: Mapping[str, Any]) -> ScoreEvent:
    """Validate one decoded score; raises ``ValidationError`` with every problem."""
    if not isinstance(data, Mapping):
        raise ValidationError([FieldProblem("$", "must be a JSON object", type(data).__name__)])
    try:
        return ScoreEvent.model_validate(dict(data))
    except pydantic.ValidationError as exc:
        raise ValidationError(_problems(exc, data)) from None


def validate_score_raw(raw: bytes | str) -> ScoreEvent:
    """Parse and validate one JSON score message."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw if isinstance(raw, str) else bytes(raw[:60]).decode("utf-8", "replace")
        raise ValidationError([FieldProblem("$", "must be valid JSON", text[:60])]) from None
    return validate_score_mapping(data)


def validate_scores(values: Sequence[bytes]) -> ScoreValidation:
    """Validate many raw score messages; duplicates of a ``score_id`` keep the first."""
    out = ScoreValidation([], [])
    seen: set[str] = set()
    for i, raw in enumerate(values):
        try:
            score = validate_score_raw(raw)
        except ValidationError as err:
            out.rejected.append((i, err))
            continue
        if score.score_id in seen:
            out.duplicates += 1
            continue
        seen.add(score.score_id)
        out.scores.append(score)
        out.positions.append(i)
    return out


__all__ = [
    "ScoreValidation",
    "validate_score_mapping",
    "validate_score_raw",
    "validate_scores",
]
