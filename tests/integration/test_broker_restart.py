"""The Kafka broker stopped and restarted while a worker and an emitter run.

A private broker (free port, its own data dir: never the shared one) is stopped
with ``llmpulse kafka stop`` and started again with ``llmpulse kafka start`` on
the same data. A worker subprocess consumes; an :class:`Emitter` in this process
produces through the real Kafka transport, wrapped only to learn *which* events
the broker acknowledged (the emitter counts them but does not name them).

Asserted: ``emit`` returns at once while the broker is down (it buffers and
counts); every acknowledged event ends up in ``traces`` exactly once; the worker
and the emitter both carry on after the restart.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from llmpulse import Delivery, Emitter, KafkaOptions, KafkaTransport, Limits
from llmpulse.client.encoding import Record
from llmpulse.devkafka import broker
from llmpulse.devkafka.testing import cache_dir
from llmpulse.devkafka.topics import ensure_topics_sync
from llmpulse.worker.process import WorkerProcess
from tests.helpers import event

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

RATE_PER_S = 100
EMIT_BOUND_S = 0.25  # "never blocks": one emit() call, even with the broker gone
OUTAGE_S = 15.0
CATCH_UP_S = 240.0  # bounded wait for the worker to store what was acknowledged


class AckRecorder:
    """The real Kafka transport; remembers the event ids of acknowledged batches."""

    def __init__(self, inner: KafkaTransport) -> None:
        self.inner = inner
        self.acked: list[str] = []

    async def start(self) -> None:
        await self.inner.start()

    async def send_batch(self, topic: str, records: Sequence[Record]) -> None:
        await self.inner.send_batch(topic, records)  # raises unless every record is acked
        self.acked.extend(orjson.loads(value)["event_id"] for _, value in records)

    async def close(self) -> None:
        await self.inner.close()


def kafka_cli(args: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "llmpulse", "kafka", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def emit_for(emitter: Emitter, seconds: float, first: int, slowest: list[float]) -> int:
    """Emit at RATE_PER_S for ``seconds``; returns the next event number."""
    i = first
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        e = event(i, event_id=f"restart-{i:06d}", timestamp=int(time.time() * 1000))
        t0 = time.perf_counter()
        emitter.emit(e)
        slowest.append(time.perf_counter() - t0)
        i += 1
        time.sleep(1.0 / RATE_PER_S)
    return i


def test_broker_stopped_and_restarted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = broker.free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker_env = {
        "LLMPULSE_DATA_DIR": str(tmp_path / "broker"),
        "LLMPULSE_CACHE_DIR": str(cache_dir()),
        "LLMPULSE_KAFKA_LOCAL_PORT": str(port),
    }
    kafka_cli(["start", "--port", str(port)], broker_env)
    emitter: Emitter | None = None
    worker: WorkerProcess | None = None
    try:
        topic = f"traces-{uuid.uuid4().hex[:8]}"
        ensure_topics_sync(bootstrap, {topic: 3, topic + ".dlq": 1, topic + ".control": 1})
        web_port = broker.free_port()
        worker = WorkerProcess(
            {
                "LLMPULSE_KAFKA_BOOTSTRAP": bootstrap,
                "LLMPULSE_TOPICS_TRACES": topic,
                "LLMPULSE_TOPICS_DLQ": topic + ".dlq",
                "LLMPULSE_TOPICS_CONTROL": topic + ".control",
                "LLMPULSE_TOPICS_PARTITIONS": "3",
                "LLMPULSE_WORKER_APP_ID": f"llmpulse-test-{topic}",
                "LLMPULSE_WORKER_WEB_PORT": str(web_port),
                "LLMPULSE_WORKER_BATCH_SIZE": "100",
                "LLMPULSE_WORKER_FLUSH_INTERVAL_S": "0.2",
                "LLMPULSE_DATA_DIR": str(tmp_path / "worker"),
                "LLMPULSE_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'store'}",
            },
            tmp_path / "worker.log",
            web_port=web_port,
        )
        worker.start()
        worker.wait_ready()

        recorder = AckRecorder(KafkaTransport(bootstrap, KafkaOptions(request_timeout_ms=5_000)))
        emitter = Emitter(
            recorder,
            topic,
            # Enough retries to outlast the outage; each attempt bounded.
            delivery=Delivery(
                batch_size=200, retries=200, backoff_s=0.2, max_backoff_s=1.0, send_timeout_s=10.0
            ),
            limits=Limits(max_buffer=50_000),
        )
        before: list[float] = []
        n = emit_for(emitter, 5.0, 0, before)
        assert emitter.flush(timeout=60), "the emitter could not deliver with the broker up"

        kafka_cli(["stop"], broker_env)
        assert broker.status(tmp_path / "broker" / "kafka") is None
        during: list[float] = []
        sent_at_stop = emitter.sent
        outage_first = n
        n = emit_for(emitter, OUTAGE_S, n, during)
        # Buffered, counted, nothing acknowledged by a broker that is not there.
        buffered_in_outage = emitter.buffered
        assert buffered_in_outage > 0
        assert emitter.sent - sent_at_stop <= 200  # at most one batch in flight at the stop
        assert max(during) < EMIT_BOUND_S, f"emit() blocked {max(during):.3f}s"

        kafka_cli(["start", "--port", str(port)], broker_env)
        after: list[float] = []
        n = emit_for(emitter, 5.0, n, after)
        assert emitter.flush(timeout=180), "the emitter did not drain after the restart"
        emitter.close(timeout=30)
        produced, acked = n, recorder.acked
        assert emitter.sent == len(acked)

        # Every acknowledged event must reach the store: wait (bounded) for the
        # worker to get back to the broker and catch up.
        acked_set = set(acked)
        deadline = time.monotonic() + CATCH_UP_S
        stored: dict[str, int] = {}
        while time.monotonic() < deadline:
            assert worker.alive, worker.log_tail()
            try:
                _, rows = worker.sql("SELECT event_id, count() FROM traces GROUP BY event_id")
                stored = {str(r[0]): int(r[1]) for r in rows}
            except Exception:  # /sql may fail while the worker reconnects: poll on
                pass
            if acked_set <= stored.keys():
                break
            time.sleep(1.0)
        lost = sorted(acked_set - stored.keys())
        duplicated = {k: c for k, c in stored.items() if c > 1}
        outage_ids = {f"restart-{i:06d}" for i in range(outage_first, outage_first + len(during))}
        with capsys.disabled():
            print(
                f"\nbroker restart: produced={produced} acknowledged={len(acked)}"
                f" failed={emitter.failed} dropped={emitter.dropped}"
                f" buffered_during_outage={buffered_in_outage}"
                f" stored={sum(stored.values())} distinct_stored={len(stored)}"
                f" lost={len(lost)} duplicated={sum(c - 1 for c in duplicated.values())}"
                f" outage_events_stored={len(outage_ids & stored.keys())}/{len(outage_ids)}"
                f" slowest_emit_ms={max(before + during + after) * 1000:.1f}"
            )
        assert not lost, f"{len(lost)} acknowledged events not stored, e.g. {lost[:5]}\n" + (
            worker.log_tail()
        )
        assert not duplicated, f"stored more than once: {list(duplicated.items())[:5]}"
        assert emitter.dropped == 0 and emitter.failed == 0
        assert len(acked) == produced  # the outage cost no event, only delay
        assert worker.alive
    finally:
        if emitter is not None:
            emitter.close(timeout=5)
        if worker is not None:
            worker.stop()
        kafka_cli(["stop"], broker_env)
