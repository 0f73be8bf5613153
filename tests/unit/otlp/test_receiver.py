"""The OTLP/HTTP receiver core: status codes and bodies per the OTLP/HTTP spec (its
write to a real Kafka topic: tests/integration/test_otlp_receiver.py)."""

from __future__ import annotations

import gzip
import uuid
from typing import Any

import orjson
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from llmpulse.otlp import OtlpReceiver, encode_request, parse_request
from llmpulse.otlp.receiver import gunzip
from llmpulse.settings import OtlpSettings
from tests.otlp_builders import Scope, agent_run, request, span

PROTO = "application/x-protobuf"
JSON = "application/json"


class Sink:
    """Collects what the receiver produced (the pure tests; Kafka is tested below)."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.values: list[bytes] = []
        self.fail = fail

    async def __call__(self, value: bytes) -> None:
        if self.fail is not None:
            raise self.fail
        self.values.append(value)


def status_of(body: bytes, content_type: str) -> Status:
    if content_type == JSON:
        data = orjson.loads(body)
        return Status(code=data.get("code", 0), message=data.get("message", ""))
    return Status.FromString(body)


async def test_protobuf_request_is_produced_and_answered_200() -> None:
    sink = Sink()
    receiver = OtlpReceiver(OtlpSettings(), sink)
    body = encode_request(agent_run(), "otlp_proto")
    answer = await receiver.export(body, PROTO, None)
    assert (answer.status, answer.content_type, answer.messages) == (200, PROTO, 1)
    response = ExportTraceServiceResponse.FromString(answer.body)
    assert not response.HasField("partial_success")
    assert sink.values == [body]


async def test_json_request_answers_json_and_is_written_as_protobuf() -> None:
    sink = Sink()
    receiver = OtlpReceiver(OtlpSettings(), sink)
    body = encode_request(agent_run(), "otlp_json")
    answer = await receiver.export(body, "application/json; charset=utf-8", "identity")
    assert (answer.status, answer.content_type, orjson.loads(answer.body)) == (200, JSON, {})
    # auto encoding: the topic gets protobuf, like the Collector's default
    assert [parse_request(v, "otlp_proto") for v in sink.values] == [agent_run()]
    # an explicit topic encoding is kept
    sink_json = Sink()
    await OtlpReceiver(OtlpSettings(encoding="otlp_json"), sink_json).export(body, JSON)
    assert sink_json.values == [body]


async def test_gzip_bodies_and_bombs() -> None:
    sink = Sink()
    settings = OtlpSettings(max_body_bytes=64 * 1024)
    receiver = OtlpReceiver(settings, sink)
    body = encode_request(agent_run(), "otlp_proto")
    ok = await receiver.export(gzip.compress(body), PROTO, "gzip")
    assert ok.status == 200 and sink.values == [body]
    # two gzip members are one stream (RFC 1952)
    two = gzip.compress(body[:100]) + gzip.compress(body[100:])
    assert (await receiver.export(two, PROTO, "gzip")).status == 200
    assert sink.values[-1] == body

    bomb = gzip.compress(b"\0" * (10 * 1024 * 1024))
    assert len(bomb) < settings.max_body_bytes
    answer = await receiver.export(bomb, PROTO, "gzip")
    assert answer.status == 413
    assert status_of(answer.body, PROTO).message == f"decompressed body exceeds {64 * 1024} bytes"
    bad = await receiver.export(b"not gzip", PROTO, "gzip")
    assert bad.status == 400 and "not gzip" in status_of(bad.body, PROTO).message
    truncated = await receiver.export(gzip.compress(body)[:-10], PROTO, "gzip")
    assert truncated.status == 400
    assert len(sink.values) == 2  # nothing else was written
    with pytest.raises(Exception, match="truncated"):
        gunzip(gzip.compress(body)[:-10], 1 << 20)


@pytest.mark.parametrize(
    ("body", "content_type", "encoding", "status", "message"),
    [
        (
            b"{}",
            "text/plain",
            None,
            415,
            "Content-Type must be application/x-protobuf or application/json, got 'text/plain'",
        ),
        (
            b"{}",
            None,
            None,
            415,
            "Content-Type must be application/x-protobuf or application/json, got 'none'",
        ),
        (b"{}", JSON, "br", 415, "Content-Encoding must be gzip or identity, got 'br'"),
        (
            b"\x0a\x05abc",
            PROTO,
            None,
            400,
            "$: must be a protobuf ExportTraceServiceRequest, got 5 bytes",
        ),
        (b"{oops", JSON, None, 400, "$: must be valid JSON, got '{oops'"),
        (b"x" * 2048, PROTO, None, 413, "body is 2048 bytes, the limit is 1024"),
    ],
)
async def test_client_errors(
    body: bytes, content_type: str | None, encoding: str | None, status: int, message: str
) -> None:
    sink = Sink()
    answer = await OtlpReceiver(OtlpSettings(max_body_bytes=1024), sink).export(
        body, content_type, encoding
    )
    assert answer.status == status
    assert status_of(answer.body, answer.content_type).message == message
    assert sink.values == []


async def test_partial_success_counts_spans_that_will_be_rejected() -> None:
    good = span(1, 1, attrs={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"})
    bad_ids = span(2, 2, attrs={"gen_ai.operation.name": "chat"})
    bad_ids.span_id = b""
    negative = span(3, 3, attrs={"gen_ai.request.model": "m", "gen_ai.usage.input_tokens": -1})
    http = span(4, 4, attrs={"http.request.method": "GET"})
    req = request(({"service.name": "s"}, [Scope("x", [good, bad_ids, negative, http])]))
    sink = Sink()
    answer = await OtlpReceiver(OtlpSettings(), sink).export(encode_request(req, "otlp_json"), JSON)
    assert answer.status == 200 and answer.rejected_spans == 2
    partial = orjson.loads(answer.body)["partialSuccess"]
    assert partial == {
        "rejectedSpans": "2",
        "errorMessage": "2 span(s) rejected; first: span_id: must be 8 bytes (16 hex digits),"
        " not all zero, got ''",
    }
    assert len(sink.values) == 1  # written whole: the worker records the rejections


async def test_large_requests_are_split_and_oversized_spans_refused() -> None:
    spans = [
        span(
            1,
            i,
            attrs={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "pad": "x" * 400},
        )
        for i in range(1, 41)
    ]
    req = request(({"service.name": "s"}, [Scope("a", spans[:20]), Scope("b", spans[20:])]))
    sink = Sink()
    settings = OtlpSettings(max_message_bytes=4096)
    answer = await OtlpReceiver(settings, sink).export(encode_request(req, "otlp_proto"), PROTO)
    assert answer.status == 200 and answer.messages == len(sink.values) > 1
    assert all(len(v) <= 4096 for v in sink.values)
    got = [
        (ss.scope.name, s.span_id)
        for v in sink.values
        for rs in parse_request(v, "otlp_proto").resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]
    assert got == [(("a" if i <= 20 else "b"), i.to_bytes(8, "big")) for i in range(1, 41)]

    huge = request(
        ({}, [Scope("a", [span(1, 1, attrs={"gen_ai.request.model": "m", "pad": "x" * 5000})])])
    )
    refused = await OtlpReceiver(settings, Sink()).export(encode_request(huge, "otlp_proto"), PROTO)
    assert refused.status == 413


async def test_produce_failure_answers_503() -> None:
    sink = Sink(fail=ConnectionError("broker down"))
    answer = await OtlpReceiver(OtlpSettings(), sink).export(
        encode_request(agent_run(), "otlp_proto"), PROTO
    )
    assert answer.status == 503
    status = status_of(answer.body, PROTO)
    assert status.code == 14 and "broker down" in status.message


async def test_empty_request_is_answered_without_writing() -> None:
    sink = Sink()
    answer = await OtlpReceiver(OtlpSettings(), sink).export(b"", PROTO)
    assert answer.status == 200 and sink.values == []


def faust_web(receiver: OtlpReceiver) -> Any:
    """The worker's kind of web server (Faust's aiohttp app) with the view registered,
    served by aiohttp's test server; the Faust app itself is not started."""
    import faust

    from llmpulse.otlp.web import traces_view

    app = faust.App(
        f"otlp-test-{uuid.uuid4().hex[:6]}",
        broker="kafka://127.0.0.1:1",
        store="memory://",
        autodiscover=False,
        web_enabled=True,
    )
    app.page("/v1/traces")(traces_view(receiver))
    return app.web.web_app


async def test_view_limits_and_methods() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    sink = Sink()
    receiver = OtlpReceiver(OtlpSettings(max_body_bytes=65536), sink)
    async with TestClient(TestServer(faust_web(receiver))) as http:
        ok = await http.post(
            "/v1/traces",
            data=encode_request(agent_run(), "otlp_proto"),
            headers={"Content-Type": PROTO},
        )
        assert ok.status == 200 and ok.headers["Content-Type"] == PROTO
        assert (
            ExportTraceServiceResponse.FromString(await ok.read()) == ExportTraceServiceResponse()
        )

        big = await http.post("/v1/traces", data=b"x" * 70_000, headers={"Content-Type": JSON})
        assert big.status == 413
        assert (
            orjson.loads(await big.read())["message"] == "body is 70000 bytes, the limit is 65536"
        )

        async def chunks() -> Any:  # no Content-Length: the view stops reading at the limit
            for _ in range(70):
                yield b"x" * 1000

        chunked = await http.post("/v1/traces", data=chunks(), headers={"Content-Type": PROTO})
        assert chunked.status == 413
        assert (
            status_of(await chunked.read(), PROTO).message == "body is larger, the limit is 65536"
        )

        bomb = gzip.compress(b"\0" * 10_000_000)
        assert len(bomb) < 65536
        inflated = await http.post(
            "/v1/traces", data=bomb, headers={"Content-Type": PROTO, "Content-Encoding": "gzip"}
        )
        assert inflated.status == 413
        assert (
            status_of(await inflated.read(), PROTO).message == "body is larger, the limit is 65536"
        )

        wrong = await http.post("/v1/traces", data=b"{}", headers={"Content-Type": "text/csv"})
        assert wrong.status == 415 and wrong.headers["Content-Type"] == JSON
        assert (await http.get("/v1/traces")).status == 405
    assert len(sink.values) == 1
