"""One OTLP span -> one trace event (a plain dict of the v1 contract), following
the OpenTelemetry GenAI semantic conventions, with the older names still sent by
popular instrumentations as fallbacks.

Pure: no I/O, no clock. The event is not validated here; the caller serialises
it and the batch validator judges it like any JSON event, so a span with, say,
negative token counts is rejected with the usual ``field: rule, got value``.
What the event cannot express (ids of the wrong length) is checked here.

>>> from opentelemetry.proto.trace.v1.trace_pb2 import Span
>>> from opentelemetry.proto.common.v1.common_pb2 import KeyValue, AnyValue
>>> def kv(k, **v): return KeyValue(key=k, value=AnyValue(**v))
>>> span = Span(trace_id=b"\\x01" * 16, span_id=b"\\x02" * 8, name="chat gpt-4o",
...     start_time_unix_nano=1_767_225_600_000_000_000,
...     end_time_unix_nano=1_767_225_600_812_500_000,
...     attributes=[kv("gen_ai.operation.name", string_value="chat"),
...                 kv("gen_ai.request.model", string_value="gpt-4o"),
...                 kv("gen_ai.usage.prompt_tokens", int_value=12)])
>>> rules = MappingRules.build([("tenant", ["app.tenant_id"])], [])
>>> e = span_event(span, Origin.of({"service.name": AnyValue(string_value="chat-api")}, ""),
...                rules, store_text=False)
>>> e["service"], e["model"], e["operation"], e["latency_ms"], e["input_tokens"]
('chat-api', 'gpt-4o', 'chat', 812.5, 12)
>>> e["event_id"] == "01" * 16 + "-" + "02" * 8
True
>>> span_event(Span(name="GET /"), Origin.of({}, ""), rules, store_text=False) is None
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from llmpulse.errors import FieldProblem, ValidationError
from llmpulse.schemas.event import SCHEMA_VERSION, TOKEN_FIELDS

Attrs = Mapping[str, AnyValue]

# A span is a GenAI operation when it carries one of these (current names first).
GENAI_MARKERS: Final = frozenset(
    {
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "gen_ai.system",  # before gen_ai.provider.name
        "llm.request.type",  # OpenLLMetry before gen_ai.operation.name
        "llm.vendor",  # OpenLLMetry, earliest releases
        "llm.request.model",  # OpenLLMetry, earliest releases
    }
)

# event field -> span attributes, first present wins: the current convention,
# then the older names (see docs/otlp.md, "Older names").
SOURCES: Final[dict[str, tuple[str, ...]]] = {
    "operation": ("gen_ai.operation.name", "llm.request.type"),
    "provider": ("gen_ai.provider.name", "gen_ai.system", "llm.vendor"),
    "model": ("gen_ai.request.model", "llm.request.model"),
    "response_model": ("gen_ai.response.model", "llm.response.model"),
    "input_tokens": (
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.prompt_tokens",
        "llm.usage.prompt_tokens",
    ),
    "output_tokens": (
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.usage.completion_tokens",
    ),
    "cached_input_tokens": (
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
    ),
    "cache_creation_input_tokens": (
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
    ),
    "reasoning_tokens": (
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.usage.reasoning_tokens",
        "llm.usage.reasoning_tokens",
    ),
    "finish_reason": (
        "gen_ai.response.finish_reasons",
        "llm.response.finish_reason",
        "llm.response.stop_reason",
    ),
    "error_type": ("error.type",),
}
# Legacy names whose values were capitalised ("Anthropic"); the convention's are lowercase.
_LEGACY_PROVIDER: Final = frozenset({"gen_ai.system", "llm.vendor"})
# OpenLLMetry's llm.request.type values -> gen_ai.operation.name values.
LEGACY_OPERATIONS: Final[dict[str, str]] = {
    "completion": "text_completion",
    "embedding": "embeddings",
}

# Time to first token: (attribute, seconds per unit), first present wins.
TTFT_ATTRIBUTES: Final[tuple[tuple[str, float], ...]] = (
    ("gen_ai.response.time_to_first_chunk", 1000.0),  # seconds (current convention)
    ("gen_ai.server.time_to_first_token", 1000.0),  # seconds (OpenLIT)
    ("ai.response.msToFirstChunk", 1.0),  # milliseconds (Vercel AI SDK)
)
# Span events that mark the first streamed chunk: their time minus the span start.
TTFT_EVENTS: Final = frozenset(
    {
        "ai.stream.firstChunk",  # Vercel AI SDK
        "llm.content.completion.chunk",  # OpenLLMetry, one per chunk: the first counts
        "gen_ai.content.completion.chunk",
    }
)

_VERCEL_TTFT: Final = ("ai.response.msToFirstChunk", "ai.stream.msToFirstChunk")

# Attributes kept in the event's ``attributes`` map under their own names.
KEPT_ATTRIBUTES: Final = (
    "gen_ai.conversation.id",
    "gen_ai.agent.name",
    "gen_ai.agent.id",
    "gen_ai.agent.version",
    "gen_ai.tool.name",
    "gen_ai.tool.call.id",
    "gen_ai.tool.type",
    "gen_ai.workflow.name",
    "gen_ai.data_source.id",
    "gen_ai.response.id",
    "server.address",
    "server.port",
)
SPAN_NAME_KEY: Final = "otel.span.name"
SCOPE_NAME_KEY: Final = "otel.scope.name"

# Operations that call no model: without a model attribute their event's model
# names what ran instead, so each tool and agent is its own series.
_NAMED_BY: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "execute_tool": ("tool", ("gen_ai.tool.name",)),
    "invoke_agent": ("agent", ("gen_ai.agent.name", "gen_ai.agent.id")),
    "create_agent": ("agent", ("gen_ai.agent.name", "gen_ai.agent.id")),
    "invoke_workflow": ("workflow", ("gen_ai.workflow.name",)),
}
UNKNOWN_MODEL: Final = "unknown"
UNKNOWN_SERVICE: Final = "unknown_service"  # the SDKs' default when service.name is unset
OTHER_ERROR: Final = "_OTHER"  # the convention's error.type when no better one is known

# Content: attributes holding structured messages (current convention) ...
INPUT_MESSAGES: Final = "gen_ai.input.messages"
OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
DETAILS_EVENT: Final = "gen_ai.client.inference.operation.details"
# ... span events of semantic conventions up to 1.27 (and OpenLIT) ...
LEGACY_CONTENT_EVENTS: Final = {
    "prompt": ("gen_ai.content.prompt", "gen_ai.prompt"),
    "response": ("gen_ai.content.completion", "gen_ai.completion"),
}
# ... and OpenLLMetry's indexed attributes (gen_ai.prompt.0.content, ...).
INDEXED_CONTENT: Final = {
    "prompt": ("gen_ai.prompt.", "llm.prompts."),
    "response": ("gen_ai.completion.", "llm.completions."),
}
TOOL_CONTENT: Final = {
    "prompt": "gen_ai.tool.call.arguments",
    "response": "gen_ai.tool.call.result",
}


def value_of(v: AnyValue) -> Any:
    """An ``AnyValue`` as plain JSON-able Python (bytes as hex)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "array_value":
        return [value_of(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return None


def as_label(value: Any) -> str:
    """A value as the string a label or an ``attributes`` entry holds."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def attr_map(pairs: Iterable[KeyValue]) -> dict[str, AnyValue]:
    # A repeated key is a producer bug; the last one wins, as in the SDKs' maps.
    return {kv.key: kv.value for kv in pairs}


@dataclass(frozen=True, slots=True)
class Origin:
    """What a span inherits from its resource and scope."""

    service: str
    resource: Attrs
    scope_name: str
    scope: Attrs

    @classmethod
    def of(cls, resource: Attrs, scope_name: str, scope: Attrs | None = None) -> Origin:
        name = resource.get("service.name")
        service = as_label(value_of(name)) if name is not None else ""
        return cls(service or UNKNOWN_SERVICE, resource, scope_name, scope or {})


@dataclass(frozen=True, slots=True)
class MappingRules:
    """The configurable part of the mapping, prepared once (see ``OtlpSettings``)."""

    mappings: tuple[tuple[str, tuple[str, ...]], ...]
    copy_attributes: tuple[str, ...]

    @classmethod
    def build(
        cls, mappings: Iterable[tuple[str, Sequence[str]]], copy: Sequence[str]
    ) -> MappingRules:
        return cls(
            tuple((field, tuple(keys)) for field, keys in mappings if keys),
            tuple(dict.fromkeys((*KEPT_ATTRIBUTES, *copy))),
        )


def _lookup(key: str, span: Attrs, origin: Origin) -> AnyValue | None:
    """Span attributes first, then the scope's, then the resource's."""
    v = span.get(key)
    if v is None:
        v = origin.scope.get(key)
    if v is None:
        v = origin.resource.get(key)
    return v


def _first(attrs: Attrs, keys: Iterable[str]) -> tuple[str, Any] | None:
    for key in keys:
        v = attrs.get(key)
        if v is not None and v.WhichOneof("value") is not None:
            return key, value_of(v)
    return None


def is_genai(attrs: Attrs) -> bool:
    return not GENAI_MARKERS.isdisjoint(attrs)


def is_genai_keys(keys: Iterable[str]) -> bool:
    """``is_genai`` on attribute keys alone (a span not yet parsed)."""
    return not GENAI_MARKERS.isdisjoint(keys)


def _tokens(value: Any) -> Any:
    """Token counts as integers; anything else is passed on for the validator to name."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return repr(value)  # JSON has no NaN: as text the validator can show it
        return int(value) if value.is_integer() else value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _check_id(field: str, raw: bytes, size: int, *, optional: bool = False) -> str:
    if optional and not raw:
        return ""
    if len(raw) != size or not any(raw):
        rule = f"must be {size} bytes ({2 * size} hex digits), not all zero"
        raise ValidationError([FieldProblem(field, rule, raw.hex())])
    return raw.hex()


def _ttft_ms(span: Span, attrs: Attrs) -> float | str | None:
    for key, ms_per_unit in TTFT_ATTRIBUTES:
        v = attrs.get(key)
        if v is not None:
            n = _number(value_of(v))
            if n is not None:
                return n * ms_per_unit if math.isfinite(n) else repr(n)
    first: int | None = None
    for ev in span.events:
        if ev.name in TTFT_EVENTS:
            if ev.name == "ai.stream.firstChunk":
                found = _first(attr_map(ev.attributes), _VERCEL_TTFT)
                n = _number(found[1]) if found else None
                if n is not None:
                    return n if math.isfinite(n) else repr(n)
            if ev.time_unix_nano and (first is None or ev.time_unix_nano < first):
                first = ev.time_unix_nano
    if first is None or first < span.start_time_unix_nano:
        return None  # an event before the span started is clock skew, not a TTFT
    return (first - span.start_time_unix_nano) / 1e6


def _status(span: Span, attrs: Attrs) -> tuple[str, str]:
    error = _first(attrs, SOURCES["error_type"])
    failed = span.status.code == Status.STATUS_CODE_ERROR
    if error is not None:
        return "error", as_label(error[1]) or OTHER_ERROR
    if not failed:
        return "ok", ""
    for ev in span.events:
        if ev.name == "exception":
            exc = _first(attr_map(ev.attributes), ("exception.type",))
            if exc is not None and as_label(exc[1]):
                return "error", as_label(exc[1])
    return "error", OTHER_ERROR


def _finish_reason(value: Any) -> str:
    if isinstance(value, list):
        # One reason per choice; a repeated reason says nothing more.
        return ",".join(dict.fromkeys(as_label(v) for v in value))
    return as_label(value)


def _model(attrs: Attrs, operation: str) -> str:
    for key in (*SOURCES["model"], *SOURCES["response_model"]):
        found = _first(attrs, (key,))
        if found is not None and as_label(found[1]):
            return as_label(found[1])
    named = _NAMED_BY.get(operation)
    if named is None:
        return UNKNOWN_MODEL
    prefix, keys = named
    name = _first(attrs, keys)
    return f"{prefix}:{as_label(name[1]) if name else UNKNOWN_MODEL}"


# -- content ------------------------------------------------------------------


def _texts(messages: Any) -> list[str]:
    """The text of GenAI messages in any of the shapes instrumentations send:
    ``[{"role", "parts": [{"type": "text", "content"}]}]`` (current),
    ``[{"role", "content"}]`` (older), or a plain string."""
    if isinstance(messages, str):
        try:
            parsed = orjson.loads(messages)
        except orjson.JSONDecodeError:
            return [messages] if messages else []
        if isinstance(parsed, str):
            return [parsed] if parsed else []
        return _texts(parsed) if isinstance(parsed, list | dict) else [messages]
    if isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list):
        return []
    out: list[str] = []
    for m in messages:
        if isinstance(m, str):
            out.append(m)
        elif isinstance(m, dict):
            parts = m.get("parts")
            if isinstance(parts, list):
                out.extend(
                    p["content"]
                    for p in parts
                    if isinstance(p, dict)
                    and p.get("type", "text") == "text"
                    and isinstance(p.get("content"), str)
                )
            elif isinstance(m.get("content"), str):
                out.append(m["content"])
            elif isinstance(m.get("message"), dict):  # the older gen_ai.choice event body
                out.extend(_texts([m["message"]]))
    return [t for t in out if t]


def _indexed(attrs: Attrs, prefixes: Sequence[str]) -> list[str]:
    """OpenLLMetry's ``gen_ai.prompt.<i>.content`` attributes, in index order."""
    for prefix in prefixes:
        found: list[tuple[int, str]] = []
        for key, v in attrs.items():
            if key.startswith(prefix) and key.endswith(".content"):
                index = key[len(prefix) : -len(".content")]
                if index.isdigit():
                    found.extend((int(index), t) for t in _texts(value_of(v)))
        if found:
            return [t for _, t in sorted(found, key=lambda x: x[0])]
    return []


def _content(span: Span, attrs: Attrs, which: str) -> str | None:
    key = INPUT_MESSAGES if which == "prompt" else OUTPUT_MESSAGES
    texts: list[str] = []
    if key in attrs:
        texts = _texts(value_of(attrs[key]))
    if not texts:
        event_name, event_key = LEGACY_CONTENT_EVENTS[which]
        for ev in span.events:
            if ev.name in (DETAILS_EVENT, event_name):
                ev_attrs = attr_map(ev.attributes)
                for k in (key, event_key):
                    if k in ev_attrs:
                        texts = _texts(value_of(ev_attrs[k]))
                        break
            if texts:
                break
    if not texts:
        texts = _indexed(attrs, INDEXED_CONTENT[which])
    if not texts and TOOL_CONTENT[which] in attrs:
        texts = [as_label(value_of(attrs[TOOL_CONTENT[which]]))]
    return "\n".join(texts) if texts else None


# -- the span -----------------------------------------------------------------


def span_event(
    span: Span, origin: Origin, rules: MappingRules, *, store_text: bool
) -> dict[str, Any] | None:
    """The trace event of a GenAI span, or None for any other span.

    Raises ``ValidationError`` when the span's ids are malformed (the event id is
    made of them, so such a span cannot be stored or deduplicated).
    """
    attrs = attr_map(span.attributes)
    if not is_genai(attrs):
        return None
    trace_id = _check_id("trace_id", span.trace_id, 16)
    span_id = _check_id("span_id", span.span_id, 8)
    parent = _check_id("parent_span_id", span.parent_span_id, 8, optional=True)

    found = _first(attrs, SOURCES["operation"])
    operation = as_label(found[1]) if found else ""
    if found and found[0] == "llm.request.type":
        operation = LEGACY_OPERATIONS.get(operation, operation)
    status, error_type = _status(span, attrs)
    event: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        # Stable across redeliveries and across both entrances (Kafka, HTTP).
        "event_id": f"{trace_id}-{span_id}",
        "timestamp": span.start_time_unix_nano // 1_000_000,
        "service": origin.service,
        "model": _model(attrs, operation),
        "latency_ms": (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6,
        "operation": operation,
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "status": status,
        "error_type": error_type,
    }
    provider = _first(attrs, SOURCES["provider"])
    if provider is not None:
        name = as_label(provider[1])
        event["provider"] = name.lower() if provider[0] in _LEGACY_PROVIDER else name
    response_model = _first(attrs, SOURCES["response_model"])
    if response_model is not None:
        event["response_model"] = as_label(response_model[1])
    finish = _first(attrs, SOURCES["finish_reason"])
    if finish is not None:
        event["finish_reason"] = _finish_reason(finish[1])
    for field in TOKEN_FIELDS:
        tokens = _first(attrs, SOURCES[field])
        if tokens is not None:
            event[field] = _tokens(tokens[1])
    ttft = _ttft_ms(span, attrs)
    if ttft is not None:
        event["ttft_ms"] = ttft

    for field, keys in rules.mappings:
        for key in keys:
            v = _lookup(key, attrs, origin)
            if v is not None and v.WhichOneof("value") is not None:
                event[field] = as_label(value_of(v))
                break

    kept: dict[str, str] = {}
    for key in rules.copy_attributes:
        v = _lookup(key, attrs, origin)
        if v is not None and v.WhichOneof("value") is not None:
            kept[key] = as_label(value_of(v))
    if span.name:
        kept[SPAN_NAME_KEY] = span.name
    if origin.scope_name:
        kept[SCOPE_NAME_KEY] = origin.scope_name
    event["attributes"] = kept

    if store_text:
        for which in ("prompt", "response"):
            text = _content(span, attrs, which)
            if text is not None:
                event[which] = text
    return event


__all__ = [
    "GENAI_MARKERS",
    "KEPT_ATTRIBUTES",
    "SOURCES",
    "TTFT_ATTRIBUTES",
    "TTFT_EVENTS",
    "MappingRules",
    "Origin",
    "as_label",
    "attr_map",
    "is_genai",
    "is_genai_keys",
    "span_event",
    "value_of",
]
