"""OTLP into a running worker: the Collector's Kafka topic (both encodings, unkeyed)
and the worker's own ``POST /v1/traces``, down to ``traces`` rows."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmpulse.devkafka.topics import ensure_topics_sync
from llmpulse.otlp import encode_request
from llmpulse.worker.process import WorkerProcess
from tests.helpers import consume, produce, worker_env, worker_process
from tests.otlp_builders import agent_run

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture
def worker(kafka_bootstrap: str, tmp_path: Path) -> Iterator[WorkerProcess]:
    name = f"otlp-{uuid.uuid4().hex[:8]}"
    ensure_topics_sync(kafka_bootstrap, {name + "-spans": 2})
    env = worker_env(kafka_bootstrap, name, tmp_path, partitions=2, otlp_topic=name + "-spans")
    w = worker_process(env, tmp_path / "worker.log")
    w.env = env
    w.start()
    w.wait_healthy()
    yield w
    w.stop()


def consume_with_headers(
    bootstrap: str, topic: str, expected: int, timeout: float = 30.0
) -> list[tuple[bytes, dict[str, bytes]]]:
    """Everything on ``topic`` from the start (no group): values and headers."""

    return [(m.value or b"", dict(m.headers)) for m in consume(bootstrap, topic, expected, timeout)]


def post(url: str, body: bytes, content_type: str) -> int:
    req = urllib.request.Request(
        url, data=body, headers={"Content-Type": content_type}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return int(resp.status)


def test_collector_topic_and_http_receiver_become_traces_rows(
    worker: WorkerProcess, kafka_bootstrap: str
) -> None:
    topic = worker.env["LLMPULSE_OTLP_TOPIC"]
    garbage = b"\x0a\xff garbage that is no export request"
    produce(
        kafka_bootstrap,
        topic,
        [
            encode_request(agent_run(1), "otlp_proto"),
            encode_request(agent_run(11), "otlp_json"),
            garbage,
        ],
    )
    assert post(worker.url + "/v1/traces", encode_request(agent_run(21), "otlp_proto"),
                "application/x-protobuf") == 200  # fmt: skip
    assert post(worker.url + "/v1/traces", encode_request(agent_run(31), "otlp_json"),
                "application/json") == 200  # fmt: skip
    # 4 payloads x 6 GenAI spans; 2 HTTP/DB spans each are skipped; the garbage is rejected.
    worker.wait_for("SELECT count() FROM traces", 24)
    worker.wait_for("SELECT count() FROM rejected_events", 1)
    assert worker.health()["skipped_spans"] == 8
    # The garbage payload is on the DLQ with its reason and origin, scrubbed like every
    # DLQ copy (privacy.batch.scrub_raw redacts it as text, so the invalid byte became U+FFFD).
    [(value, headers)] = consume_with_headers(kafka_bootstrap, worker.env["LLMPULSE_TOPICS_DLQ"], 1)
    assert value == garbage.decode("utf-8", "replace").encode()
    assert b"protobuf" in headers["llmpulse-reason"].lower()
    assert headers["llmpulse-source"].startswith(f"kafka:{topic}/".encode())

    names, rows = worker.sql(
        "SELECT event_id, model, provider, input_tokens, output_tokens, trace_id, span_id, "
        "parent_span_id, operation, round(latency_ms, 3) AS latency_ms FROM traces "
        "WHERE span_id = '0000000000000002' ORDER BY trace_id"
    )
    got = [dict(zip(names, r, strict=True)) for r in rows]
    assert [g["trace_id"][-2:] for g in got] == ["01", "0b", "15", "1f"]
    first = got[0]
    assert first["event_id"] == f"{first['trace_id']}-{first['span_id']}"
    assert (first["model"], first["provider"]) == ("gpt-4o", "openai")
    assert (first["input_tokens"], first["output_tokens"]) == (1200, 300)
    assert (first["parent_span_id"], first["operation"]) == ("0000000000000001", "chat")
    assert first["latency_ms"] == 812.5

    # The Collector redelivers a payload: still each span once.
    produce(kafka_bootstrap, topic, [encode_request(agent_run(1), "otlp_proto")])
    deadline = time.monotonic() + 60
    while worker.health()["duplicates"] < 6 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert worker.scalar("SELECT count() FROM traces") == 24
    reasons = json.dumps(worker.sql("SELECT reason FROM rejected_events")[1])
    assert "$" in reasons or "protobuf" in reasons.lower()
