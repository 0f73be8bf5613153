"""Hostile and broken input for the ingest fuzz tests: hypothesis strategies, and
a corpus of garbage seen in real pipelines (other systems' JSON, error pages,
encodings, truncations). Every line here must be rejected; none may contain a
newline (a line is one message)."""

from __future__ import annotations

import gzip
import json
from typing import Any

import orjson
from hypothesis import strategies as st

from tests.helpers import BASE_MS, event

_DAY = 86_400_000


def _valid(i: int, **fields: Any) -> dict[str, Any]:
    return event(i, **fields)


def _dumps(d: Any) -> bytes:
    try:
        return orjson.dumps(d)
    except TypeError:  # integers beyond 64 bits
        return json.dumps(d).encode()


def _with(field: str, value: Any) -> bytes:
    return _dumps(_valid(0, **{field: value}))


# Byte strings that are not JSON objects, or JSON objects that break the contract.
invalid_utf8 = st.binary(min_size=1, max_size=120).map(lambda b: b"\xff" + b.replace(b"\n", b" "))
utf8_in_string = st.sampled_from(
    [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]
).map(lambda bad: _dumps(_valid(0)).replace(b'"evt-0"', b'"id' + bad + b'"'))
_ONE = _dumps(_valid(0))
truncated = st.integers(1, len(_ONE) - 1).map(lambda k: _ONE[:k])
deep = st.sampled_from([2000, 100_000]).map(lambda d: b"[" * d + b"]" * d)
deep_in_field = st.sampled_from([50, 1500]).map(
    lambda d: _dumps(_valid(0))[:-1] + b',"attributes":{"a":' + b"[" * d + b"]" * d + b"}}"
)
huge_string = st.sampled_from(["prompt", "service", "event_id", "tenant"]).map(
    lambda f: _with(f, "x" * (2_000_000 if f == "prompt" else 600))
)
huge_array = st.sampled_from(["prompt_embedding", "response_embedding"]).map(
    lambda f: _with(f, [0.5] * 9000)
)
non_finite = st.sampled_from(
    [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999", b"nan", b"inf"]
).map(lambda tok: _dumps(_valid(0))[:-1] + b',"latency_ms":' + tok + b"}")
wrong_types = st.sampled_from(
    [("latency_ms", "fast"), ("latency_ms", None), ("input_tokens", [1]), ("timestamp", {"s": 1}),
     ("event_id", 5), ("scores", [1, 2]), ("attributes", {"k": {"nested": 1}}), ("status", 1),
     ("model", ["gpt"]), ("prompt", {"text": "x"}), ("ttft_ms", True), ("latency_ms", False),
     ("input_tokens", True), ("cost_usd", True)]
).map(lambda fv: _with(*fv))  # fmt: skip
schema_versions = st.sampled_from([2, 0, -1, "1", 1.5, None, 99, True]).map(
    lambda v: _with("schema_version", v)
)
bad_timestamps = st.sampled_from(
    [0, -1, 1, 946_684_799_999, 7_258_118_400_000, 10**15, 10**20, -(10**20),
     "1969-12-31T23:59:59Z", "2250-01-01T00:00:00Z", "2026-01-01T00:00:00", "yesterday",
     BASE_MS / 1000]
).map(lambda ts: _with("timestamp", ts))  # fmt: skip
not_objects = st.sampled_from(
    [b"null", b"true", b"5", b'"a string"', b"[]", b"[{}]", b"{}", b"}", b"{{", b'{"a":1,}']
)

GARBAGE = st.one_of(
    invalid_utf8, utf8_in_string, truncated, deep, deep_in_field, huge_string, huge_array,
    non_finite, wrong_types, schema_versions, bad_timestamps, not_objects,
)  # fmt: skip

# Seen in real pipelines: other systems' messages on the wrong topic, error pages
# captured as bodies, other encodings, log lines, half-written files.
REAL_WORLD: list[bytes] = [
    # an OTLP/JSON export request (valid JSON, not a trace event)
    b'{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":'
    b'{"stringValue":"chat"}}]},"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c",'
    b'"spanId":"eee19b7ec3c1b174","name":"chat gpt-4o","kind":3}]}]}]}',
    # a Kafka Connect envelope around an event
    b'{"schema":{"type":"struct","fields":[]},"payload":' + _dumps(_valid(0)) + b"}",
    # an OpenAI chat completion response body
    b'{"id":"chatcmpl-abc","object":"chat.completion","created":1767225600,"model":"gpt-4o",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hi"}}],'
    b'"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}',
    # an HTML error page from a proxy
    b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1>"
    b"</center><hr><center>nginx</center></body></html>",
    # a Python repr instead of JSON
    b"{'schema_version': 1, 'event_id': 'e1', 'service': 'chat', 'model': 'gpt-4o'}",
    # JSON with a comment and trailing comma (JSON5-ish)
    b'{"schema_version": 1, // v1\t "event_id": "e1",}',
    # UTF-8 BOM, UTF-16, Latin-1
    b"\xef\xbb\xbf" + _dumps(_valid(0)),
    _dumps(_valid(0)).decode().encode("utf-16"),
    b'{"schema_version":1,"event_id":"caf\xe9","service":"s","model":"m","latency_ms":1,'
    b'"timestamp":1767225600000}',
    # a log line and a stack trace line
    b"2026-01-01T00:00:00Z ERROR llm-gateway upstream timeout after 30000ms model=gpt-4o",
    b'Traceback (most recent call last):   File "app.py", line 12, in <module>',
    # CSV, a half-written gzip member, NUL bytes, a lone surrogate escape
    b"event_id,timestamp,service,model,latency_ms",
    gzip.compress(_dumps(_valid(0)))[:20].replace(b"\n", b" "),
    b"\x00" * 64,
    _dumps(_valid(0))[:-1] + b',"service":"\\ud800"}',
    # duplicate keys with a bad last value, numbers as strings from a CSV import
    _dumps(_valid(0))[:-1] + b',"latency_ms":-5}',
    b'{"schema_version":"1","event_id":"e1","timestamp":"1767225600000","service":"chat",'
    b'"model":"gpt-4o","latency_ms":"812.5"}',
    # seconds instead of milliseconds, and microseconds
    _with("timestamp", BASE_MS // 1000),
    _with("timestamp", BASE_MS * 1000),
    # a JSON array of events (a batch where one event was expected)
    b"[" + _dumps(_valid(0)) + b"," + _dumps(_valid(1)) + b"]",
]


def valid_line(prefix: str, i: int, **fields: Any) -> tuple[str, bytes]:
    """A valid event with an id unique to ``prefix``."""
    e = _valid(i, **fields)
    e["event_id"] = f"{prefix}-{i}"
    e["timestamp"] = BASE_MS + (i % 50) * _DAY // 100
    return e["event_id"], _dumps(e)
