"""The development Kafka: topic setup against the session broker, and the local broker's
lifecycle (a second broker of its own, so stopping it leaves the session one alone)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from llmpulse.devkafka import broker, jars, topics
from llmpulse.devkafka.testing import cache_dir
from llmpulse.errors import KafkaError

# Where the session broker is external (env or Docker) the local one may be unusable.
needs_jvm = pytest.mark.skipif(
    shutil.which("java") is None or shutil.which("mvn") is None,
    reason="the local broker needs java and mvn on PATH",
)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _partitions(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return len(described["partitions"])
    finally:
        await admin.close()


@pytest.mark.kafka
async def test_round_trip_through_ensured_topic(kafka_bootstrap: str) -> None:
    topic = _name("roundtrip")
    await topics.ensure_topics(kafka_bootstrap, {topic: 3})
    assert await _partitions(kafka_bootstrap, topic) == 3

    sent = {f"k{i}".encode(): f"v{i}".encode() for i in range(6)}
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in sent.items():
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=_name("group"),
        auto_offset_reset="earliest",
    )
    await consumer.start()
    received: dict[bytes, bytes] = {}
    try:
        async with asyncio.timeout(20):
            while len(received) < len(sent):
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    received.update((r.key, r.value) for r in records if r.key and r.value)
        await consumer.commit()
    finally:
        await consumer.stop()
    assert received == sent


@pytest.mark.kafka
async def test_ensure_topics_is_idempotent_and_never_shrinks(kafka_bootstrap: str) -> None:
    topic = _name("idem")
    await topics.ensure_topics(kafka_bootstrap, {topic: 2})
    await topics.ensure_topics(kafka_bootstrap, {topic: 2})
    # Fewer or more partitions asked for an existing topic: it is left as it is.
    await topics.ensure_topics(kafka_bootstrap, {topic: 1, _name("other"): 1})
    await topics.ensure_topics(kafka_bootstrap, {topic: 5})
    assert await _partitions(kafka_bootstrap, topic) == 2


@pytest.mark.kafka
def test_ensure_topics_sync_and_wait_for_broker(kafka_bootstrap: str) -> None:
    topic = _name("sync")
    topics.ensure_topics_sync(kafka_bootstrap, {topic: 1})
    asyncio.run(topics.wait_for_broker(kafka_bootstrap, timeout=10))
    assert asyncio.run(_partitions(kafka_bootstrap, topic)) == 1


async def test_wait_for_broker_fails_clearly_when_nothing_listens() -> None:
    bootstrap = f"127.0.0.1:{broker.free_port()}"
    with pytest.raises(KafkaError) as err:
        await topics.wait_for_broker(bootstrap, timeout=1.5)
    assert err.value.bootstrap == bootstrap


async def test_ensure_topics_rejects_empty_partitions() -> None:
    with pytest.raises(ValueError, match="partition"):
        await topics.ensure_topics("127.0.0.1:1", {"t": 0})


@pytest.mark.kafka
@needs_jvm
def test_local_broker_lifecycle(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = broker.free_port()
    assert broker.status(state) is None

    info = broker.start(state_dir=state, cache_dir=cache_dir(), port=port, timeout=60)
    try:
        assert info.bootstrap == f"127.0.0.1:{port}"
        assert info.pid is not None
        assert broker.status(state) == info
        # Starting again finds the running broker instead of launching another.
        assert broker.start(state_dir=state, cache_dir=cache_dir(), port=port) == info
        with pytest.raises(KafkaError, match="already runs on port"):
            broker.start(state_dir=state, cache_dir=cache_dir(), port=broker.free_port())
        # Another state dir on the same port: refused before any JVM starts.
        with pytest.raises(KafkaError, match="already in use"):
            broker.start(state_dir=tmp_path / "other", cache_dir=cache_dir(), port=port)
        assert "Kafka Server started" in info.log_file.read_text()
    finally:
        assert broker.stop(state)
    assert broker.status(state) is None
    assert not broker.stop(state)
    with socket.socket() as s:  # the port is released
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


@needs_jvm
def test_resolve_jars_uses_a_complete_cache_without_maven(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = jars.resolve_jars(cache_dir())  # resolved once by the session, or now
    assert any(first.glob("kafka_2.13-*.jar"))
    monkeypatch.setenv("PATH", str(tmp_path))  # neither mvn nor java to be found
    assert jars.resolve_jars(cache_dir()) == first
    with pytest.raises(KafkaError, match="mvn"):
        jars.resolve_jars(tmp_path / "empty-cache")


@needs_jvm
def test_resolve_jars_reports_maven_failures(tmp_path: Path) -> None:
    pom = tmp_path / "pom.xml"
    pom.write_text(
        """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.llmpulse</groupId><artifactId>t</artifactId><version>1</version>
  <packaging>pom</packaging>
  <properties><kafka.version>9.9.9</kafka.version></properties>
  <dependencies><dependency>
    <groupId>io.llmpulse.absent</groupId><artifactId>kafka_2.13</artifactId>
    <version>${kafka.version}</version>
  </dependency></dependencies>
</project>"""
    )
    assert jars.kafka_version(pom) == "9.9.9"
    with pytest.raises(KafkaError, match="mvn failed") as err:
        jars.resolve_jars(tmp_path / "cache", pom=pom)
    assert "io.llmpulse.absent" in err.value.problem  # the tail of Maven's output
    assert not (tmp_path / "cache" / "kafka-9.9.9" / "libs").exists()


def test_cluster_ids_look_like_kafkas() -> None:
    ids = {broker.new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
