"""Synthetic traffic: determinism, incident effects, malformed input."""

from __future__ import annotations

import gzip
import math
import statistics
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmpulse.errors import ConfigError, ValidationError
from llmpulse.processors.validate import validate_raw
from llmpulse.schemas.event import MAX_LABEL_LEN
from llmpulse.synth.malformed import malformed_cases, malformed_events
from llmpulse.synth.traffic import (
    BASELINE_TOPICS,
    VOCABULARIES,
    Incident,
    TrafficConfig,
    TrafficGenerator,
    write_jsonl,
)

START = 1_767_225_600_000  # 2026-01-01T00:00:00Z

# --------------------------------------------------------------------------- the contract

_OPTIONAL_STR = (
    "endpoint", "tenant", "team", "user_id", "environment", "provider", "response_model",
    "operation", "prompt_version", "variant", "trace_id", "span_id", "parent_span_id",
    "error_type", "finish_reason", "prompt", "response",
)  # fmt: skip
_OPTIONAL_INT = (
    "input_tokens", "output_tokens", "cached_input_tokens", "cache_creation_input_tokens",
    "reasoning_tokens",
)  # fmt: skip


def _finite_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def contract_problem(raw: bytes) -> str | None:
    """An independent, strict reading of the v1 contract: why ``raw`` is invalid, or None."""
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    if not isinstance(event, dict):
        return "not an object"
    if event.get("schema_version") != 1 or isinstance(event.get("schema_version"), bool):
        return "schema_version"
    if not isinstance(event.get("event_id"), str) or not event["event_id"]:
        return "event_id"
    for name in ("service", "model"):
        if not isinstance(event.get(name), str) or not 0 < len(event[name]) <= MAX_LABEL_LEN:
            return name
    ts: Any = event.get("timestamp")
    if isinstance(ts, str):
        try:
            if datetime.fromisoformat(ts).tzinfo is None:
                return "timestamp without zone"
        except ValueError:
            return "timestamp unparsable"
    elif not (_finite_number(ts) and ts >= 0):
        return "timestamp"
    for name in ("latency_ms", "ttft_ms", "cost_usd"):
        if (name in event or name == "latency_ms") and not (
            _finite_number(event.get(name)) and event[name] >= 0
        ):
            return name
    for name in _OPTIONAL_STR:
        if name in event and not isinstance(event[name], str):
            return name
    for name in _OPTIONAL_INT:
        v = event.get(name, 0)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            return name
    if event.get("status", "ok") not in ("ok", "error"):
        return "status"
    for name in ("prompt_embedding", "response_embedding"):
        if name in event and not (
            isinstance(event[name], list) and all(_finite_number(x) for x in event[name])
        ):
            return name
    scores = event.get("scores", {})
    if not isinstance(scores, dict) or not all(_finite_number(v) for v in scores.values()):
        return "scores"
    attributes = event.get("attributes", {})
    if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
        return "attributes"
    return None


def _gen(seed: int = 1, rate: float = 50.0, **kw: Any) -> TrafficGenerator:
    config = kw.pop("config", None) or TrafficConfig()
    return TrafficGenerator(config, seed=seed, start_ms=START, rate_per_s=rate, **kw)


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_events() -> None:
    config = TrafficConfig(embeddings=True)
    a = list(_gen(5, config=config).events(2000))
    b = list(_gen(5, config=TrafficConfig(embeddings=True)).events(2000))
    assert a == b
    c = list(_gen(6, config=config).events(2000))
    assert [e["event_id"] for e in a] != [e["event_id"] for e in c]


@settings(max_examples=25, deadline=None)
@given(
    t0=st.integers(min_value=-5_000, max_value=20_000),
    width=st.integers(min_value=0, max_value=8_000),
)
def test_events_between_is_a_slice_of_events(t0: int, width: int) -> None:
    gen = _gen(3, rate=40.0)
    everything = list(gen.events(1200))  # covers ~30 s
    expected = [e for e in everything if START + t0 <= e["timestamp"] < START + t0 + width]
    assert list(gen.events_between(START + t0, START + t0 + width)) == expected


@pytest.mark.slow  # seconds long: run by `make test`, not by `make unit`
def test_events_are_valid_ordered_and_poisson() -> None:
    events = list(_gen(9, rate=200.0, config=TrafficConfig(embeddings=True)).events(20_000))
    for e in events[:3000]:
        assert contract_problem(orjson.dumps(e)) is None, e
        assert e.get("cached_input_tokens", 0) <= e.get("input_tokens", 0) or e["status"] == "error"
        assert e.get("reasoning_tokens", 0) <= e.get("output_tokens", 0)
        if "cache_creation_input_tokens" in e:
            assert (
                e.get("cached_input_tokens", 0) + e["cache_creation_input_tokens"]
                <= e["input_tokens"]
            )
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps) and stamps[0] >= START
    assert len({e["event_id"] for e in events}) == len(events)
    # 20,000 arrivals at 200/s span about 100 s (Poisson: +-0.7 % at one sigma).
    span_s = (stamps[-1] - START) / 1000
    assert 95 < span_s < 105
    errors = sum(e["status"] == "error" for e in events) / len(events)
    assert 0.005 <= errors <= 0.011
    assert {e["provider"] for e in events} == {"openai", "anthropic", "google", "mistral"}
    assert len(events[0]["prompt_embedding"]) == 32


def test_wall_clock_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    def boom() -> float:
        raise AssertionError("wall clock read")

    monkeypatch.setattr(time, "time", boom)
    monkeypatch.setattr(time, "time_ns", boom)
    assert len(list(_gen().events(100))) == 100


def test_invalid_configuration() -> None:
    with pytest.raises(ConfigError):
        TrafficConfig(services=[])
    with pytest.raises(ConfigError):
        TrafficConfig(drift_topic="billing")
    with pytest.raises(ConfigError):
        Incident("error_burst", 0, 10, magnitude=2.0)
    with pytest.raises(ConfigError):
        Incident("meteor_strike", 0, 10)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        _gen(rate=0.0)


# --------------------------------------------------------------------------- incidents


def _split(events: list[dict[str, Any]], t0_s: float, t1_s: float) -> tuple[list[Any], list[Any]]:
    inside = [e for e in events if START + t0_s * 1000 <= e["timestamp"] < START + t1_s * 1000]
    outside = [e for e in events if not START + t0_s * 1000 <= e["timestamp"] < START + t1_s * 1000]
    return inside, outside


def _median_latency(events: list[dict[str, Any]]) -> float:
    return float(statistics.median(e["latency_ms"] for e in events if e["status"] == "ok"))


def test_latency_regression_multiplies_matching_latency() -> None:
    incident = Incident("latency_regression", 60, 60, model="gpt-4o-mini", magnitude=3.0)
    events = list(_gen(2, rate=100.0, incidents=[incident]).events_between(START, START + 180_000))
    inside, outside = _split(events, 60, 120)
    mini_in = [e for e in inside if e["model"] == "gpt-4o-mini"]
    mini_out = [e for e in outside if e["model"] == "gpt-4o-mini"]
    ratio = _median_latency(mini_in) / _median_latency(mini_out)
    assert 2.5 < ratio < 3.6, ratio
    others_in = [e for e in inside if e["model"] != "gpt-4o-mini"]
    others_out = [e for e in outside if e["model"] != "gpt-4o-mini"]
    assert 0.85 < _median_latency(others_in) / _median_latency(others_out) < 1.15
    # Only the incident window differs from the same traffic without it.
    calm = list(_gen(2, rate=100.0).events_between(START, START + 180_000))
    assert [e["event_id"] for e in calm] == [e["event_id"] for e in events]
    assert [e for e in calm if e["timestamp"] < START + 60_000] == [
        e for e in events if e["timestamp"] < START + 60_000
    ]


def test_error_burst_sets_error_probability() -> None:
    incident = Incident("error_burst", 30, 60, service="search", magnitude=0.4)
    events = list(_gen(4, rate=150.0, incidents=[incident]).events_between(START, START + 120_000))
    inside, outside = _split(events, 30, 90)

    def error_share(sample: list[dict[str, Any]]) -> float:
        return float(sum(e["status"] == "error" for e in sample)) / len(sample)

    assert 0.33 < error_share([e for e in inside if e["service"] == "search"]) < 0.47
    assert error_share([e for e in inside if e["service"] != "search"]) < 0.02
    assert error_share(outside) < 0.02
    for e in inside:
        if e["status"] == "error":
            assert e["error_type"] and "output_tokens" not in e and "finish_reason" not in e


def test_cost_spike_multiplies_output_tokens() -> None:
    incident = Incident("cost_spike", 0, 60, endpoint="/v1/chat", magnitude=4.0)
    events = list(_gen(8, rate=150.0, incidents=[incident]).events_between(START, START + 120_000))
    inside, outside = _split(events, 0, 60)

    def median_out(sample: list[dict[str, Any]]) -> float:
        return float(
            statistics.median(
                e["output_tokens"]
                for e in sample
                if e["endpoint"] == "/v1/chat" and "output_tokens" in e
            )
        )

    assert 3.0 < median_out(inside) / median_out(outside) < 5.0
    unaffected_in = [e for e in inside if e["endpoint"] != "/v1/chat" and "input_tokens" in e]
    unaffected_out = [e for e in outside if e["endpoint"] != "/v1/chat" and "input_tokens" in e]
    ratio = statistics.median(e["output_tokens"] for e in unaffected_in) / statistics.median(
        e["output_tokens"] for e in unaffected_out
    )
    assert 0.85 < ratio < 1.15


def _drift_share(sample: list[dict[str, Any]], topic: str) -> float:
    drift_words = set(VOCABULARIES[topic])
    baseline_words = {w for t in BASELINE_TOPICS for w in VOCABULARIES[t]}
    hits = 0
    for e in sample:
        words = {w.strip("?.,:") for w in e["prompt"].split()}
        if words & drift_words:
            assert not words & baseline_words  # one topic per prompt
            hits += 1
    return hits / len(sample)


def test_prompt_drift_shifts_topic_mix_and_embeddings() -> None:
    incident = Incident("prompt_drift", 60, 60, magnitude=0.5)
    config = TrafficConfig(embeddings=True)
    gen = _gen(12, rate=80.0, config=config, incidents=[incident])
    events = list(gen.events_between(START, START + 120_000))
    before, during = _split(events, 0, 60)[0], _split(events, 60, 120)[0]
    assert _drift_share(before, "crypto") == 0.0
    assert 0.43 < _drift_share(during, "crypto") < 0.57

    def centroid(sample: list[dict[str, Any]]) -> list[float]:
        dim = len(sample[0]["prompt_embedding"])
        return [statistics.fmean(e["prompt_embedding"][i] for e in sample) for i in range(dim)]

    half = len(before) // 2
    c1, c2, c3 = centroid(before[:half]), centroid(before[half:]), centroid(during)
    assert math.dist(c1, c3) > 5 * math.dist(c1, c2)
    # Quality drops on the unseen topic.
    rel_before = statistics.fmean(e["scores"]["relevance"] for e in before if "scores" in e)
    rel_during = statistics.fmean(e["scores"]["relevance"] for e in during if "scores" in e)
    assert rel_during < rel_before - 0.1


def test_prompt_drift_to_other_topic() -> None:
    incident = Incident("prompt_drift", 0, 30, magnitude=1.0, topic="medical")
    during = list(_gen(1, incidents=[incident]).events_between(START, START + 30_000))
    assert _drift_share(during, "medical") == 1.0


# --------------------------------------------------------------------------- malformed input


def test_malformed_events_are_distinct_and_invalid() -> None:
    cases = malformed_cases(300, seed=4)
    raws = [raw for _, raw in cases]
    assert len(raws) == len(set(raws)) == 300
    for label, raw in cases:
        assert contract_problem(raw) is not None, (label, raw[:200])
    labels = {label for label, _ in cases}
    assert {"not_json", "json_array", "missing_latency_ms", "latency_negative"} <= labels
    assert {"timestamp_without_zone", "schema_version_unknown", "embedding_nan_literal"} <= labels
    assert any(len(raw) > 100_000 for raw in raws)  # huge strings
    assert malformed_events(300, seed=4) == raws
    assert malformed_events(300, seed=5) != raws


def test_project_validator_agrees() -> None:
    """The pipeline's own validator rejects every malformed message and accepts the traffic."""
    for _label, raw in malformed_cases(120, seed=8):
        with pytest.raises(ValidationError):
            validate_raw(raw)
    config = TrafficConfig(embeddings=True)
    for e in _gen(8, rate=100.0, config=config).events(3000):
        validate_raw(orjson.dumps(e))


def test_malformed_corpus_still_resolves_from_traffic() -> None:
    """The demo command imports the corpus from the traffic module, where it used to live."""
    from llmpulse.synth import traffic

    assert traffic.malformed_events is malformed_events
    assert traffic.malformed_cases is malformed_cases
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = traffic.no_such_name


def test_malformed_bases_are_valid() -> None:
    # The mutations start from valid events: the checker accepts what they mutate.
    config = TrafficConfig(embeddings=True, embedding_dim=8, include_text=False)
    for e in _gen(4, config=config).events(200):
        assert contract_problem(orjson.dumps(e)) is None


# --------------------------------------------------------------------------- files


def test_write_jsonl_plain_and_gzip(tmp_path: Path) -> None:
    events = list(_gen().events(50))
    assert write_jsonl(tmp_path / "a.jsonl", events) == 50
    assert write_jsonl(tmp_path / "b.jsonl.gz", iter(events)) == 50
    assert write_jsonl(tmp_path / "c.jsonl", events, gzip=True) == 50
    plain = (tmp_path / "a.jsonl").read_bytes()
    assert [orjson.loads(line) for line in plain.splitlines()] == events
    assert gzip.decompress((tmp_path / "b.jsonl.gz").read_bytes()) == plain
    assert gzip.decompress((tmp_path / "c.jsonl").read_bytes()) == plain
