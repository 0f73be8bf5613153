"""The columnar validator and pricer agree with the per-event ones on any input."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmpulse.errors import ValidationError
from llmpulse.processors.batch_cost import price_batch
from llmpulse.processors.batch_validate import validate_batch
from llmpulse.processors.cost import PriceTable
from llmpulse.processors.traces import TraceProcessor
from llmpulse.processors.validate import validate_raw
from llmpulse.schemas.batch import (
    NUMERIC_FIELDS,
    OBJECT_FIELDS,
    TraceBatch,
    event_values,
)
from llmpulse.schemas.event import DEFAULT_LIMITS, LABEL_FIELDS, EventLimits

T0 = 1_767_225_600_000
_ABSENT = object()

# Per field: typical valid values, boundaries, and values the contract rejects
# or accepts only through coercion (those must take the per-event path).
_NUMBERS = [0, 1, 0.5, 812.25, 1e-9, 1e308, -1, -0.0, True, "5", None, 2**53 + 1, [], {}]
_TOKENS = [0, 7, 2**40, 2**40 + 1, -1, 3.0, 3.5, True, "12", None, 2**63 - 1]
_STRINGS = ["", "a", "x" * 512, "x" * 513, 5, None, True, ["a"], "é✓", " padded "]
_FIELDS: dict[str, list[Any]] = {
    "schema_version": [1, 1, 1, 2, "1", True, 1.0, None],
    "event_id": ["e", "e", "id-" + "x" * 253, "", "x" * 257, 5, None],
    "timestamp": [T0, T0 + 1, T0 + 999, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00",
                  T0 / 1.0, T0 + 0.5, 10**20, 946_684_800_000, 7_258_118_400_000, -5, True,
                  None, 1767225600],
    "service": ["svc", "", "x" * 512, "x" * 513, 5, None],
    "model": ["gpt-4o", "claude-sonnet-4-5", "unknown-model", "", None, 3],
    "latency_ms": [5, 812.5, *_NUMBERS],
    "ttft_ms": [None, 12.5, *_NUMBERS],
    "cost_usd": [None, 0.01, *_NUMBERS],
    "status": ["ok", "error", "OK", None, "", 1],
    "input_tokens": [100, *_TOKENS],
    "output_tokens": [50, *_TOKENS],
    "cached_input_tokens": _TOKENS,
    "cache_creation_input_tokens": _TOKENS,
    "reasoning_tokens": _TOKENS,
    "prompt": [None, "hello", "", 5, "hey"],
    "response": [None, "world", ["x"], "a" * 101],
    "prompt_embedding": [None, [0.1, 0.2], [], [1, "x"], [1.0] * 3],
    "response_embedding": [None, [0.5], True],
    "scores": [{}, {"relevance": 0.5}, {"r": 1}, {"r": "0.5"}, {"r": True}, {"x" * 513: 1.0},
               {"r": None}, None, [], {"a": 1e308}],
    "attributes": [{}, {"region": "eu"}, {"k": 5}, {"k": None}, None, "x"],
    **{name: ["", "v", None, "x" * 512, "x" * 513, 7] for name in LABEL_FIELDS},
}  # fmt: skip


@st.composite
def _message(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(st.sampled_from([b"{", b"[]", b"null", b"5", b'"x"', b"", b"\xff\xfe"]))
    event: dict[str, Any] = {}
    for name, choices in _FIELDS.items():
        # mostly valid: the first choice, or absent for optional fields
        if draw(st.integers(0, 9)) < 7:
            value = choices[0]
        else:
            value = draw(st.sampled_from([*choices, _ABSENT]))
        if value is not _ABSENT:
            event[name] = value
    if kind == 1:
        event["unknown_field"] = {"nested": [1, 2]}
    try:
        return orjson.dumps(event)
    except TypeError:  # integers beyond 64 bits: orjson will not write them
        return json.dumps(event).encode()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and type(a) is type(b))
    return bool(a == b) and type(a) is type(b)


def _column_value(batch: TraceBatch, name: str, row: int) -> Any:
    if name in OBJECT_FIELDS:
        return batch.objects[name][row]
    return batch.numbers[name][row].item()


@pytest.mark.slow  # seconds long: run by `make test`, not by `make unit`
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_message(), min_size=1, max_size=40))
def test_batch_validation_matches_per_event_validation(messages: list[bytes]) -> None:
    _agree(messages, DEFAULT_LIMITS)


# Tight enough that the generated messages hit every limit often.
_LIMITS = st.builds(
    EventLimits,
    max_event_bytes=st.sampled_from([256, 300, 400, 2000]),
    max_text_chars=st.sampled_from([0, 3, 5, 100]),
    max_embedding_dim=st.sampled_from([1, 2, 3, 8192]),
)


@pytest.mark.slow  # seconds long: run by `make test`, not by `make unit`
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_message(), min_size=1, max_size=40), _LIMITS)
def test_batch_validation_matches_per_event_validation_under_limits(
    messages: list[bytes], limits: EventLimits
) -> None:
    out = _agree(messages, limits)
    for i, err in out.rejected:
        if len(messages[i]) > limits.max_event_bytes:
            assert str(err) == f"$: must be at most {limits.max_event_bytes} bytes"


def test_limits_name_the_field_and_the_limit() -> None:
    limits = EventLimits(max_event_bytes=1000, max_text_chars=10, max_embedding_dim=4)
    base = {"schema_version": 1, "event_id": "e", "timestamp": T0, "service": "s", "model": "m",
            "latency_ms": 1}  # fmt: skip
    cases = {
        "$: must be at most 1000 bytes": {**base, "prompt": "x" * 2000},
        "prompt: must be at most 10 characters, got 'xxxxxxxxxxx'": {**base, "prompt": "x" * 11},
        "response_embedding: must have at most 4 items, got 5": {
            **base, "response_embedding": [0.1] * 5
        },
    }  # fmt: skip
    for reason, event in cases.items():
        raw = orjson.dumps(event)
        out = validate_batch([raw], limits=limits)
        assert [str(e) for _, e in out.rejected] == [reason]
    ok = orjson.dumps({**base, "prompt": "x" * 10, "prompt_embedding": [0.5] * 4})
    assert len(validate_batch([ok], limits=limits).batch) == 1


def _agree(messages: list[bytes], limits: EventLimits) -> Any:
    out = validate_batch(messages, [f"t:{i}" for i in range(len(messages))], limits)
    rejected = dict(out.rejected)
    positions = out.positions.tolist()
    seen: set[str] = set()
    expected_positions = []
    for i, raw in enumerate(messages):
        try:
            event = validate_raw(raw, limits)
        except ValidationError as err:
            assert i in rejected, (raw, err)
            assert str(rejected[i]) == str(err)
            continue
        assert i not in rejected, (raw, rejected.get(i))
        if event.event_id in seen:
            continue  # an in-batch duplicate: the first one is kept
        seen.add(event.event_id)
        expected_positions.append(i)
        row = positions.index(i)
        for name, value in event_values(event).items():
            got = _column_value(out.batch, name, row)
            assert _same(got, value), (raw, name, got, value)
        assert out.batch.source[row] == f"t:{i}"
    assert positions == expected_positions
    assert out.duplicates == len(messages) - len(rejected) - len(positions)
    assert set(out.batch.objects) | set(out.batch.numbers) == {*OBJECT_FIELDS, *NUMERIC_FIELDS}
    return out


@pytest.mark.slow  # seconds long: run by `make test`, not by `make unit`
@settings(max_examples=200, deadline=None)
@given(st.lists(_message(), min_size=1, max_size=40))
def test_batch_pricing_matches_cost_of_call(messages: list[bytes]) -> None:
    table = PriceTable.default()
    out = validate_batch(messages)
    price_batch(table, out.batch)
    processor = TraceProcessor(table)
    for row, i in enumerate(out.positions.tolist()):
        expected = processor.price(validate_raw(messages[i]))
        got = out.batch.cost[row]
        if expected.cost_usd is None:
            assert math.isnan(got)
        else:
            assert got == expected.cost_usd  # bit for bit, not approximately
        assert out.batch.cost_source[row] == expected.cost_source
        assert out.batch.price_version[row] == expected.price_version


def test_price_changes_apply_from_their_date() -> None:
    table = PriceTable.default()
    day = 86_400_000
    lines = [
        orjson.dumps(
            {"schema_version": 1, "event_id": f"e{k}", "timestamp": T0 - k * 200 * day,
             "service": "s", "model": "gpt-4o", "latency_ms": 1, "input_tokens": 1_000_000}
        )
        for k in range(5)
    ]  # fmt: skip
    out = validate_batch(lines)
    price_batch(table, out.batch)
    processor = TraceProcessor(table)
    expected = [processor.price(validate_raw(x)).cost_usd for x in lines]
    assert out.batch.cost.tolist() == expected


def test_rejected_rows_never_hide_a_valid_duplicate_id() -> None:
    bad = b'{"schema_version":1,"event_id":"same","timestamp":1767225600000,"service":"s",' \
          b'"model":"m","latency_ms":-1}'  # fmt: skip
    good = bad.replace(b"-1", b"3")
    out = validate_batch([bad, good, good])
    assert out.positions.tolist() == [1]
    assert [i for i, _ in out.rejected] == [0]
    assert out.duplicates == 1
    assert np.isclose(out.batch.numbers["latency_ms"][0], 3.0)
