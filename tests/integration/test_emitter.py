"""The emitter against a real broker: every event arrives, keyed by series (the client
library itself: tests/unit/client/test_emitter.py)."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from llmpulse import (
    Delivery,
    kafka_emitter,
)
from llmpulse.client import series_key
from llmpulse.synth.traffic import TrafficConfig, TrafficGenerator
from tests.helpers import read_topic


@pytest.mark.kafka
async def test_kafka_round_trip(kafka_bootstrap: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"llm.traces.test-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()

    generator = TrafficGenerator(
        TrafficConfig(embeddings=True), seed=11, start_ms=1_767_225_600_000, rate_per_s=50
    )
    sent = list(generator.events(200))
    emitter = kafka_emitter(kafka_bootstrap, topic, delivery=Delivery(batch_size=64))
    # The Emitter blocks only its own thread; run the blocking calls off this loop.
    assert all(emitter.emit(e) for e in sent)
    await asyncio.to_thread(emitter.close, 30.0)
    assert emitter.sent == 200 and emitter.failed == 0 and emitter.dropped == 0

    received = await read_topic(kafka_bootstrap, topic, 200)

    assert len(received) == 200
    by_id = {e["event_id"]: e for e in sent}
    partitions: dict[bytes, set[int]] = {}
    for message in received:
        event = orjson.loads(message.value)
        assert event == by_id[event["event_id"]]
        assert message.key == series_key(event)
        partitions.setdefault(message.key, set()).add(message.partition)
    assert {e["event_id"] for e in (orjson.loads(m.value) for m in received)} == set(by_id)
    assert all(len(p) == 1 for p in partitions.values())  # one series, one partition
