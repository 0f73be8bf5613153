"""OTLP trace payloads <-> ``ExportTraceServiceRequest``, in both encodings.

Decoding uses the generated classes of ``opentelemetry-proto`` for binary
protobuf and protobuf's ``json_format`` for OTLP/JSON. OTLP/JSON differs from
protobuf's canonical JSON in one place that matters here: trace and span ids
are hex strings, not base64 (lowerCamelCase keys, int64 as strings and enums as
integers are all read by ``json_format`` as they are). The ids are therefore
rewritten between the two spellings before parsing and after printing.

Every failure to decode raises ``llmpulse.errors.ValidationError`` naming the
field, the rule and the value; nothing else escapes ``parse_request``.

>>> from opentelemetry.proto.trace.v1.trace_pb2 import Span
>>> req = ExportTraceServiceRequest()
>>> span = req.resource_spans.add().scope_spans.add().spans.add(
...     trace_id=bytes(range(16)), span_id=b"\\x01" * 8, name="chat")
>>> js = encode_request(req, "otlp_json")
>>> js
b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"000102030405060708090a0b0c0d0e0f","spanId":"0101010101010101","name":"chat"}]}]}]}'
>>> sniff_encoding(js), sniff_encoding(req.SerializeToString())
('otlp_json', 'otlp_proto')
>>> parse_auto(b"\\n" + js)[1]
'otlp_json'
>>> parse_request(js, "otlp_json") == req
True
>>> parse_request(b"\\x0a\\x05abc", "otlp_proto")
Traceback (most recent call last):
...
llmpulse.errors.ValidationError: $: must be a protobuf ExportTraceServiceRequest, got 5 bytes
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, Literal

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from llmpulse.errors import MISSING, FieldProblem, ValidationError

Encoding = Literal["otlp_proto", "otlp_json"]
ENCODINGS: Final[tuple[Encoding, ...]] = ("otlp_proto", "otlp_json")

# protobuf's own limit for nested messages (AnyValue lists and maps nest).
_MAX_DEPTH: Final = 100
_ID_KEYS: Final = (
    ("traceId", "trace_id"),
    ("spanId", "span_id"),
    ("parentSpanId", "parent_span_id"),
)
_UTF8_BOM: Final = b"\xef\xbb\xbf"


def problem(field: str, rule: str, value: Any = MISSING) -> ValidationError:
    return ValidationError([FieldProblem(field, rule, value)])


def sniff_encoding(value: bytes) -> Encoding:
    """JSON when the payload opens with ``{`` (after blanks or a BOM), else protobuf.

    A protobuf ``ExportTraceServiceRequest`` starts with byte 0x0A (field 1), which
    is also a newline, so ``\\n{`` may be either; ``parse_auto`` settles it.
    """
    head = value[:64].removeprefix(_UTF8_BOM).lstrip(b" \t\r\n")
    return "otlp_json" if head[:1] == b"{" else "otlp_proto"


# Decides from a span's OTLP/JSON attribute keys whether it is worth parsing.
KeepSpan = Callable[[Iterable[str]], bool]


def parse_auto(
    value: bytes, keep: KeepSpan | None = None
) -> tuple[ExportTraceServiceRequest, Encoding]:
    """Detect the encoding of one payload and decode it.

    A payload that looks like JSON is read as JSON; when that fails and it opens
    with 0x0A it is read as protobuf (such bytes are never valid JSON by accident,
    while JSON bytes can parse as protobuf unknown fields and lose every span).
    """
    encoding = sniff_encoding(value)
    if encoding == "otlp_proto" or value[:1] != b"\n":
        return parse_request(value, encoding, keep), encoding
    try:
        return parse_request(value, "otlp_json", keep), "otlp_json"
    except ValidationError:
        pass
    try:
        return parse_request(value, "otlp_proto"), "otlp_proto"
    except ValidationError:
        return parse_request(value, "otlp_json", keep), "otlp_json"  # raises, naming JSON


def parse_request(
    value: bytes, encoding: Encoding, keep: KeepSpan | None = None
) -> ExportTraceServiceRequest:
    """Decode one payload; raises ``ValidationError`` when it is not valid OTLP.

    ``keep`` (JSON only) sees each span's attribute keys; a span it refuses is
    parsed as an empty ``Span`` in its place (so span positions do not move).
    ``json_format`` is pure Python and slow, while most spans of a trace are
    usually not the ones wanted.
    """
    if encoding == "otlp_proto":
        try:
            return ExportTraceServiceRequest.FromString(value)
        except (ProtobufDecodeError, RecursionError, ValueError) as exc:
            # The reason's rule stays fixed (rejections are counted by it).
            raise problem(
                "$", "must be a protobuf ExportTraceServiceRequest", ByteCount(len(value))
            ) from exc
    return _parse_json(value, keep)


class ByteCount(int):
    """A byte count shown as ``N bytes`` in a rejection reason."""

    def __repr__(self) -> str:
        return f"{int(self)} bytes"


def _short(exc: BaseException, limit: int = 160) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_json(value: bytes, keep: KeepSpan | None) -> ExportTraceServiceRequest:
    try:
        data = orjson.loads(value.removeprefix(_UTF8_BOM))
    except orjson.JSONDecodeError as exc:
        raise problem("$", "must be valid JSON", value[:100].decode("utf-8", "replace")) from exc
    if not isinstance(data, dict):
        raise problem("$", "must be a JSON object (ExportTraceServiceRequest)", type(data).__name__)
    _ids_hex_to_base64(data, keep)
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(
            data, request, ignore_unknown_fields=True, max_recursion_depth=_MAX_DEPTH
        )
    except json_format.ParseError as exc:
        field, detail = _parse_error_path(str(exc))
        raise problem(field, "must be valid OTLP/JSON", detail) from exc
    except (RecursionError, ValueError, TypeError, OverflowError) as exc:
        raise problem("$", "must be valid OTLP/JSON", _short(exc)) from exc
    return request


_FAILED_FIELD: Final = re.compile(r"Failed to parse (\w+) field: ")


def _parse_error_path(message: str) -> tuple[str, str]:
    """``Failed to parse a field: Failed to parse b field: why`` -> ``("a.b", "why")``."""
    path: list[str] = []
    rest = message
    while m := _FAILED_FIELD.match(rest):
        path.append(m.group(1))
        rest = rest[m.end() :]
    return (".".join(path) or "$"), _short(ValueError(rest.rstrip(".")), 120)


def _items(data: Any, *keys: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """The dicts in the list under the first of ``keys`` present (json_format
    accepts both the lowerCamelCase and the proto field name)."""
    if not isinstance(data, dict):
        return
    for key in keys:
        if key in data:
            seq = data[key]
            if isinstance(seq, list):
                yield from ((i, x) for i, x in enumerate(seq) if isinstance(x, dict))
            return


def _attribute_keys(span: dict[str, Any]) -> Iterator[str]:
    attrs = span.get("attributes")
    if isinstance(attrs, list):
        for kv in attrs:
            if isinstance(kv, dict) and isinstance(kv.get("key"), str):
                yield kv["key"]


def _ids_hex_to_base64(data: dict[str, Any], keep: KeepSpan | None = None) -> None:
    for r, rs in _items(data, "resourceSpans", "resource_spans"):
        for s, ss in _items(rs, "scopeSpans", "scope_spans"):
            for k, span in _items(ss, "spans"):
                if keep is not None and not keep(_attribute_keys(span)):
                    span.clear()
                    continue
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{k}]"
                _convert_ids(span, where)
                for n, link in _items(span, "links"):
                    _convert_ids(link, f"{where}.links[{n}]")


def _convert_ids(obj: dict[str, Any], where: str) -> None:
    for camel, snake in _ID_KEYS:
        for key in (camel, snake):
            v = obj.get(key)
            if not isinstance(v, str) or not v:
                continue  # absent, empty, or a wrong type json_format will name
            try:
                raw = bytes.fromhex(v)
            except ValueError:
                raise problem(
                    f"{where}.{camel}", "must be a hex string (OTLP/JSON ids)", v
                ) from None
            obj[key] = base64.b64encode(raw).decode("ascii")


def encode_request(request: ExportTraceServiceRequest, encoding: Encoding) -> bytes:
    """The payload as the Collector's Kafka exporter would write it."""
    if encoding == "otlp_proto":
        return request.SerializeToString()
    data = json_format.MessageToDict(request, use_integers_for_enums=True)
    for _, rs in _items(data, "resourceSpans"):
        for _, ss in _items(rs, "scopeSpans"):
            for _, span in _items(ss, "spans"):
                _ids_base64_to_hex(span)
                for _, link in _items(span, "links"):
                    _ids_base64_to_hex(link)
    return orjson.dumps(data)


def span_json(span: Span) -> bytes:
    """One span in OTLP/JSON, for a readable rejection record."""
    data = json_format.MessageToDict(span, use_integers_for_enums=True)
    _ids_base64_to_hex(data)
    for _, link in _items(data, "links"):
        _ids_base64_to_hex(link)
    return orjson.dumps(data)


def _ids_base64_to_hex(obj: dict[str, Any]) -> None:
    for camel, _ in _ID_KEYS:
        v = obj.get(camel)
        if isinstance(v, str):
            try:
                obj[camel] = base64.b64decode(v, validate=True).hex()
            except binascii.Error:  # json_format printed it, so this cannot happen
                raise ValueError(f"{camel}: not base64: {v!r}") from None


SpanRef = tuple[int, int, Span]


def _span_refs(request: ExportTraceServiceRequest) -> list[SpanRef]:
    return [
        (r, s, span)
        for r, rs in enumerate(request.resource_spans)
        for s, ss in enumerate(rs.scope_spans)
        for span in ss.spans
    ]


def _subset(request: ExportTraceServiceRequest, refs: list[SpanRef]) -> ExportTraceServiceRequest:
    """A request with only ``refs``, each under a copy of its resource and scope."""
    out = ExportTraceServiceRequest()
    current: dict[tuple[int, int], ScopeSpans] = {}
    resources: dict[int, ResourceSpans] = {}
    for r, s, span in refs:
        scope = current.get((r, s))
        if scope is None:
            rs = resources.get(r)
            if rs is None:
                src = request.resource_spans[r]
                rs = out.resource_spans.add(schema_url=src.schema_url)
                rs.resource.CopyFrom(src.resource)
                resources[r] = rs
            src_scope = request.resource_spans[r].scope_spans[s]
            scope = rs.scope_spans.add(schema_url=src_scope.schema_url)
            scope.scope.CopyFrom(src_scope.scope)
            current[(r, s)] = scope
        scope.spans.add().CopyFrom(span)
    return out


class SpanTooLarge(ValueError):
    """One span alone encodes to more than the message limit."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"one span encodes to {size} bytes, more than the limit of {limit}")


def split_request(
    request: ExportTraceServiceRequest,
    limit: int,
    encoding: Encoding,
    encode: Callable[[ExportTraceServiceRequest, Encoding], bytes] = encode_request,
) -> list[bytes]:
    """Encoded messages of at most ``limit`` bytes that together hold every span.

    Halves the span list until each part fits, so the common case (the request
    fits) costs one encoding. Raises ``SpanTooLarge`` for a span that cannot fit.
    """
    whole = encode(request, encoding)
    if len(whole) <= limit:
        return [whole]
    out: list[bytes] = []
    pending = [_span_refs(request)]
    while pending:
        refs = pending.pop()
        payload = encode(_subset(request, refs), encoding)
        if len(payload) <= limit:
            out.append(payload)
        elif len(refs) == 1:
            raise SpanTooLarge(len(payload), limit)
        else:
            mid = len(refs) // 2
            pending.append(refs[mid:])  # popped last: keeps the spans in order
            pending.append(refs[:mid])
    return out


__all__ = [
    "ENCODINGS",
    "ByteCount",
    "Encoding",
    "ExportTraceServiceRequest",
    "SpanTooLarge",
    "encode_request",
    "parse_auto",
    "parse_request",
    "sniff_encoding",
    "span_json",
    "split_request",
]
