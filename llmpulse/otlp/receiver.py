"""The OTLP/HTTP receiver for ``POST /v1/traces``, without a web framework.

``OtlpReceiver.export`` takes what the web layer read (body, ``Content-Type``,
``Content-Encoding``) and returns status, body and content type as the OTLP/HTTP
specification asks:

- 200, stored: ``ExportTraceServiceResponse``, with ``partial_success`` (count and
  first reason) when some spans will be rejected;
- 400, not OTLP (bad protobuf, JSON or gzip): a ``google.rpc.Status`` whose
  message names field, rule and value;
- 413, body or decompressed body over ``otlp.max_body_bytes``, or one span over
  ``otlp.max_message_bytes``;
- 415, content type neither protobuf nor JSON, content encoding neither gzip nor
  identity;
- 503, ``produce`` failed (Kafka unreachable): the client retries.

Bodies are encoded like the request (protobuf or JSON); a 415 answers in JSON.
The request is written to ``otlp_spans`` through the injected ``produce`` and
awaited before answering, so a 200 means the spans are in Kafka. It is written in
the configured ``otlp.encoding`` (protobuf when ``auto``), split into messages of
at most ``otlp.max_message_bytes`` (the broker's limit is about 1 MB by default).
A retried request after a 503 is harmless: event ids are made of trace and span
ids, so the pipeline stores each span once.

Spans that are not GenAI operations are accepted and skipped by the consumer;
they are not counted as rejected.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from llmpulse.errors import ValidationError
from llmpulse.otlp.codec import Encoding, SpanTooLarge, parse_request, split_request
from llmpulse.otlp.decode import OtlpDecoder
from llmpulse.processors.batch_validate import validate_batch
from llmpulse.settings import OtlpSettings

Produce = Callable[[bytes], Awaitable[None]]

PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"
_MEDIA: Final[dict[str, Encoding]] = {
    PROTOBUF: "otlp_proto",
    "application/protobuf": "otlp_proto",  # sent by some clients; same bytes
    JSON: "otlp_json",
}
# google.rpc.Code values for the Status body.
_CODE: Final[dict[int, int]] = {400: 3, 413: 8, 415: 3, 503: 14}  # INVALID_ARGUMENT, ...
SOURCE: Final = "http:/v1/traces"


@dataclass(frozen=True, slots=True)
class OtlpHttpResponse:
    status: int
    body: bytes
    content_type: str
    # Produced messages and how many spans the answer reports as rejected.
    messages: int = 0
    rejected_spans: int = 0


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


class _TooLarge(Exception):
    pass


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body (one or more members), refusing to produce more than
    ``limit`` bytes: a small body can inflate a thousandfold."""
    out = bytearray()
    rest = body
    while True:
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        out += d.decompress(rest, limit + 1 - len(out))
        if len(out) > limit:
            raise _TooLarge
        if not d.eof:
            raise zlib.error("truncated gzip stream")
        rest = d.unused_data
        if not rest:
            return bytes(out)


def _encode(message: Message, content_type: str) -> bytes:
    if content_type == JSON:
        return json_format.MessageToJson(message, indent=None).encode()
    return message.SerializeToString()


class OtlpReceiver:
    """Holds the settings, the decoder and the ``produce`` callable of one worker."""

    def __init__(self, settings: OtlpSettings, produce: Produce) -> None:
        self.settings = settings
        self.produce = produce
        # Only counts usable spans; content is not needed for that.
        self.decoder = OtlpDecoder(settings, store_text=False)

    def _status(self, status: int, message: str, content_type: str) -> OtlpHttpResponse:
        body = _encode(Status(code=_CODE.get(status, 2), message=message), content_type)
        return OtlpHttpResponse(status, body, content_type)

    def too_large(self, content_type: str | None, size: int | None = None) -> OtlpHttpResponse:
        """The 413 answer, for a web layer that stopped reading a body past the limit."""
        media = media_type(content_type)
        media = media if media in _MEDIA else JSON
        limit = self.settings.max_body_bytes
        shown = f"{size} bytes" if size is not None else "larger"
        return self._status(413, f"body is {shown}, the limit is {limit}", media)

    async def export(
        self, body: bytes, content_type: str | None, content_encoding: str | None = None
    ) -> OtlpHttpResponse:
        media = media_type(content_type)
        encoding = _MEDIA.get(media)
        if encoding is None:
            return self._status(
                415, f"Content-Type must be {PROTOBUF} or {JSON}, got {media or 'none'!r}", JSON
            )
        limit = self.settings.max_body_bytes
        if len(body) > limit:
            return self.too_large(content_type, len(body))
        coding = (content_encoding or "identity").strip().lower()
        if coding in ("gzip", "x-gzip"):
            try:
                body = gunzip(body, limit)
            except _TooLarge:
                return self._status(413, f"decompressed body exceeds {limit} bytes", media)
            except zlib.error as exc:
                return self._status(400, f"Content-Encoding gzip: body is not gzip ({exc})", media)
        elif coding != "identity":
            return self._status(
                415, f"Content-Encoding must be gzip or identity, got {coding!r}", media
            )

        try:
            request = parse_request(body, encoding)
        except ValidationError as error:
            return self._status(400, error.reason, media)
        decoded = self.decoder.decode_request(request, SOURCE, encoding)
        problems = [r.reason for r in decoded.rejections]
        if decoded.events:
            checked = validate_batch([v for v, _ in decoded.events])
            problems += [str(err) for _, err in checked.rejected]

        out_encoding: Encoding = (
            "otlp_proto" if self.settings.encoding == "auto" else self.settings.encoding
        )
        messages = 0
        if decoded.spans:
            try:
                payloads = split_request(request, self.settings.max_message_bytes, out_encoding)
            except SpanTooLarge as exc:
                return self._status(413, str(exc), media)
            for payload in payloads:
                try:
                    await self.produce(payload)
                except Exception as exc:  # any failure of the log means "not durable"
                    return self._status(503, f"could not write to Kafka, retry: {exc!r}", media)
                messages += 1

        response = ExportTraceServiceResponse()
        if problems:
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(
                    rejected_spans=len(problems),
                    error_message=f"{len(problems)} span(s) rejected; first: {problems[0]}",
                )
            )
        return OtlpHttpResponse(200, _encode(response, media), media, messages, len(problems))


async def receive_traces(
    body: bytes,
    content_type: str | None,
    content_encoding: str | None,
    *,
    produce: Produce,
    settings: OtlpSettings,
) -> OtlpHttpResponse:
    """``OtlpReceiver(settings, produce).export(...)`` for one-off use."""
    return await OtlpReceiver(settings, produce).export(body, content_type, content_encoding)


__all__ = [
    "JSON",
    "PROTOBUF",
    "OtlpHttpResponse",
    "OtlpReceiver",
    "Produce",
    "gunzip",
    "media_type",
    "receive_traces",
]
