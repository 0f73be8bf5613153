"""The OTLP/HTTP receiver's durable write to a real Kafka topic, read back and decoded
(status codes and bodies per the OTLP/HTTP spec: tests/unit/otlp/test_receiver.py)."""

from __future__ import annotations

import gzip
import uuid
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from llmpulse.devkafka.topics import ensure_topics
from llmpulse.otlp import OtlpReceiver, decode_message, encode_request
from llmpulse.settings import OtlpSettings
from tests.otlp_builders import agent_run
from tests.unit.otlp.test_receiver import JSON, PROTO, faust_web


async def _read_topic(bootstrap: str, topic: str, expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    got: list[Any] = []
    try:
        for _ in range(120):  # a bound on the wait, not a timing assertion
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                got.extend(msgs)
            if len(got) >= expected:
                break
    finally:
        await consumer.stop()
    return got


@pytest.mark.kafka
async def test_receiver_writes_to_a_real_kafka_topic(kafka_bootstrap: str) -> None:
    topic = f"otlp_spans-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, {topic: 2})
    settings = OtlpSettings(topic=topic, max_message_bytes=2048)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()

    async def produce(value: bytes) -> None:
        await producer.send_and_wait(settings.topic, value)

    receiver = OtlpReceiver(settings, produce)
    try:
        proto = await receiver.export(encode_request(agent_run(1), "otlp_proto"), PROTO)
        js = await receiver.export(
            gzip.compress(encode_request(agent_run(5), "otlp_json")), JSON, "gzip"
        )
    finally:
        await producer.stop()
    assert proto.status == js.status == 200
    # A producer that is gone is a failed write: 503, so the client retries.
    after_stop = await receiver.export(encode_request(agent_run(9), "otlp_proto"), PROTO)
    assert after_stop.status == 503

    messages = await _read_topic(kafka_bootstrap, topic, proto.messages + js.messages)
    assert len(messages) == proto.messages + js.messages > 2  # split at 2 KiB
    events: dict[str, dict[str, Any]] = {}
    skipped = 0
    for m in messages:
        out = decode_message(m.value, f"kafka:{m.topic}/{m.partition}@{m.offset}", settings)
        assert out.rejections == [] and out.encoding == "otlp_proto"
        skipped += out.skipped
        for value, source in out.events:
            assert source.startswith(f"kafka:{topic}/{m.partition}@{m.offset}#")
            e = orjson.loads(value)
            events[e["event_id"]] = e
    expected: dict[str, dict[str, Any]] = {}
    for trace in (1, 5):
        direct = decode_message(encode_request(agent_run(trace), "otlp_proto"), "x", settings)
        expected.update({orjson.loads(v)["event_id"]: orjson.loads(v) for v, _ in direct.events})
    assert events == expected and len(events) == 12
    assert skipped == 4


@pytest.mark.kafka
async def test_collector_style_messages_in_every_compression(kafka_bootstrap: str) -> None:
    """What the Collector's Kafka exporter writes: unkeyed messages in either encoding,
    compressed as its producer.compression allows; read back as the worker reads."""
    topic = f"otlp_spans-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, {topic: 1})
    sent: list[bytes] = []
    for i, compression in enumerate(["gzip", "lz4", "snappy", "zstd", None]):
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, acks="all", compression_type=compression
        )
        await producer.start()
        try:
            for encoding in ("otlp_proto", "otlp_json"):
                value = encode_request(agent_run(100 * i + len(sent) + 1), encoding)  # type: ignore[arg-type]
                await producer.send_and_wait(topic, value)
                sent.append(value)
        finally:
            await producer.stop()
    messages = await _read_topic(kafka_bootstrap, topic, len(sent))
    assert [m.value for m in messages] == sent and all(m.key is None for m in messages)
    settings = OtlpSettings()
    for m in messages:
        out = decode_message(m.value, f"kafka:{m.topic}/{m.partition}@{m.offset}", settings)
        assert out.encoding == ("otlp_json" if m.value[:1] == b"{" else "otlp_proto")
        assert (len(out.events), out.skipped, out.rejections) == (6, 2, [])


@pytest.mark.kafka
async def test_post_v1_traces_to_kafka(kafka_bootstrap: str) -> None:
    """An SDK's OTLP/HTTP export, protobuf and gzip'd JSON, through the web view into
    a real topic; what the topic holds decodes to the same events."""
    from aiohttp.test_utils import TestClient, TestServer

    topic = f"otlp_spans-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, {topic: 3})
    settings = OtlpSettings(topic=topic)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()

    async def produce(value: bytes) -> None:
        await producer.send_and_wait(settings.topic, value)

    try:
        async with TestClient(TestServer(faust_web(OtlpReceiver(settings, produce)))) as http:
            a = await http.post(
                "/v1/traces",
                data=encode_request(agent_run(1), "otlp_proto"),
                headers={"Content-Type": PROTO},
            )
            b = await http.post(
                "/v1/traces",
                data=gzip.compress(encode_request(agent_run(3), "otlp_json")),
                headers={"Content-Type": JSON, "Content-Encoding": "gzip"},
            )
            assert (a.status, b.status) == (200, 200)
            assert orjson.loads(await b.read()) == {}
    finally:
        await producer.stop()
    messages = await _read_topic(kafka_bootstrap, topic, 2)
    assert len(messages) == 2
    got = sorted(
        v
        for m in messages
        for v, _ in decode_message(
            m.value, f"kafka:{topic}/{m.partition}@{m.offset}", settings
        ).events
    )
    want = sorted(
        v
        for t in (1, 3)
        for v, _ in decode_message(encode_request(agent_run(t), "otlp_proto"), "x", settings).events
    )
    assert got == want and len(got) == 12
