"""Decoded OTLP through the real ingest pipeline into chDB: the ``traces`` rows field
by field, the rejected spans and payloads in ``rejected_events``, and redelivery.

The decoder's rejections join the batch's as the worker will join them (see the
``llmpulse.otlp`` docstring): ``PreparedBatch.rejections`` of the prepared batch."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from llmpulse.otlp import OtlpDecoded, OtlpDecoder, encode_request
from llmpulse.pipeline import BatchOutcome, IngestPipeline
from llmpulse.runtime import build_pipeline, prepare_store
from llmpulse.settings import Settings
from llmpulse.store.client import SerialClient
from tests import otlp_builders
from tests.otlp_builders import BASE_NS, MS, Scope, agent_run, messages_json, request, span

NOW = datetime(2026, 2, 1, tzinfo=UTC)


@pytest.fixture
def text_settings(settings: Settings) -> Settings:
    mappings = {"tenant": "app.tenant_id", "team": "app.team", "endpoint": "gen_ai.agent.name"}
    return settings.model_copy(
        update={
            "clickhouse": settings.clickhouse.model_copy(update={"store_text": True}),
            "otlp": settings.otlp.model_copy(
                update={
                    "mappings": {**settings.otlp.mappings, **{k: [v] for k, v in mappings.items()}}
                }
            ),
        }
    )


@pytest.fixture
def client(text_settings: Settings) -> Iterator[SerialClient]:
    c = prepare_store(text_settings)
    yield c
    c.close()


def ingest(pipeline: IngestPipeline, decoded: list[OtlpDecoded]) -> BatchOutcome:
    """What the worker does with a batch of otlp_spans messages."""
    prepared = pipeline.prepare([m for d in decoded for m in d.messages()])
    extra = [r for d in decoded for r in d.rejections]
    traces = dataclasses.replace(prepared.traces, rejections=extra + prepared.traces.rejections)
    return pipeline.commit(dataclasses.replace(prepared, traces=traces))


def rows(client: SerialClient, sql: str) -> list[dict[str, Any]]:
    names, values = client.query(sql)
    return [dict(zip(names, r, strict=True)) for r in values]


def test_traces_rows_field_by_field(text_settings: Settings, client: SerialClient) -> None:
    decoder = OtlpDecoder(text_settings.otlp, store_text=text_settings.clickhouse.store_text)
    pipeline = build_pipeline(text_settings, client, clock=lambda: NOW)
    proto = decoder.decode(encode_request(agent_run(1), "otlp_proto"), "kafka:otlp_spans/0@5")
    js = decoder.decode(encode_request(agent_run(7), "otlp_json"), "kafka:otlp_spans/1@9")
    out = ingest(pipeline, [proto, js])
    assert (out.stats.accepted, len(out.rejections)) == (12, 0)

    chat = rows(
        client,
        "SELECT * FROM traces WHERE span_id = '0000000000000002' AND trace_id ="
        " '00000000000000000000000000000001'",
    )
    assert len(chat) == 1
    row = chat[0]
    expected = {
        "event_id": "00000000000000000000000000000001-0000000000000002",
        "schema_version": 1,
        "service": "travel-agent",
        "endpoint": "",
        "model": "gpt-4o",
        "provider": "openai",
        "tenant": "acme",
        "team": "",
        "user_id": "",
        "environment": "prod",
        "response_model": "gpt-4o-2024-08-06",
        "operation": "chat",
        "prompt_version": "",
        "variant": "",
        "trace_id": "00000000000000000000000000000001",
        "span_id": "0000000000000002",
        "parent_span_id": "0000000000000001",
        "latency_ms": 812.5,
        "ttft_ms": 250.0,
        "status": "ok",
        "error_type": "",
        "cost_source": "price_table",
        "scores": {},
        **otlp_builders.CHAT_SPAN_TEXT,
        "prompt_embedding_dim": 0,
        "response_embedding_dim": 0,
        "source": "kafka:otlp_spans/0@5#0",
    }
    assert {k: row[k] for k in expected} == expected
    assert row["timestamp"].replace(tzinfo=UTC) == datetime.fromtimestamp(
        (BASE_NS + 10 * MS) / 1e9, tz=UTC
    )
    # Of 1200 input tokens 1000 are cache reads (1.25/Mtok) and 100 cache writes, which
    # have no rate of their own for gpt-4o and cost the input rate (2.5), like the other
    # 100; 300 output tokens at 10/Mtok.
    assert row["cost_usd"] == pytest.approx((100 * 2.5 + 100 * 2.5 + 1000 * 1.25 + 300 * 10) / 1e6)

    per_op = rows(
        client,
        "SELECT operation, model, status, error_type, endpoint, team, count() AS n FROM traces"
        " GROUP BY ALL ORDER BY operation, model",
    )
    assert per_op == [
        {
            "operation": "chat",
            "model": "gpt-4o",
            "status": "ok",
            "error_type": "",
            "endpoint": "",
            "team": "",
            "n": 2,
        },
        {
            "operation": "chat",
            "model": "gpt-4o-mini",
            "status": "ok",
            "error_type": "",
            "endpoint": "",
            "team": "search",
            "n": 2,
        },
        {
            "operation": "embeddings",
            "model": "text-embedding-3-small",
            "status": "ok",
            "error_type": "",
            "endpoint": "",
            "team": "",
            "n": 2,
        },
        {
            "operation": "execute_tool",
            "model": "tool:get_weather",
            "status": "error",
            "error_type": "TimeoutError",
            "endpoint": "",
            "team": "",
            "n": 2,
        },
        {
            "operation": "invoke_agent",
            "model": "agent:planner",
            "status": "ok",
            "error_type": "",
            "endpoint": "planner",
            "team": "",
            "n": 2,
        },
        {
            "operation": "text_completion",
            "model": "claude-2.1",
            "status": "error",
            "error_type": "RateLimitError",
            "endpoint": "",
            "team": "search",
            "n": 2,
        },
    ]

    # Redelivered messages and the same spans posted again: stored once.
    again = ingest(pipeline, [proto, js])
    assert (again.stats.accepted, again.stats.duplicates) == (0, 12)
    assert rows(client, "SELECT count() AS n FROM traces") == [{"n": 12}]


def test_rejected_payloads_and_spans_are_recorded(
    text_settings: Settings, client: SerialClient
) -> None:
    decoder = OtlpDecoder(text_settings.otlp)
    pipeline = build_pipeline(text_settings, client, clock=lambda: NOW)
    good = span(1, 1, attrs={"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 10})
    bad_id = span(2, 2, attrs={"gen_ai.request.model": "gpt-4o"})
    bad_id.trace_id = b"\x02" * 4
    negative = span(
        3, 3, attrs={"gen_ai.request.model": "gpt-4o", "gen_ai.usage.output_tokens": -3}
    )
    req = request(({"service.name": "svc"}, [Scope("s", [good, bad_id, negative])]))
    mixed = decoder.decode(encode_request(req, "otlp_proto"), "kafka:otlp_spans/2@40")
    garbage = decoder.decode(b"\x0a\xff\xff", "kafka:otlp_spans/2@41")
    out = ingest(pipeline, [mixed, garbage])
    assert out.stats.accepted == 1
    got = rows(
        client,
        "SELECT source, field, category, reason, event_id FROM rejected_events ORDER BY source",
    )
    assert got == [
        {
            "source": "kafka:otlp_spans/2@40#1",
            "field": "trace_id",
            "category": "trace_id: must be 16 bytes (32 hex digits), not all zero",
            "reason": "trace_id: must be 16 bytes (32 hex digits), not all zero, got '02020202'",
            "event_id": "",
        },
        {
            "source": "kafka:otlp_spans/2@40#2",
            "field": "output_tokens",
            "category": "output_tokens: must be >= 0",
            "reason": "output_tokens: must be >= 0, got -3",
            "event_id": "00000000000000000000000000000003-0000000000000003",
        },
        {
            "source": "kafka:otlp_spans/2@41",
            "field": "$",
            "category": "$: must be a protobuf ExportTraceServiceRequest",
            "reason": "$: must be a protobuf ExportTraceServiceRequest, got 3 bytes",
            "event_id": "",
        },
    ]
    # A redelivery records nothing twice.
    ingest(pipeline, [mixed, garbage])
    assert rows(client, "SELECT count() AS n FROM rejected_events") == [{"n": 3}]


def test_otlp_message_content_is_redacted_before_the_store(
    text_settings: Settings, client: SerialClient
) -> None:
    """With text storage on, content from ``gen_ai.input.messages`` goes through the
    same redaction as JSON events: masked in the row, counted in ``redactions``."""
    key = "sk-proj-" + "Ab3dE6gH9jK2mN5pQ8sT1vW4" * 2
    decoder = OtlpDecoder(text_settings.otlp, store_text=text_settings.clickhouse.store_text)
    pipeline = build_pipeline(text_settings, client, clock=lambda: NOW)
    chat = span(
        5,
        2,
        name="chat gpt-4o",
        attrs={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 40,
            "gen_ai.usage.output_tokens": 8,
            "gen_ai.input.messages": messages_json(
                ("system", "You are a support bot."),
                ("user", f"Mail ann@example.com, my key is {key} thanks"),
            ),
            "gen_ai.output.messages": messages_json(("assistant", "Done, ann@example.com.")),
        },
    )
    req = request(({"service.name": "support"}, [Scope("openai", [chat])]))
    out = ingest(pipeline, [decoder.decode(encode_request(req, "otlp_json"), "kafka:o/0@1")])
    assert (out.stats.accepted, len(out.rejections)) == (1, 0)

    [row] = rows(client, "SELECT prompt, response, redactions FROM traces")
    for planted in ("ann@example.com", key, "sk-proj-"):
        assert planted not in row["prompt"] and planted not in row["response"], planted
    assert "[EMAIL]" in row["prompt"] and "[EMAIL]" in row["response"]
    # the text around the planted values survives
    assert "Mail " in row["prompt"] and " thanks" in row["prompt"]
    assert "You are a support bot." in row["prompt"]
    assert row["redactions"] == {"email": 2, "api_key": 1}
    leaked = rows(
        client,
        "SELECT count() AS n FROM traces WHERE position(prompt, 'ann@') > 0"
        " OR position(response, 'ann@') > 0 OR position(prompt, 'sk-proj') > 0",
    )
    assert leaked == [{"n": 0}]
