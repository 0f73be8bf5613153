"""End-to-end benchmark: emit -> Kafka -> worker -> ClickHouse, against raw
aiokafka consumption of the same messages in the same run as the ceiling.

Throughput is measured on a backlog (all events produced first), so the worker
runs flat out; freshness is measured on a second, paced stream whose events
carry their produce time as event time.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from llmpulse.devkafka.broker import free_port
from llmpulse.devkafka.topics import ensure_topics_sync
from llmpulse.ingest.emitter import encode_event, series_key
from llmpulse.synth.traffic import TrafficConfig, TrafficGenerator
from llmpulse.worker.process import WorkerProcess

Say = Callable[[str], None]


@dataclass(frozen=True)
class PipelineBenchResult:
    events: int
    partitions: int
    produce_events_per_s: float
    raw_consume_events_per_s: float
    pipeline_events_per_s: float
    freshness_events: int
    freshness_p50_ms: float
    freshness_p99_ms: float
    freshness_max_ms: float

    @property
    def ratio(self) -> float:
        return self.pipeline_events_per_s / self.raw_consume_events_per_s

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("events (backlog)", f"{self.events:,} over {self.partitions} partitions"),
            ("producer (aiokafka)", f"{self.produce_events_per_s:,.0f} events/s"),
            ("raw consume (aiokafka, ceiling)", f"{self.raw_consume_events_per_s:,.0f} events/s"),
            ("llmpulse worker -> ClickHouse", f"{self.pipeline_events_per_s:,.0f} events/s"),
            ("ratio worker / raw consume", f"{self.ratio:.3f}"),
            (
                f"freshness produce -> row written ({self.freshness_events} paced events)",
                f"p50 {self.freshness_p50_ms:,.0f} ms, p99 {self.freshness_p99_ms:,.0f} ms, "
                f"max {self.freshness_max_ms:,.0f} ms",
            ),
        ]


def _payloads(n: int, seed: int, start_ms: int) -> list[tuple[bytes, bytes]]:
    gen = TrafficGenerator(
        TrafficConfig(include_text=False), seed=seed, start_ms=start_ms, rate_per_s=2000.0
    )
    out: list[tuple[bytes, bytes]] = []
    for e in gen.events(n):
        e["event_id"] = f"bench-{seed}-{len(out)}"
        out.append((series_key(e), encode_event(e)))
    return out


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=256 * 1024)
    await p.start()
    try:
        t0 = time.perf_counter()
        futures = [await p.send(topic, v, key=k) for k, v in records]
        await asyncio.gather(*futures)
        return len(records) / (time.perf_counter() - t0)
    finally:
        await p.stop()


async def _raw_consume(bootstrap: str, topic: str, n: int, timeout: float = 300.0) -> float:
    c = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"llmpulse-bench-raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await c.start()
    try:
        got = 0
        t0 = None
        deadline = time.monotonic() + timeout
        while got < n and time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=500, max_records=10_000)
            for msgs in batch.values():
                if msgs and t0 is None:
                    t0 = time.perf_counter()
                got += len(msgs)
        if t0 is None or got < n:
            raise TimeoutError(f"raw consumer read {got} of {n} messages")
        return n / (time.perf_counter() - t0)
    finally:
        await c.stop()


async def _produce_paced(bootstrap: str, topic: str, n: int, rate: float, seed: int) -> None:
    gen = TrafficGenerator(
        TrafficConfig(include_text=False), seed=seed + 1, start_ms=0, rate_per_s=rate
    )
    template = list(gen.events(n))
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await p.start()
    try:
        t0 = time.monotonic()
        for i, e in enumerate(template):
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            e["event_id"] = f"fresh-{seed}-{i}"
            e["timestamp"] = int(time.time() * 1000)
            await p.send(topic, encode_event(e), key=series_key(e))
        await p.flush()
    finally:
        await p.stop()


def run_pipeline_bench(
    bootstrap: str,
    work_dir: Path,
    *,
    events: int = 200_000,
    partitions: int = 6,
    batch_size: int = 5000,
    fresh_events: int = 2000,
    fresh_rate: float = 500.0,
    seed: int = 1,
    say: Say = print,
) -> PipelineBenchResult:
    topic = f"llmpulse-bench-{uuid.uuid4().hex[:8]}"
    ensure_topics_sync(bootstrap, {topic: partitions, topic + ".dlq": 1})
    say(f"generating {events:,} events...")
    records = _payloads(events, seed, start_ms=int(time.time() * 1000) - 3_600_000)
    say(f"producing them to {topic}...")
    produce_rate = asyncio.run(_produce(bootstrap, topic, records))
    say("raw aiokafka consumption (ceiling)...")
    raw_rate = asyncio.run(_raw_consume(bootstrap, topic, events))

    port = free_port()
    worker = WorkerProcess(
        {
            "LLMPULSE_KAFKA_BOOTSTRAP": bootstrap,
            "LLMPULSE_TOPICS_TRACES": topic,
            "LLMPULSE_TOPICS_DLQ": topic + ".dlq",
            "LLMPULSE_TOPICS_CONTROL": topic + ".control",
            "LLMPULSE_WORKER_APP_ID": topic,
            "LLMPULSE_WORKER_WEB_PORT": str(port),
            "LLMPULSE_WORKER_BATCH_SIZE": str(batch_size),
            "LLMPULSE_DATA_DIR": str(work_dir / "data"),
            "LLMPULSE_CLICKHOUSE_DSN": f"chdb://{work_dir / 'store'}",
        },
        work_dir / "worker.log",
        web_port=port,
    )
    worker.start()
    try:
        worker.wait_healthy()
        say("worker draining the backlog...")
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            count = worker.scalar("SELECT count() FROM traces")
            now = time.perf_counter()
            if count and first is None:
                first = (now, count)
            if count >= events:
                break
            time.sleep(0.25)
        else:
            raise TimeoutError(f"worker stored {count} of {events} events")
        assert first is not None
        pipeline_rate = (events - first[1]) / max(now - first[0], 1e-9)

        say(f"freshness: {fresh_events} events paced at {fresh_rate:.0f}/s...")
        asyncio.run(_produce_paced(bootstrap, topic, fresh_events, fresh_rate, seed))
        worker.wait_for("SELECT count() FROM traces", events + fresh_events, timeout=120)
        _, rows = worker.sql(
            "SELECT quantileExact(0.5)(d), quantileExact(0.99)(d), max(d) FROM ("
            "SELECT dateDiff('millisecond', timestamp, ingested_at) AS d FROM traces "
            "WHERE startsWith(event_id, 'fresh-'))"
        )
        p50, p99, worst = (float(v) for v in rows[0])
    finally:
        worker.stop()
    return PipelineBenchResult(
        events, partitions, produce_rate, raw_rate, pipeline_rate, fresh_events, p50, p99, worst
    )
