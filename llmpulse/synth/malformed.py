"""A corpus of malformed raw messages, each labelled with what is wrong with it.

Every message breaks JSON itself or the v1 event contract beyond any doubt about lax
coercions (no "12" for an int, no booleans, no empty strings). Most cases are built from
a valid event of :class:`~llmpulse.synth.traffic.TrafficGenerator` with one thing broken,
so they repeat distinctly for as many messages as asked; the result is a pure function of
``n`` and ``seed``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from llmpulse.synth.traffic import TrafficConfig, TrafficGenerator

__all__ = ["malformed_cases", "malformed_events"]


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def _with(base: Mapping[str, Any], **changes: Any) -> bytes:
    return _dumps({**base, **changes})


def _without(base: Mapping[str, Any], name: str) -> bytes:
    return _dumps({k: v for k, v in base.items() if k != name})


def _raw_field(base: Mapping[str, Any], name: str, raw: bytes) -> bytes:
    """``base`` with ``name`` set to raw JSON-ish text (NaN, Infinity, 1e999...)."""
    marker = "__raw_placeholder__"
    text = _dumps({**base, name: marker})
    return text.replace(f'"{marker}"'.encode(), raw)


def _embedding(base: Mapping[str, Any]) -> list[float]:
    emb = base.get("prompt_embedding")
    return list(emb) if isinstance(emb, list) else [0.1, 0.2, 0.3, 0.4]


def _missing(name: str) -> Callable[[dict[str, Any], random.Random], bytes]:
    return lambda base, _rng: _without(base, name)


_REQUIRED = ("schema_version", "event_id", "timestamp", "service", "model", "latency_ms")

# Each case: (label, does it depend on the base event (so can repeat distinctly),
# builder). Every output breaks JSON itself or the v1 contract, beyond any doubt
# about lax coercions (no "12" for an int, no booleans, no empty strings).
_Builder = Callable[[dict[str, Any], random.Random], bytes]
_CASES: list[tuple[str, bool, _Builder]] = [
    ("not_json", True, lambda b, r: f"this is not json: {b['event_id']}".encode()),
    ("truncated_json", True, lambda b, r: _dumps(b)[: len(_dumps(b)) // 2]),
    ("json_array", True, lambda b, r: _dumps([b])),
    ("json_number", True, lambda b, r: _dumps(r.randrange(10**9))),
    ("json_double_encoded", True, lambda b, r: _dumps(_dumps(b).decode())),
    ("json_null", False, lambda b, r: b"null"),
    ("empty_message", False, lambda b, r: b""),
    ("empty_object", False, lambda b, r: b"{}"),
    (
        "invalid_utf8",
        True,
        lambda b, r: _dumps(b).replace(b'"service":"', b'"service":"\xff\xfe', 1),
    ),
    ("deep_nesting", True, lambda b, r: _raw_field(b, "attributes", b"[" * 5000 + b"]" * 5000)),
    *[(f"missing_{name}", True, _missing(name)) for name in _REQUIRED],
    ("required_all_null", True, lambda b, r: _with(b, **dict.fromkeys(_REQUIRED))),
    ("schema_version_unknown", True, lambda b, r: _with(b, schema_version=r.choice([0, 2, 3, 99]))),
    ("schema_version_text", True, lambda b, r: _with(b, schema_version="v1")),
    ("event_id_number", True, lambda b, r: _with(b, event_id=r.randrange(1, 10**12))),
    ("latency_negative", True, lambda b, r: _with(b, latency_ms=-round(r.uniform(1, 1000), 3))),
    ("latency_text", True, lambda b, r: _with(b, latency_ms="fast")),
    ("latency_nan_literal", True, lambda b, r: _raw_field(b, "latency_ms", b"NaN")),
    ("latency_infinity_literal", True, lambda b, r: _raw_field(b, "latency_ms", b"Infinity")),
    ("latency_overflow", True, lambda b, r: _raw_field(b, "latency_ms", b"1e999")),
    ("latency_nan_text", True, lambda b, r: _with(b, latency_ms="NaN")),
    ("latency_object", True, lambda b, r: _with(b, latency_ms={"value": b["latency_ms"]})),
    ("ttft_negative", True, lambda b, r: _with(b, ttft_ms=-round(r.uniform(1, 500), 3))),
    ("timestamp_without_zone", True, lambda b, r: _with(b, timestamp="2026-01-01T10:00:00")),
    ("timestamp_garbage", True, lambda b, r: _with(b, timestamp="yesterday")),
    ("timestamp_impossible_date", True, lambda b, r: _with(b, timestamp="2026-02-30T10:00:00Z")),
    ("service_null", True, lambda b, r: _with(b, service=None)),
    ("model_number", True, lambda b, r: _with(b, model=r.randrange(1, 1000))),
    ("model_list", True, lambda b, r: _with(b, model=[b["model"]])),
    ("status_unknown", True, lambda b, r: _with(b, status="maybe")),
    ("input_tokens_negative", True, lambda b, r: _with(b, input_tokens=-r.randrange(1, 500))),
    ("input_tokens_fraction", True, lambda b, r: _with(b, input_tokens=r.randrange(1, 500) + 0.5)),
    ("output_tokens_text", True, lambda b, r: _with(b, output_tokens="many")),
    ("cost_negative", True, lambda b, r: _with(b, cost_usd=-0.01)),
    ("scores_text_value", True, lambda b, r: _with(b, scores={"relevance": "high"})),
    ("scores_list", True, lambda b, r: _with(b, scores=[0.5, 1.0])),
    ("attributes_number_value", True, lambda b, r: _with(b, attributes={"retries": 3})),
    ("attributes_nested", True, lambda b, r: _with(b, attributes={"k": {"nested": "x"}})),
    ("embedding_text", True, lambda b, r: _with(b, prompt_embedding="0.1,0.2,0.3")),
    ("embedding_text_items", True, lambda b, r: _with(b, prompt_embedding=["a", "b"])),
    (
        "embedding_nan_literal",
        True,
        lambda b, r: _raw_field(
            b, "prompt_embedding", _dumps(_embedding(b)).replace(b",", b",NaN,", 1)
        ),
    ),
    (
        "embedding_overflow",
        True,
        lambda b, r: _raw_field(b, "response_embedding", b"[1e999," + _dumps(_embedding(b))[1:]),
    ),
    ("embedding_infinity_text", True, lambda b, r: _with(b, prompt_embedding=[0.1, "Infinity"])),
    ("huge_latency_text", True, lambda b, r: _with(b, latency_ms="x" * 200_000)),
    (
        "huge_timestamp_text",
        True,
        lambda b, r: _with(b, timestamp="2026-01-01T00:00:00" + "9" * 100_000),
    ),
    ("huge_event_id_number", True, lambda b, r: _raw_field(b, "event_id", b"9" * 5000)),
    ("huge_service_label", True, lambda b, r: _with(b, service=b["service"] * 20_000)),
]


def malformed_cases(n: int, *, seed: int) -> list[tuple[str, bytes]]:
    """``n`` distinct invalid raw messages, each with the label of what is wrong.

    The first ``len`` of the catalogue covers every case once; beyond that the
    cases that embed a (different) valid event are repeated.

    >>> cases = malformed_cases(3, seed=1)
    >>> [label for label, _ in cases]
    ['not_json', 'truncated_json', 'json_array']
    """
    if n <= 0:
        return []
    config = TrafficConfig(embeddings=True, embedding_dim=8, include_text=False)
    bases = TrafficGenerator(config, seed=seed, start_ms=1_767_225_600_000, rate_per_s=50.0)
    base_iter = bases.events(10**12)
    rng = random.Random(f"llmpulse-malformed:{seed}")
    seen: set[bytes] = set()
    out: list[tuple[str, bytes]] = []
    round_ = 0
    while len(out) < n:
        for label, repeatable, build in _CASES:
            if round_ > 0 and not repeatable:
                continue
            raw: bytes = build(next(base_iter), rng)
            if raw in seen:
                continue
            seen.add(raw)
            out.append((label, raw))
            if len(out) == n:
                break
        round_ += 1
    return out


def malformed_events(n: int, *, seed: int) -> list[bytes]:
    """``n`` distinct raw messages that break JSON or the event contract.

    >>> raws = malformed_events(60, seed=3)
    >>> len(raws) == len(set(raws)) == 60
    True
    """
    return [raw for _, raw in malformed_cases(n, seed=seed)]
