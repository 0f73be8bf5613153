"""One message of ``otlp_spans`` -> trace events as JSON, skipped spans, rejections.

>>> from llmpulse.settings import OtlpSettings
>>> out = decode_message(b"{not json", "kafka:otlp_spans/0@7", OtlpSettings())
>>> out.events, out.skipped, [(r.source, r.reason) for r in out.rejections]
([], 0, [('kafka:otlp_spans/0@7', "$: must be valid JSON, got '{not json'")])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from llmpulse.errors import FieldProblem, ValidationError
from llmpulse.otlp.codec import ByteCount, Encoding, parse_auto, parse_request, span_json
from llmpulse.otlp.mapping import MappingRules, Origin, attr_map, is_genai_keys, span_event
from llmpulse.processors.traces import RawMessage, Rejection, rejection_id
from llmpulse.settings import OtlpSettings


@dataclass(frozen=True, slots=True)
class OtlpDecoded:
    """What one OTLP payload became.

    ``events``: one ``(event JSON, source)`` per GenAI span, in payload order; the
    source is the message's with ``#<span index>`` appended (the index counts every
    span of the payload, so it is stable across redeliveries).
    ``skipped``: spans that are not GenAI operations (HTTP, DB...), dropped on purpose.
    ``rejections``: the whole payload (undecodable, too large; then nothing else is
    set) or single spans whose ids are malformed; ready for ``rejected_events`` and
    the DLQ like the validator's rejections.
    """

    events: list[tuple[bytes, str]] = field(default_factory=list)
    skipped: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    spans: int = 0
    encoding: Encoding | None = None

    @property
    def rejection(self) -> Rejection | None:
        """The rejection of the whole payload, if it was rejected as a whole."""
        if self.encoding is None and self.rejections:
            return self.rejections[0]
        return None

    def messages(self) -> list[RawMessage]:
        """The events as the ``RawMessage``s the ingest pipeline validates."""
        return [RawMessage(value, source) for value, source in self.events]


def reject(source: str, raw: bytes, error: ValidationError, event_id: str = "") -> Rejection:
    first = error.problems[0]
    return Rejection(
        rejection_id=rejection_id(source, raw),
        raw=raw,
        reason=error.reason,
        category=error.category,
        field=first.field,
        event_id=event_id,
        source=source,
    )


class OtlpDecoder:
    """Decodes OTLP payloads with one set of settings (mappings prepared once)."""

    def __init__(self, settings: OtlpSettings, *, store_text: bool = False) -> None:
        self.settings = settings
        self.store_text = store_text
        self.rules = MappingRules.build(settings.mappings.items(), settings.copy_attributes)

    def decode(self, value: bytes, source: str) -> OtlpDecoded:
        """Never raises for bad input: it becomes a rejection."""
        limit = self.settings.max_body_bytes
        if len(value) > limit:
            error = ValidationError(
                [FieldProblem("$", f"must be at most {limit} bytes", ByteCount(len(value)))]
            )
            return OtlpDecoded(rejections=[reject(source, value, error)])
        configured = self.settings.encoding
        try:
            if configured == "auto":
                request, encoding = parse_auto(value, is_genai_keys)
            else:
                request, encoding = parse_request(value, configured, is_genai_keys), configured
        except ValidationError as error:
            return OtlpDecoded(rejections=[reject(source, value, error)])
        return self.decode_request(request, source, encoding)

    def decode_request(
        self, request: ExportTraceServiceRequest, source: str, encoding: Encoding
    ) -> OtlpDecoded:
        events: list[tuple[bytes, str]] = []
        rejections: list[Rejection] = []
        skipped = 0
        index = 0
        for rs in request.resource_spans:
            resource = attr_map(rs.resource.attributes)
            for ss in rs.scope_spans:
                origin = Origin.of(resource, ss.scope.name, attr_map(ss.scope.attributes))
                for span in ss.spans:
                    where = f"{source}#{index}"
                    index += 1
                    try:
                        event = span_event(span, origin, self.rules, store_text=self.store_text)
                    except ValidationError as error:
                        rejections.append(reject(where, span_json(span), error))
                        continue
                    if event is None:
                        skipped += 1
                        continue
                    # orjson's result keeps a 4 KiB buffer; an exact copy keeps a
                    # payload of many small spans from taking ~40x its size.
                    events.append((bytes(memoryview(orjson.dumps(event))), where))
        return OtlpDecoded(events, skipped, rejections, index, encoding)


def decode_message(
    value: bytes, source: str, settings: OtlpSettings, *, store_text: bool = False
) -> OtlpDecoded:
    """``OtlpDecoder(settings, store_text=...).decode(value, source)`` for one-off use."""
    return OtlpDecoder(settings, store_text=store_text).decode(value, source)


__all__ = ["OtlpDecoded", "OtlpDecoder", "decode_message", "reject"]
