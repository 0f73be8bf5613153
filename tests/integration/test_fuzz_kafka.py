"""Hostile input through Kafka into a running worker: garbage drawn by hypothesis
and a corpus of real-world garbage, between valid events, some with no key and
some keyed. Every bad message lands in rejected_events and on the DLQ with its
reason; the valid events around it are stored once; the worker never stops."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmpulse.devkafka.topics import ensure_topics_sync
from llmpulse.privacy import RedactionPolicy, scrub_raw
from llmpulse.worker.process import WorkerProcess
from tests.garbage import GARBAGE, REAL_WORLD, valid_line
from tests.helpers import consume_values, worker_env, worker_process

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

_rounds = itertools.count()


def fits_kafka(line: bytes) -> bool:
    """Below the broker's default message size (1 MiB): a bigger message never
    reaches a consumer (the producer gets MessageSizeTooLarge), so the worker's
    own size limit is fuzzed through replay files instead."""
    return len(line) < 1_000_000


class Fuzzed:
    def __init__(self, worker: WorkerProcess, bootstrap: str, topic: str) -> None:
        self.worker, self.bootstrap, self.topic = worker, bootstrap, topic
        self.valid = 0
        self.bad = 0

    def send(self, lines: list[bytes]) -> None:
        async def go() -> None:
            p = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, acks="all", max_request_size=4 * 1024 * 1024
            )
            await p.start()
            try:
                for i, line in enumerate(lines):
                    await p.send(self.topic, line, key=b"k" if i % 3 == 0 else None)
                await p.flush()
            finally:
                await p.stop()

        asyncio.run(go())

    def expect(self, valid: int, bad: int) -> None:
        self.valid += valid
        self.bad += bad
        w = self.worker
        w.wait_for("SELECT count() FROM traces", self.valid, timeout=120)
        w.wait_for("SELECT count() FROM rejected_events", self.bad, timeout=120)
        assert w.scalar("SELECT countIf(reason = '' OR category = '') FROM rejected_events") == 0


@pytest.fixture(scope="module")
def fuzzed(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    tmp: Path = tmp_path_factory.mktemp("fuzz-kafka")
    topic = f"fuzz-{uuid.uuid4().hex[:8]}"
    ensure_topics_sync(kafka_bootstrap, {topic: 3, topic + ".dlq": 1})
    w = worker_process(worker_env(kafka_bootstrap, topic, tmp, partitions=3), tmp / "worker.log")
    w.start()
    w.wait_ready()
    yield Fuzzed(w, kafka_bootstrap, topic)
    w.stop()


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(st.one_of(st.none(), GARBAGE.filter(fits_kafka)), min_size=1, max_size=25))
def test_garbage_drawn_by_hypothesis(fuzzed: Fuzzed, drawn: list[bytes | None]) -> None:
    prefix = f"hyp{next(_rounds)}"
    lines = [valid_line(prefix, i)[1] if d is None else d for i, d in enumerate(drawn)]
    fuzzed.send(lines)
    fuzzed.expect(sum(d is None for d in drawn), sum(d is not None for d in drawn))
    assert fuzzed.worker.alive


def test_real_world_garbage_corpus(fuzzed: Fuzzed) -> None:
    lines: list[bytes] = []
    for i, junk in enumerate(REAL_WORLD):
        lines += [valid_line("corpus", i)[1], junk]
    fuzzed.send(lines)
    fuzzed.expect(len(REAL_WORLD), len(REAL_WORLD))
    dlq = consume_values(fuzzed.bootstrap, fuzzed.topic + ".dlq", fuzzed.bad, timeout=60)
    assert len(dlq) >= fuzzed.bad  # at-least-once: every rejected message is there
    # As stored: scrubbed of PII, and of prompt and response (text is not stored).
    policy = RedactionPolicy()
    assert {scrub_raw(j, policy, store_text=False) for j in REAL_WORLD} <= {bytes(m) for m in dlq}
