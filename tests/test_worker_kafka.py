"""End to end against a real Kafka broker: producer -> worker process -> chDB store."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from llmpulse.devkafka.broker import free_port
from llmpulse.devkafka.topics import ensure_topics_sync
from llmpulse.errors import StoreError
from llmpulse.store.readonly import query_worker
from tests.helpers import event, raw

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{env['LLMPULSE_WORKER_WEB_PORT']}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmpulse", "worker"],
            env={**os.environ, **self.env},
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def sql(self, q: str) -> int:
        return int(query_worker(self.url, q)[1][0][0])

    def wait_for(self, q: str, expected: int, timeout: float = 90.0) -> int:
        deadline = time.monotonic() + timeout
        value = -1
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker died:\n{self.log.read_text()[-3000:]}")
            try:
                value = self.sql(q)
                if value == expected:
                    return value
            except StoreError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"{q} = {value}, expected {expected}\n{self.log.read_text()[-3000:]}")

    def health(self) -> dict[str, int]:
        import urllib.request

        with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]


@pytest.fixture
def worker_env(kafka_bootstrap: str, tmp_path: Path) -> dict[str, str]:
    topic = f"traces-{uuid.uuid4().hex[:8]}"
    ensure_topics_sync(kafka_bootstrap, {topic: 3, topic + ".dlq": 1})
    return {
        "LLMPULSE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "LLMPULSE_TOPICS_TRACES": topic,
        "LLMPULSE_TOPICS_DLQ": topic + ".dlq",
        "LLMPULSE_TOPICS_CONTROL": topic + ".control",
        "LLMPULSE_TOPICS_PARTITIONS": "3",
        "LLMPULSE_WORKER_APP_ID": f"llmpulse-test-{topic}",
        "LLMPULSE_WORKER_WEB_PORT": str(free_port()),
        "LLMPULSE_WORKER_BATCH_SIZE": "50",
        "LLMPULSE_WORKER_FLUSH_INTERVAL_S": "0.2",
        "LLMPULSE_DATA_DIR": str(tmp_path / "data"),
        "LLMPULSE_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'store'}",
    }


@pytest.fixture
def worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Worker]:
    w = Worker(worker_env, tmp_path / "worker.log")
    w.start()
    yield w
    w.stop()


def produce(
    bootstrap: str, topic: str, payloads: list[bytes], keyed: Callable[[int], bytes]
) -> None:
    async def go() -> None:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await p.start()
        try:
            for i, v in enumerate(payloads):
                await p.send(topic, v, key=keyed(i))
            await p.flush()
        finally:
            await p.stop()

    asyncio.run(go())


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[bytes]:
    async def go() -> list[bytes]:
        c = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
        )
        await c.start()
        got: list[bytes] = []
        try:
            deadline = time.monotonic() + timeout
            while len(got) < expected and time.monotonic() < deadline:
                batch = await c.getmany(timeout_ms=500)
                for msgs in batch.values():
                    got.extend(m.value for m in msgs)
        finally:
            await c.stop()
        return got

    return asyncio.run(go())


def payloads(n_valid: int, n_invalid: int, offset: int = 0) -> list[bytes]:
    good = [raw(event(offset + i)) for i in range(n_valid)]
    bad = [raw(event(10_000 + offset + i, latency_ms=-(i + 1))) for i in range(n_invalid)]
    bad[:1] = [b"definitely not json"] if n_invalid else []
    return good + bad


def test_valid_invalid_and_redelivered_events(worker: Worker, worker_env: dict[str, str]) -> None:
    bootstrap, topic = worker_env["LLMPULSE_KAFKA_BOOTSTRAP"], worker_env["LLMPULSE_TOPICS_TRACES"]
    n, m = 300, 12
    batch = payloads(n, m)
    produce(bootstrap, topic, batch, lambda i: f"k{i % 7}".encode())
    worker.wait_for("SELECT count() FROM traces", n)
    worker.wait_for("SELECT count() FROM rejected_events", m)
    dlq = consume_all(bootstrap, worker_env["LLMPULSE_TOPICS_DLQ"], m)
    assert sorted(dlq) == sorted(batch[n:])

    # The same events delivered a second time: still exactly N rows.
    produce(bootstrap, topic, batch, lambda i: f"k{i % 7}".encode())
    deadline = time.monotonic() + 60
    while worker.health()["duplicates"] < n and time.monotonic() < deadline:
        time.sleep(0.3)
    assert worker.health()["duplicates"] == n
    assert worker.sql("SELECT count() FROM traces") == n
    assert worker.sql("SELECT uniqExact(event_id) FROM traces") == n

    # An analyst's query while the worker owns the embedded store goes through its endpoint.
    proc = subprocess.run(
        [sys.executable, "-m", "llmpulse", "sql", "SELECT count() AS n FROM traces", "-f", "json"],
        env={**os.environ, **worker_env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"n": n}]


def test_killed_worker_restarts_without_loss_or_duplicates(
    worker: Worker, worker_env: dict[str, str]
) -> None:
    bootstrap, topic = worker_env["LLMPULSE_KAFKA_BOOTSTRAP"], worker_env["LLMPULSE_TOPICS_TRACES"]
    produce(bootstrap, topic, payloads(400, 0), lambda i: f"k{i % 5}".encode())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if worker.sql("SELECT count() FROM traces") > 0:
                break
        except StoreError:
            pass
        time.sleep(0.2)
    worker.stop(signal.SIGKILL)  # no clean shutdown: uncommitted offsets are redelivered
    produce(bootstrap, topic, payloads(400, 0, offset=400), lambda i: f"k{i % 5}".encode())
    worker.start()
    worker.wait_for("SELECT count() FROM traces", 800)
    time.sleep(2)  # any redelivery still in flight would show up now
    assert worker.sql("SELECT count() FROM traces") == 800
    assert worker.sql("SELECT uniqExact(event_id) FROM traces") == 800
