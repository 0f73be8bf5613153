"""OTLP payloads -> trace events: every mapped field, both encodings, old and new
attribute names, skipped and rejected spans, and the batch validator's verdict."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from llmpulse.otlp import OtlpDecoder, decode_message, encode_request, parse_request
from llmpulse.otlp.codec import SpanTooLarge, sniff_encoding, split_request
from llmpulse.processors.batch_validate import validate_batch
from llmpulse.schemas.event import TraceEvent
from llmpulse.settings import OtlpSettings, Settings
from tests.otlp_builders import (
    BASE_NS,
    CHAT_SPAN_TEXT,
    MS,
    Scope,
    agent_run,
    messages_json,
    request,
    span,
)

SOURCE = "kafka:otlp_spans/3@120"
MAPPINGS = {
    "tenant": "app.tenant_id",
    "team": ["app.team"],
    "endpoint": ["app.route", "gen_ai.agent.name"],
    "prompt_version": "app.prompt_version",
    "variant": "app.variant",
}
MS_2026 = BASE_NS // MS
GENAI_ATTR = b'"attributes":[{"key":"gen_ai.operation.name","value":{"stringValue":"chat"}}]'


def otlp_settings(**kw: Any) -> OtlpSettings:
    return OtlpSettings(mappings=MAPPINGS, **kw)


def events_of(out: Any) -> dict[str, dict[str, Any]]:
    return {orjson.loads(v)["span_id"]: orjson.loads(v) for v, _ in out.events}


def sid_hex(n: int) -> str:
    return n.to_bytes(8, "big").hex()


def tid_hex(n: int) -> str:
    return n.to_bytes(16, "big").hex()


@pytest.fixture(params=["otlp_proto", "otlp_json"])
def encoding(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_every_field_of_an_agent_run(encoding: str) -> None:
    payload = encode_request(agent_run(), encoding)  # type: ignore[arg-type]
    out = decode_message(payload, SOURCE, otlp_settings(), store_text=True)
    assert out.encoding == encoding
    assert (out.spans, out.skipped, out.rejections) == (8, 2, [])
    ev = events_of(out)
    assert len(ev) == 6

    chat = ev[sid_hex(2)]
    assert chat == {
        "schema_version": 1,
        "event_id": f"{tid_hex(1)}-{sid_hex(2)}",
        "timestamp": MS_2026 + 10,
        "service": "travel-agent",
        "model": "gpt-4o",
        "response_model": "gpt-4o-2024-08-06",
        "provider": "openai",
        "operation": "chat",
        "latency_ms": 812.5,
        "ttft_ms": 250.0,
        "trace_id": tid_hex(1),
        "span_id": sid_hex(2),
        "parent_span_id": sid_hex(1),
        "status": "ok",
        "error_type": "",
        "tenant": "acme",
        "environment": "prod",
        "prompt_version": "v7",
        "variant": "B",
        **CHAT_SPAN_TEXT,
    }

    agent = ev[sid_hex(1)]
    assert (agent["operation"], agent["model"], agent["parent_span_id"]) == (
        "invoke_agent",
        "agent:planner",
        "",
    )
    assert agent["endpoint"] == "planner"  # endpoint <- gen_ai.agent.name (second source)
    assert agent["attributes"]["gen_ai.agent.id"] == "asst_1"
    assert agent["latency_ms"] == 2000.0

    tool = ev[sid_hex(3)]
    assert (tool["operation"], tool["model"], tool["status"], tool["error_type"]) == (
        "execute_tool",
        "tool:get_weather",
        "error",
        "TimeoutError",
    )
    assert tool["attributes"]["gen_ai.tool.call.id"] == "call_1"
    assert tool["prompt"] == '{"city": "Paris"}'
    assert "response" not in tool

    legacy = ev[sid_hex(10)]
    assert legacy["service"] == "legacy-bot"
    assert legacy["provider"] == "openai"  # gen_ai.system "OpenAI", lowercased
    assert legacy["operation"] == "chat"  # llm.request.type
    assert (legacy["model"], legacy["response_model"]) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    assert (legacy["input_tokens"], legacy["output_tokens"]) == (80, 20)
    assert legacy["cached_input_tokens"] == 64  # OpenLLMetry's cache_read_input_tokens
    assert legacy["finish_reason"] == "stop"  # llm.response.finish_reason
    assert legacy["ttft_ms"] == 120.0  # first llm.content.completion.chunk event
    assert legacy["team"] == "search"  # from the scope's attributes
    assert legacy["environment"] == "staging"  # deployment.environment (older name)
    assert "tenant" not in legacy
    assert (legacy["prompt"], legacy["response"]) == ("first\nsecond", "answer")

    oldest = ev[sid_hex(11)]
    assert (oldest["provider"], oldest["model"], oldest["operation"]) == (
        "anthropic",
        "claude-2.1",
        "text_completion",
    )
    assert (oldest["input_tokens"], oldest["output_tokens"]) == (10, 0)
    assert (oldest["status"], oldest["error_type"]) == ("error", "RateLimitError")

    embed = ev[sid_hex(20)]
    assert embed["service"] == "unknown_service"
    assert (embed["operation"], embed["ttft_ms"], embed["input_tokens"]) == ("embeddings", 4.5, 8)
    assert "environment" not in embed


def test_both_encodings_give_the_same_events() -> None:
    s = otlp_settings()
    proto = decode_message(encode_request(agent_run(), "otlp_proto"), SOURCE, s, store_text=True)
    js = decode_message(encode_request(agent_run(), "otlp_json"), SOURCE, s, store_text=True)
    assert proto.events == js.events
    assert proto.skipped == js.skipped == 2


def test_sources_name_each_span_and_are_stable() -> None:
    payload = encode_request(agent_run(), "otlp_proto")
    decoder = OtlpDecoder(otlp_settings())
    first, again = decoder.decode(payload, SOURCE), decoder.decode(payload, SOURCE)
    # Index over every span of the payload, skipped ones included (#3 and #6 are HTTP/DB).
    assert [src for _, src in first.events] == [f"{SOURCE}#{i}" for i in (0, 1, 2, 4, 5, 7)]
    assert first.events == again.events  # a redelivery decodes to the same bytes
    assert [m.source for m in first.messages()] == [src for _, src in first.events]


def test_events_pass_the_batch_validator_and_redeliveries_dedup() -> None:
    out = decode_message(encode_request(agent_run(), "otlp_json"), SOURCE, otlp_settings())
    values = [v for v, _ in out.events]
    sources = [s for _, s in out.events]
    checked = validate_batch(values + values, sources + sources)
    assert checked.rejected == []
    assert checked.duplicates == len(values)
    assert checked.batch.source.tolist() == sources
    assert checked.batch.objects["model"].tolist() == [
        "gpt-4o",
        "agent:planner",
        "tool:get_weather",
        "gpt-4o-mini",
        "claude-2.1",
        "text-embedding-3-small",
    ]
    # The per-event model agrees with the column path.
    for v in values:
        e = TraceEvent.model_validate_json(v)
        assert e.trace_id and e.span_id and e.event_id == f"{e.trace_id}-{e.span_id}"


def test_content_only_with_text_storage() -> None:
    payload = encode_request(agent_run(), "otlp_proto")
    out = decode_message(payload, SOURCE, otlp_settings(), store_text=False)
    for ev in events_of(out).values():
        assert "prompt" not in ev and "response" not in ev


def one_span(**kw: Any) -> ExportTraceServiceRequest:
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m", **kw.pop("attrs", {})}
    return request(({"service.name": "s"}, [Scope("x", [span(1, 1, attrs=attrs, **kw)])]))


def single(req: ExportTraceServiceRequest, **kw: Any) -> dict[str, Any]:
    out = decode_message(encode_request(req, "otlp_proto"), SOURCE, otlp_settings(), **kw)
    assert out.rejections == [] and len(out.events) == 1
    return orjson.loads(out.events[0][0])  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("attrs", "events", "expected"),
    [
        # structured messages as AnyValue (not a JSON string)
        (
            {
                "gen_ai.input.messages": [
                    {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
                    {
                        "role": "user",
                        "parts": [
                            {"type": "text", "content": "hi"},
                            {"type": "image", "uri": "x"},
                        ],
                    },
                ],
                "gen_ai.output.messages": [
                    {"role": "assistant", "parts": [{"type": "text", "content": "hello"}]}
                ],
            },
            [],
            ("be brief\nhi", "hello"),
        ),
        # the current convention's opt-in event
        (
            {},
            [
                (
                    "gen_ai.client.inference.operation.details",
                    1.0,
                    {
                        "gen_ai.input.messages": messages_json(("user", "q?")),
                        "gen_ai.output.messages": messages_json(("assistant", "a!")),
                    },
                )
            ],
            ("q?", "a!"),
        ),
        # semantic conventions <= 1.27 and OpenLIT: span events with JSON or text
        (
            {},
            [
                (
                    "gen_ai.content.prompt",
                    1.0,
                    {"gen_ai.prompt": '[{"role":"user","content":"p"}]'},
                ),
                ("gen_ai.content.completion", 2.0, {"gen_ai.completion": "plain text"}),
            ],
            ("p", "plain text"),
        ),
        # OpenLLMetry's earliest names
        (
            {"llm.prompts.0.content": "old p", "llm.completions.0.content": "old r"},
            [],
            ("old p", "old r"),
        ),
        ({}, [], (None, None)),
    ],
)
def test_content_shapes(
    attrs: dict[str, Any], events: list[Any], expected: tuple[Any, Any]
) -> None:
    ev = single(one_span(attrs=attrs, events=events), store_text=True)
    assert (ev.get("prompt"), ev.get("response")) == expected


@pytest.mark.parametrize(
    ("attrs", "events", "ttft"),
    [
        ({"gen_ai.response.time_to_first_chunk": 0.5}, [], 500.0),
        ({"gen_ai.server.time_to_first_token": 0.125}, [], 125.0),
        ({"ai.response.msToFirstChunk": 42.0}, [], 42.0),
        ({}, [("ai.stream.firstChunk", 30.0, {})], 30.0),
        ({}, [("gen_ai.content.completion.chunk", 7.0, {})], 7.0),
        ({}, [("some.other.event", 7.0, {})], None),
    ],
)
def test_time_to_first_token(attrs: dict[str, Any], events: list[Any], ttft: float | None) -> None:
    assert single(one_span(attrs=attrs, events=events)).get("ttft_ms") == ttft


@pytest.mark.parametrize(
    ("attrs", "error", "events", "status"),
    [
        ({}, False, [], ("ok", "")),
        ({}, True, [], ("error", "_OTHER")),
        ({"error.type": "500"}, False, [], ("error", "500")),
        ({}, True, [("exception", 1.0, {"exception.type": "ValueError"})], ("error", "ValueError")),
    ],
)
def test_status_and_error_type(
    attrs: dict[str, Any], error: bool, events: list[Any], status: tuple[str, str]
) -> None:
    ev = single(one_span(attrs=attrs, error=error, events=events))
    assert (ev["status"], ev["error_type"]) == status


def test_finish_reasons_and_token_coercion() -> None:
    ev = single(
        one_span(
            attrs={
                "gen_ai.response.finish_reasons": ["stop", "length", "stop"],
                "gen_ai.usage.input_tokens": 12.0,
                "gen_ai.usage.output_tokens": "7",
            }
        )
    )
    assert ev["finish_reason"] == "stop,length"
    assert (ev["input_tokens"], ev["output_tokens"]) == (12, 7)


def test_model_fallbacks() -> None:
    base = {"gen_ai.operation.name": "chat"}
    resp = one_span(attrs={**base, "gen_ai.request.model": "", "gen_ai.response.model": "r"})
    assert single(resp)["model"] == "r"
    req = request(({}, [Scope("x", [span(1, 1, attrs={"gen_ai.provider.name": "openai"})])]))
    assert single(req)["model"] == "unknown"
    tool = request(
        ({}, [Scope("x", [span(1, 1, attrs={"gen_ai.operation.name": "execute_tool"})])])
    )
    assert single(tool)["model"] == "tool:unknown"


def test_copy_attributes_and_mapping_precedence() -> None:
    req = request(
        (
            {"service.name": "s", "app.tenant_id": "from-resource", "k8s.pod.name": "pod-1"},
            [
                Scope(
                    "x",
                    [
                        span(
                            1,
                            1,
                            attrs={
                                "gen_ai.operation.name": "chat",
                                "gen_ai.request.model": "m",
                                "app.tenant_id": "from-span",
                                "app.flags": ["a", "b"],
                            },
                        )
                    ],
                )
            ],
        )
    )
    s = otlp_settings(copy_attributes=["k8s.pod.name", "app.flags", "absent"])
    out = decode_message(encode_request(req, "otlp_proto"), SOURCE, s)
    ev = orjson.loads(out.events[0][0])
    assert ev["tenant"] == "from-span"  # span attributes win over the resource's
    assert ev["attributes"]["k8s.pod.name"] == "pod-1"
    assert ev["attributes"]["app.flags"] == '["a","b"]'
    assert "absent" not in ev["attributes"]


def test_default_mappings_can_be_turned_off() -> None:
    s = OtlpSettings(mappings={"environment": []})
    assert s.mappings["environment"] == [] and s.mappings["user_id"] == ["user.id", "enduser.id"]
    out = decode_message(encode_request(agent_run(), "otlp_proto"), SOURCE, s)
    assert all("environment" not in orjson.loads(v) for v, _ in out.events)


def test_settings_section_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMPULSE_OTLP_TOPIC", "spans")
    monkeypatch.setenv("LLMPULSE_OTLP_ENCODING", "otlp_json")
    monkeypatch.setenv("LLMPULSE_OTLP_MAPPINGS", '{"tenant": "app.tenant_id"}')
    monkeypatch.setenv("LLMPULSE_OTLP_MAX_BODY_BYTES", "65536")
    s = Settings().otlp
    assert (s.topic, s.encoding, s.max_body_bytes) == ("spans", "otlp_json", 65536)
    assert s.mappings["tenant"] == ["app.tenant_id"]
    assert s.mappings["environment"]  # defaults kept


def test_non_genai_spans_are_skipped_not_rejected() -> None:
    req = request(
        (
            {"service.name": "web"},
            [
                Scope(
                    "http",
                    [
                        span(1, 1, attrs={"http.request.method": "GET"}),
                        span(1, 2, attrs={"gen_ai.conversation.id": "c"}),  # not an operation
                        span(1, 3, attrs={"db.system.name": "redis"}),
                    ],
                )
            ],
        )
    )
    out = decode_message(encode_request(req, "otlp_proto"), SOURCE, OtlpSettings())
    assert (out.events, out.skipped, out.rejections, out.spans) == ([], 3, [], 3)
    empty = decode_message(b"", SOURCE, OtlpSettings())  # an empty protobuf request
    assert (empty.events, empty.skipped, empty.rejections, empty.spans) == ([], 0, [], 0)


def test_malformed_ids_reject_only_that_span() -> None:
    good = span(1, 1, attrs={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"})
    short_trace = span(2, 2, attrs={"gen_ai.operation.name": "chat"})
    short_trace.trace_id = b"\x01" * 15
    zero_span = span(3, 3, attrs={"gen_ai.operation.name": "chat"})
    zero_span.span_id = b"\x00" * 8
    bad_parent = span(4, 4, attrs={"gen_ai.operation.name": "chat"})
    bad_parent.parent_span_id = b"\x01\x02"
    req = request(({}, [Scope("x", [good, short_trace, zero_span, bad_parent])]))
    out = decode_message(encode_request(req, "otlp_proto"), SOURCE, OtlpSettings())
    assert [s for _, s in out.events] == [f"{SOURCE}#0"]
    assert out.rejection is None  # the payload itself was fine
    got = [(r.source, r.field, r.reason) for r in out.rejections]
    assert got == [
        (
            f"{SOURCE}#1",
            "trace_id",
            f"trace_id: must be 16 bytes (32 hex digits), not all zero, got '{'01' * 15}'",
        ),
        (
            f"{SOURCE}#2",
            "span_id",
            "span_id: must be 8 bytes (16 hex digits), not all zero, got '0000000000000000'",
        ),
        (
            f"{SOURCE}#3",
            "parent_span_id",
            "parent_span_id: must be 8 bytes (16 hex digits), not all zero, got '0102'",
        ),
    ]
    # The raw record is the span in OTLP/JSON, ids in hex, for a human to read.
    raw = orjson.loads(out.rejections[0].raw)
    assert raw["traceId"] == "01" * 15 and raw["name"] == "span"
    assert len({r.rejection_id for r in out.rejections}) == 3


def test_values_breaking_the_contract_are_rejected_by_the_validator() -> None:
    req = one_span(attrs={"gen_ai.usage.input_tokens": -5, "gen_ai.usage.output_tokens": 1.5})
    out = decode_message(encode_request(req, "otlp_proto"), SOURCE, OtlpSettings())
    checked = validate_batch([v for v, _ in out.events], [s for _, s in out.events])
    assert [str(err) for _, err in checked.rejected] == [
        "input_tokens: must be >= 0, got -5; output_tokens: must be a whole number, got 1.5"
    ]
    nan = one_span(attrs={"gen_ai.usage.input_tokens": float("nan")})
    out = decode_message(encode_request(nan, "otlp_proto"), SOURCE, OtlpSettings())
    checked = validate_batch([v for v, _ in out.events])
    assert [str(err) for _, err in checked.rejected] == [
        "input_tokens: must be an integer, got 'nan'"
    ]
    unstarted = one_span()
    unstarted.resource_spans[0].scope_spans[0].spans[0].start_time_unix_nano = 0
    out = decode_message(encode_request(unstarted, "otlp_proto"), SOURCE, OtlpSettings())
    checked = validate_batch([v for v, _ in out.events])
    assert checked.rejected[0][1].category.startswith("timestamp: must be between")


@pytest.mark.parametrize(
    ("payload", "settings", "reason"),
    [
        (b"\x0a\x05abc", {}, "$: must be a protobuf ExportTraceServiceRequest, got 5 bytes"),
        (b"{not json", {}, "$: must be valid JSON, got '{not json'"),
        (
            b"  [1, 2]",
            {"encoding": "otlp_json"},
            "$: must be a JSON object (ExportTraceServiceRequest), got 'list'",
        ),
        (
            b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz",'
            + GENAI_ATTR
            + b"}]}]}]}",
            {},
            "resourceSpans[0].scopeSpans[0].spans[0].traceId: must be a hex string (OTLP/JSON ids), got 'zz'",
        ),
        (
            b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"soon",'
            + GENAI_ATTR
            + b"}]}]}]}",
            {},
            "resourceSpans.scopeSpans.spans.startTimeUnixNano: must be valid OTLP/JSON, got \"invalid literal for int() with base 10: 'soon'\"",
        ),
        (
            b"{}" + b" " * 2000,
            {"max_body_bytes": 1024},
            "$: must be at most 1024 bytes, got 2002 bytes",
        ),
    ],
)
def test_malformed_payloads_are_rejected_with_a_reason(
    payload: bytes, settings: dict[str, Any], reason: str
) -> None:
    out = decode_message(payload, SOURCE, OtlpSettings(**settings))
    assert out.events == [] and out.encoding is None
    assert out.rejection is not None
    r = out.rejection
    assert (r.reason, r.source, r.raw) == (reason, SOURCE, payload)
    assert r.category == reason.split(", got", maxsplit=1)[0]


def test_json_spans_that_are_not_genai_are_not_parsed() -> None:
    # json_format is slow: only GenAI spans are parsed; the others are skipped whatever
    # they hold, at their position.
    doc = (
        b'{"resourceSpans":[{"scopeSpans":[{"spans":['
        b'{"traceId":"zz","startTimeUnixNano":"soon"},'
        b'{"traceId":"' + b"01" * 16 + b'","spanId":"' + b"02" * 8 + b'",'
        b'"startTimeUnixNano":"' + str(BASE_NS).encode() + b'",' + GENAI_ATTR + b"}]}]}]}"
    )
    out = decode_message(doc, SOURCE, OtlpSettings())
    assert (out.skipped, out.rejections, [s for _, s in out.events]) == (1, [], [f"{SOURCE}#1"])


def test_explicit_encoding_overrides_sniffing() -> None:
    payload = encode_request(agent_run(), "otlp_proto")
    forced = decode_message(payload, SOURCE, OtlpSettings(encoding="otlp_json"))
    assert forced.rejection is not None and forced.rejection.field == "$"
    js = encode_request(agent_run(), "otlp_json")
    assert sniff_encoding(b"\xef\xbb\xbf \n" + js) == "otlp_json"
    assert decode_message(b"\xef\xbb\xbf" + js, SOURCE, OtlpSettings()).encoding == "otlp_json"


def test_protobuf_that_opens_like_json_is_still_protobuf() -> None:
    # 0x0A is both protobuf's first tag and a newline; 0x7B ("{") a length of 123.
    sizes = {}
    for n in range(1, 60):
        candidate = request(
            ({}, [Scope("", [span(1, 1, name="", attrs={"gen_ai.request.model": "m" * n})])])
        )
        sizes[candidate.resource_spans[0].ByteSize()] = candidate
    req = sizes[123]
    payload = encode_request(req, "otlp_proto")
    assert payload[:2] == b"\n{"
    out = decode_message(payload, SOURCE, OtlpSettings())
    assert (out.encoding, len(out.events)) == ("otlp_proto", 1)
    js = b"\n " + encode_request(req, "otlp_json")
    assert decode_message(js, SOURCE, OtlpSettings()).encoding == "otlp_json"


def test_json_accepts_proto_field_names_and_ignores_unknown_fields() -> None:
    doc = {
        "resource_spans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]
                },
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "trace_id": "0102030405060708090A0B0C0D0E0F10",  # upper-case hex
                                "span_id": "0102030405060708",
                                "start_time_unix_nano": str(BASE_NS),
                                "endTimeUnixNano": BASE_NS + 5 * MS,  # a number, not a string
                                "kind": 3,
                                "status": {"code": 2},
                                "futureField": {"x": 1},
                                "attributes": [
                                    {
                                        "key": "gen_ai.operation.name",
                                        "value": {"stringValue": "chat"},
                                    },
                                    {"key": "gen_ai.request.model", "value": {"stringValue": "m"}},
                                    {
                                        "key": "gen_ai.usage.input_tokens",
                                        "value": {"intValue": "9"},
                                    },
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    out = decode_message(orjson.dumps(doc), SOURCE, OtlpSettings())
    ev = orjson.loads(out.events[0][0])
    assert ev["trace_id"] == "0102030405060708090a0b0c0d0e0f10"
    assert (ev["service"], ev["latency_ms"], ev["input_tokens"], ev["status"]) == (
        "svc",
        5.0,
        9,
        "error",
    )


def test_codec_round_trip_and_split() -> None:
    req = agent_run()
    for enc in ("otlp_proto", "otlp_json"):
        assert parse_request(encode_request(req, enc), enc) == req  # type: ignore[arg-type]
    js = orjson.loads(encode_request(req, "otlp_json"))
    first = js["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert first["traceId"] == tid_hex(1) and first["kind"] == 3  # hex ids, integer enums
    assert first["startTimeUnixNano"] == str(BASE_NS + 10 * MS)  # int64 as a string
    assert base64.b64encode(bytes.fromhex(first["spanId"]))  # valid hex

    for enc in ("otlp_proto", "otlp_json"):
        limit = len(encode_request(req, enc)) // 3  # type: ignore[arg-type]
        parts = split_request(req, limit, enc)  # type: ignore[arg-type]
        assert len(parts) > 1 and all(len(p) <= limit for p in parts)
        decoded = [parse_request(p, enc) for p in parts]  # type: ignore[arg-type]
        spans = [
            (
                rs.resource.attributes[0].value.string_value if rs.resource.attributes else "",
                ss.scope.name,
                s.span_id,
            )
            for d in decoded
            for rs in d.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        ]
        original = [
            (
                rs.resource.attributes[0].value.string_value if rs.resource.attributes else "",
                ss.scope.name,
                s.span_id,
            )
            for rs in req.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        ]
        assert spans == original  # every span once, in order, under its resource and scope
    whole = req.SerializeToString()
    assert split_request(req, len(whole), "otlp_proto") == [whole]
    with pytest.raises(SpanTooLarge):
        split_request(req, 100, "otlp_proto")


def test_docs_and_example_collector_config_match_the_code() -> None:
    from pathlib import Path

    import yaml

    from llmpulse.otlp.mapping import (
        GENAI_MARKERS,
        KEPT_ATTRIBUTES,
        SOURCES,
        TTFT_ATTRIBUTES,
        TTFT_EVENTS,
    )

    root = Path(__file__).resolve().parents[3]
    doc = (root / "docs" / "otlp.md").read_text()
    names = {
        *GENAI_MARKERS,
        *KEPT_ATTRIBUTES,
        *TTFT_EVENTS,
        *(k for keys in SOURCES.values() for k in keys),
        *(k for k, _ in TTFT_ATTRIBUTES),
    }
    assert sorted(n for n in names if f"`{n}`" not in doc) == []

    config = yaml.safe_load((root / "examples" / "otel-collector.yaml").read_text())
    kafka = config["exporters"]["kafka"]
    assert kafka["traces"]["topic"] == OtlpSettings().topic
    assert kafka["traces"]["encoding"] in ("otlp_proto", "otlp_json")
    assert kafka["producer"]["max_message_bytes"] <= OtlpSettings().max_body_bytes
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"] and pipeline["exporters"] == ["kafka"]
    assert set(pipeline["processors"]) <= set(config["processors"])
