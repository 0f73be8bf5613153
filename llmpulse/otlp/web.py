"""``POST /v1/traces`` as a Faust web view over ``OtlpReceiver`` (the worker's web
server is Faust's aiohttp server). Register it with::

    app.page("/v1/traces")(traces_view(OtlpReceiver(settings.otlp, produce)))

The body is read here with the receiver's size limit (aiohttp's own
``client_max_size`` applies only to ``request.read()``), so a large body is
refused with the OTLP answer before it is buffered whole. aiohttp's server
inflates gzip and deflate request bodies itself while they are read, so the
limit applies to the inflated bytes and a gzip bomb stops at the limit.
"""

from __future__ import annotations

from typing import Any

from llmpulse.otlp.receiver import OtlpReceiver

_CHUNK = 64 * 1024
# Neither protobuf (0x1f is wire type 7, which does not exist) nor JSON starts so.
GZIP_MAGIC = b"\x1f\x8b"


async def read_capped(stream: Any, limit: int) -> bytes | None:
    """The whole body of an aiohttp ``StreamReader``, or None past ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    while chunk := await stream.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def traces_view(receiver: OtlpReceiver) -> type:
    from faust.web import Response, View

    class OtlpTraces(View):
        # The aiohttp request (faust's Request type lacks the stream and its length).
        async def post(self, request: Any) -> Response:
            content_type = request.headers.get("Content-Type")
            limit = receiver.settings.max_body_bytes
            declared = request.content_length
            body = None
            if declared is None or declared <= limit:
                body = await read_capped(request.content, limit)
            if body is None:
                # past the limit while reading (chunked, or inflated): size unknown
                over = declared if declared is not None and declared > limit else None
                answer = receiver.too_large(content_type, over)
            else:
                coding = request.headers.get("Content-Encoding")
                if coding and body[:2] != GZIP_MAGIC:
                    coding = None  # inflated by aiohttp already
                answer = await receiver.export(body, content_type, coding)
            return self.bytes(answer.body, content_type=answer.content_type, status=answer.status)

    return OtlpTraces


__all__ = ["read_capped", "traces_view"]
