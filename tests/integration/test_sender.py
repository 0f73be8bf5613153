"""What runs on the one background sender across ``os.fork()``, against a real broker:
the emitter and the Kafka publisher (the sender itself: tests/unit/test_sender.py)."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from typing import Any

import orjson
import pytest

from llmpulse import Delivery, KafkaError, kafka_emitter
from llmpulse.ingest.publisher import KafkaPublisher
from tests.helpers import consume


def _new_topic(bootstrap: str, partitions: int = 1) -> str:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"llmpulse.test-sender-{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, partitions, replication_factor=1)])
        finally:
            await admin.close()

    asyncio.run(create())
    return topic


@pytest.mark.kafka
def test_emitter_survives_fork(kafka_bootstrap: str) -> None:
    """A pre-fork server: the emitter is built and connected in the parent, a
    worker process forked from it emits through its own producer, and the
    parent goes on emitting; every event arrives once."""
    topic = _new_topic(kafka_bootstrap)
    emitter = kafka_emitter(kafka_bootstrap, topic, delivery=Delivery(linger_s=0.01))

    def event(who: str, i: int) -> dict[str, Any]:
        return {
            "event_id": f"{who}-{i}",
            "service": who,
            "model": "m",
            "timestamp": i,
            "latency_ms": 1.0,
        }

    for i in range(20):
        assert emitter.emit(event("parent", i))
    assert emitter.flush(timeout=30) and emitter.sent == 20  # connected before the fork
    for i in range(20, 25):
        emitter.emit(event("parent", i))  # may still be buffered at the fork

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ok = all(emitter.emit(event("child", i)) for i in range(30))
            ok = ok and emitter.flush(timeout=30) and emitter.sent == 30
            emitter.close(timeout=30)
            code = 0 if ok and emitter.failed == 0 else 3
        finally:
            os._exit(code)

    for i in range(25, 45):
        assert emitter.emit(event("parent", i))
    assert emitter.flush(timeout=30)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for i in range(45, 50):  # the parent's producer still works after the child left
        assert emitter.emit(event("parent", i))
    emitter.close(timeout=30)
    assert (emitter.sent, emitter.failed, emitter.dropped) == (50, 0, 0)

    received = [
        orjson.loads(m.value)["event_id"] for m in consume(kafka_bootstrap, topic, 80, settle_s=1.0)
    ]
    expected = {f"parent-{i}" for i in range(50)} | {f"child-{i}" for i in range(30)}
    assert sorted(received) == sorted(expected)  # each exactly once


@pytest.mark.kafka
def test_kafka_publisher_publishes_and_refuses_after_close(kafka_bootstrap: str) -> None:
    topic = _new_topic(kafka_bootstrap)
    publisher = KafkaPublisher(kafka_bootstrap, timeout_s=30)
    threads = [
        threading.Thread(target=publisher.publish, args=(topic, b"k", f"v{i}".encode()))
        for i in range(20)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    publisher.publish(topic, b"k", b"last")
    publisher.close()
    with pytest.raises(KafkaError, match="closed"):
        publisher.publish(topic, b"k", b"late")
    values = sorted(m.value for m in consume(kafka_bootstrap, topic, 21, settle_s=1.0))
    assert values == sorted([f"v{i}".encode() for i in range(20)] + [b"last"])
