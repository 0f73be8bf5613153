"""The event contract: valid events pass, every bad one is rejected with field, rule, value."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmpulse.errors import ValidationError
from llmpulse.processors.validate import validate_mapping, validate_raw
from tests.helpers import event, raw

REQUIRED = ["schema_version", "event_id", "timestamp", "service", "model", "latency_ms"]


def test_minimal_event_and_defaults() -> None:
    e = validate_raw(raw(event(1)))
    assert e.status == "ok" and e.ttft_ms is None and e.scores == {}
    assert e.timestamp.tzinfo is not None and e.timestamp_ms == event(1)["timestamp"]


@pytest.mark.parametrize(
    "ts",
    ["2026-01-01T00:00:00.1Z", "2026-01-01T01:00:00.1+01:00", 1767225600100, 1767225600100.0],
)
def test_timestamp_forms_agree(ts: Any) -> None:
    assert validate_raw(raw(event(1, timestamp=ts))).timestamp_ms == 1767225600100


@pytest.mark.parametrize("field", REQUIRED)
def test_missing_required_field_is_named(field: str) -> None:
    e = event(1)
    del e[field]
    with pytest.raises(ValidationError) as info:
        validate_raw(raw(e))
    assert str(info.value).startswith(f"{field}: is required")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("latency_ms", -5, "latency_ms: must be >= 0, got -5"),
        ("ttft_ms", -1.5, "ttft_ms: must be >= 0, got -1.5"),
        ("input_tokens", -1, "input_tokens: must be >= 0, got -1"),
        ("output_tokens", 2.5, "output_tokens: must be a whole number, got 2.5"),
        ("status", "failed", "status: must be 'ok' or 'error', got 'failed'"),
        ("schema_version", 2, "schema_version: must be 1, got 2"),
        ("service", "", "service: must not be empty, got ''"),
        ("timestamp", "2026-01-01T00:00:00", "timestamp: must include a time zone offset"),
        ("timestamp", 1767225600, "timestamp: must be between 2000-01-01 and 2200-01-01"),
        ("cost_usd", "1.0x", "cost_usd: must be a number, got '1.0x'"),
        ("prompt_embedding", [0.1, "x"], "prompt_embedding[1]: must be a number, got 'x'"),
        ("scores", {"relevance": "high"}, "scores.relevance: must be a number, got 'high'"),
        ("attributes", {"k": 1}, "attributes.k: must be a string, got 1"),
    ],
)
def test_bad_field_reason(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_raw(raw(event(1, **{field: value})))
    assert str(info.value).startswith(message)
    assert info.value.problems[0].field.split("[")[0].split(".")[0] == field


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "$: must be valid JSON"),
        (b"[1, 2]", "$: must be a JSON object"),
        (b'"text"', "$: must be a JSON object"),
        (
            b'{"schema_version":1,"event_id":"e","timestamp":1767225600000,"service":"s",'
            b'"model":"m","latency_ms":NaN}',
            "$: must be valid JSON",
        ),
        (b"", "$: must be valid JSON"),
    ],
)
def test_undecodable_payloads(payload: bytes, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_raw(payload)
    assert str(info.value).startswith(message)


def test_nulls_for_optional_labels_mean_empty() -> None:
    e = validate_raw(raw(event(1, tenant=None, ttft_ms=None, endpoint=None)))
    assert e.tenant == "" and e.endpoint == "" and e.ttft_ms is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([*REQUIRED, "ttft_ms", "input_tokens", "status", "scores"]), json_values)
def test_any_value_is_accepted_or_rejected_with_a_named_field(field: str, value: Any) -> None:
    """Whatever a producer sends, validation answers with an event or a reason naming the
    field: it never raises anything else."""
    payload = event(7, **{field: value})
    try:
        e = validate_mapping(payload)
    except ValidationError as err:
        assert err.problems and all(p.field and p.rule for p in err.problems)
        assert any(p.field.startswith(field) for p in err.problems) or err.problems[0].field in (
            "schema_version",
            "$",
        )
        return
    assert e.latency_ms >= 0 and math.isfinite(e.latency_ms)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    try:
        validate_raw(data)
    except ValidationError as err:
        assert str(err)


@settings(max_examples=200, deadline=None)
@given(
    latency=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    tokens=st.integers(min_value=0, max_value=10**9),
    ts=st.integers(min_value=946_684_800_000, max_value=7_258_118_400_000 - 1),
)
def test_valid_values_round_trip(latency: float, tokens: int, ts: int) -> None:
    e = validate_raw(orjson.dumps(event(1, latency_ms=latency, input_tokens=tokens, timestamp=ts)))
    assert e.latency_ms == latency and e.input_tokens == tokens
    assert abs(e.timestamp_ms - ts) <= 1
