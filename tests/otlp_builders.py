"""Real OTLP export requests built with opentelemetry-proto, for the otlp tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

BASE_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
MS = 1_000_000


# What the chat span of agent_run (span 2) carries besides its ids, times and labels:
# the usage, the finish reason, the attributes kept and the text (store_text on).
CHAT_SPAN_TEXT: dict[str, Any] = {
    "finish_reason": "tool_calls",
    "input_tokens": 1200,
    "output_tokens": 300,
    "cached_input_tokens": 1000,
    "cache_creation_input_tokens": 100,
    "reasoning_tokens": 50,
    "attributes": {
        "gen_ai.conversation.id": "conv_42",
        "gen_ai.response.id": "chatcmpl-123",
        "server.address": "api.openai.com",
        "server.port": "443",
        "otel.span.name": "chat gpt-4o",
        "otel.scope.name": "opentelemetry.instrumentation.openai_v2",
    },
    "prompt": "Weather in Paris?",
    "response": "Calling get_weather.",
}


def any_value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, str):
        return AnyValue(string_value=v)
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    if isinstance(v, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(x) for x in v]))
    if isinstance(v, dict):
        return AnyValue(kvlist_value=KeyValueList(values=kvs(v)))
    raise TypeError(type(v))


def kvs(attrs: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attrs.items()]


def tid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def sid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def span(
    trace: int,
    span_id: int,
    *,
    parent: int | None = None,
    name: str = "span",
    start_ms: float = 0.0,
    duration_ms: float = 100.0,
    attrs: Mapping[str, Any] | None = None,
    events: Sequence[tuple[str, float, Mapping[str, Any]]] = (),
    error: bool = False,
    kind: int = Span.SPAN_KIND_CLIENT,
    base_ns: int = BASE_NS,
) -> Span:
    """A span ``start_ms`` after ``base_ns``; events are ``(name, ms after start, attrs)``."""
    start = base_ns + int(start_ms * MS)
    s = Span(
        trace_id=tid(trace),
        span_id=sid(span_id),
        parent_span_id=sid(parent) if parent is not None else b"",
        name=name,
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=start,
        end_time_unix_nano=start + int(duration_ms * MS),
        attributes=kvs(attrs or {}),
    )
    for ev_name, at_ms, ev_attrs in events:
        s.events.add(name=ev_name, time_unix_nano=start + int(at_ms * MS), attributes=kvs(ev_attrs))
    if error:
        s.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="failed"))
    return s


@dataclass
class Scope:
    name: str
    spans: list[Span]
    version: str = "1.0"
    attrs: dict[str, Any] = field(default_factory=dict)


def request(*resources: tuple[Mapping[str, Any], Sequence[Scope]]) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for res_attrs, scopes in resources:
        rs = ResourceSpans(resource=Resource(attributes=kvs(res_attrs)))
        for sc in scopes:
            rs.scope_spans.append(
                ScopeSpans(
                    scope=InstrumentationScope(
                        name=sc.name, version=sc.version, attributes=kvs(sc.attrs)
                    ),
                    spans=sc.spans,
                )
            )
        req.resource_spans.append(rs)
    return req


def messages_json(*messages: tuple[str, str]) -> str:
    """GenAI messages in the current convention's shape, as a JSON string attribute."""
    return orjson.dumps(
        [{"role": role, "parts": [{"type": "text", "content": text}]} for role, text in messages]
    ).decode()


def agent_run(trace: int = 1) -> ExportTraceServiceRequest:
    """A realistic export: an agent run with current attribute names, an OpenLLMetry
    service with the older names, a service without a name, and non-GenAI spans."""
    agent = span(
        trace,
        1,
        name="invoke_agent planner",
        duration_ms=2000,
        kind=Span.SPAN_KIND_INTERNAL,
        attrs={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.provider.name": "openai",
            "gen_ai.agent.name": "planner",
            "gen_ai.agent.id": "asst_1",
            "gen_ai.conversation.id": "conv_42",
        },
    )
    chat = span(
        trace,
        2,
        parent=1,
        name="chat gpt-4o",
        start_ms=10,
        duration_ms=812.5,
        attrs={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.response.id": "chatcmpl-123",
            "gen_ai.response.finish_reasons": ["tool_calls"],
            "gen_ai.response.time_to_first_chunk": 0.25,
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 300,
            "gen_ai.usage.cache_read.input_tokens": 1000,
            "gen_ai.usage.cache_creation.input_tokens": 100,
            "gen_ai.usage.reasoning.output_tokens": 50,
            "gen_ai.conversation.id": "conv_42",
            "server.address": "api.openai.com",
            "server.port": 443,
            "app.prompt_version": "v7",
            "app.variant": "B",
            "gen_ai.input.messages": messages_json(("user", "Weather in Paris?")),
            "gen_ai.output.messages": messages_json(("assistant", "Calling get_weather.")),
        },
    )
    tool = span(
        trace,
        3,
        parent=1,
        name="execute_tool get_weather",
        start_ms=830,
        duration_ms=1000,
        kind=Span.SPAN_KIND_INTERNAL,
        error=True,
        attrs={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "get_weather",
            "gen_ai.tool.call.id": "call_1",
            "gen_ai.tool.type": "function",
            "error.type": "TimeoutError",
            "gen_ai.tool.call.arguments": '{"city": "Paris"}',
        },
    )
    http = span(
        trace,
        4,
        parent=3,
        name="GET",
        start_ms=840,
        duration_ms=990,
        attrs={"http.request.method": "GET", "url.full": "https://weather.example/paris"},
    )
    legacy_chat = span(
        trace + 1000,
        10,
        name="openai.chat",
        duration_ms=400,
        attrs={
            "gen_ai.system": "OpenAI",
            "llm.request.type": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.usage.prompt_tokens": 80,
            "gen_ai.usage.completion_tokens": 20,
            "gen_ai.usage.cache_read_input_tokens": 64,
            "llm.usage.total_tokens": 100,
            "llm.response.finish_reason": "stop",
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": "second",
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "first",
            "gen_ai.completion.0.content": "answer",
        },
        events=[
            ("llm.content.completion.chunk", 120.0, {}),
            ("llm.content.completion.chunk", 130.0, {}),
        ],
    )
    legacy_completion = span(
        trace + 1001,
        11,
        name="anthropic.completion",
        duration_ms=50,
        error=True,
        attrs={
            "llm.vendor": "Anthropic",
            "llm.request.type": "completion",
            "llm.request.model": "claude-2.1",
            "llm.usage.prompt_tokens": 10,
            "llm.usage.completion_tokens": 0,
        },
        events=[("exception", 49.0, {"exception.type": "RateLimitError"})],
    )
    db = span(trace + 1002, 12, name="SELECT", attrs={"db.system.name": "postgresql"})
    embed = span(
        trace + 2000,
        20,
        name="embeddings text-embedding-3-small",
        duration_ms=30,
        attrs={
            "gen_ai.operation.name": "embeddings",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "text-embedding-3-small",
            "gen_ai.usage.input_tokens": 8,
        },
        events=[("ai.stream.firstChunk", 5.0, {"ai.response.msToFirstChunk": 4.5})],
    )
    return request(
        (
            {
                "service.name": "travel-agent",
                "deployment.environment.name": "prod",
                "app.tenant_id": "acme",
            },
            [
                Scope("opentelemetry.instrumentation.openai_v2", [chat]),
                Scope("travel.agent", [agent, tool, http]),
            ],
        ),
        (
            {"service.name": "legacy-bot", "deployment.environment": "staging"},
            [
                Scope(
                    "opentelemetry.instrumentation.openai",
                    [legacy_chat, legacy_completion],
                    attrs={"app.team": "search"},
                ),
                Scope("db", [db]),
            ],
        ),
        ({}, [Scope("embedder", [embed])]),
    )
