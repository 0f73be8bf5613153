"""End-to-end benchmark of the whole path, as ratios to baselines taken in the same run.

For each kind of traffic (lean events; rich events with text and 384-dim
embeddings; high cardinality with 20,000 tenants) the same file is:

* inserted by ClickHouse itself (``CREATE TABLE ... ENGINE = MergeTree ORDER BY
  tuple() AS SELECT * FROM file(..., JSONEachRow)``), the engine floor;
* replayed (``llmpulse replay``, every stage);
* produced to Kafka as a backlog and drained by one ``llmpulse worker``, and
  again by two workers in one consumer group, each with its own store.

Every engine and worker runs in a process of its own (a chDB store per
process). Freshness is measured on a paced stream: the time from the produce
call to the moment the row answers a query through the worker's ``/sql``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from llmpulse.devkafka.broker import free_port
from llmpulse.devkafka.topics import ensure_topics_sync
from llmpulse.synth.traffic import TrafficConfig, TrafficGenerator
from llmpulse.worker.process import WorkerProcess

Say = Callable[[str], None]
START_MS = 1_767_225_600_000


@dataclass(frozen=True)
class Dataset:
    name: str
    events: int
    make: Callable[[int], Iterator[dict[str, Any]]]


def lean(n: int) -> Iterator[dict[str, Any]]:
    gen = TrafficGenerator(
        TrafficConfig(include_text=False, scores=False), seed=1, start_ms=START_MS,
        rate_per_s=200.0,
    )  # fmt: skip
    for e in gen.events(n):
        e.pop("attributes", None)
        yield e


def rich(n: int) -> Iterator[dict[str, Any]]:
    cfg = TrafficConfig(include_text=True, embeddings=True, embedding_dim=384)
    yield from TrafficGenerator(cfg, seed=2, start_ms=START_MS, rate_per_s=200.0).events(n)


def high_cardinality(
    n: int, *, endpoints: int = 30_000, tenants: int = 20_000
) -> Iterator[dict[str, Any]]:
    """n events over 20 minutes carrying ``endpoints`` endpoints and ``tenants`` tenants
    (a B2B product with many tenants, or a user id leaking into ``endpoint``)."""
    rng = random.Random(3)
    gen = TrafficGenerator(
        TrafficConfig(include_text=False, scores=False), seed=3, start_ms=START_MS,
        rate_per_s=n / 1200.0,
    )  # fmt: skip
    ep = [f"/v1/items/{i}" for i in range(endpoints)]
    tn = [f"tenant-{i:05d}" for i in range(tenants)]
    rng.shuffle(ep)
    rng.shuffle(tn)
    for i, e in enumerate(gen.events(n)):
        e["endpoint"] = ep[i % endpoints]
        e["tenant"] = tn[i % tenants]
        e.pop("attributes", None)
        yield e


DATASETS = {
    "lean": Dataset("lean events", 200_000, lean),
    "rich": Dataset("rich events (text, 384-dim embeddings)", 20_000, rich),
    "cardinality": Dataset("high cardinality (20,000 tenants)", 60_000, high_cardinality),
}


@dataclass
class Row:
    dataset: str
    events: int
    floor: float = math.nan
    replay: float = math.nan
    worker: float = math.nan
    workers2: float = math.nan
    replay_rss_mib: float = math.nan
    series: int = 0

    def cells(self) -> list[str]:
        def rate(x: float) -> str:
            return "-" if math.isnan(x) else f"{x:,.0f}"

        def ratio(a: float, b: float) -> str:
            return "-" if math.isnan(a) or math.isnan(b) or not b else f"{a / b:.2f}"

        return [
            self.dataset,
            f"{self.events:,}",
            rate(self.floor),
            rate(self.replay),
            rate(self.worker),
            rate(self.workers2),
            ratio(self.replay, self.floor),
            ratio(self.worker, self.replay),
            ratio(self.workers2, self.worker),
        ]


HEADERS = [
    "traffic",
    "events",
    "engine floor /s",
    "replay /s",
    "1 worker /s",
    "2 workers /s",
    "replay / floor",
    "worker / replay",
    "2 workers / 1",
]


@dataclass
class PipelineBenchResult:
    rows: list[Row] = field(default_factory=list)
    freshness_events: int = 0
    freshness_ms: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    memory_per_series_kib: float = math.nan
    notes: list[str] = field(default_factory=list)

    def table(self) -> tuple[list[str], list[list[str]]]:
        return HEADERS, [r.cells() for r in self.rows]


def write_file(path: Path, events: Iterator[dict[str, Any]]) -> int:
    n = 0
    with path.open("wb") as f:
        for e in events:
            f.write(orjson.dumps(e))
            f.write(b"\n")
            n += 1
    return n


def _run(python: str, args: list[str], env: dict[str, str], timeout: float = 1800) -> str:
    proc = subprocess.run(
        [python, *args], env={**os.environ, **env}, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{args[:4]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout


_FLOOR = """
import sys, time, clickhouse_connect
c = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[2])
t0 = time.perf_counter()
c.command("CREATE TABLE floor ENGINE = MergeTree ORDER BY tuple() AS "
          "SELECT * FROM file('" + sys.argv[1] + "', JSONEachRow)")
dt = time.perf_counter() - t0
print(int(c.command("SELECT count() FROM floor")) / dt)
"""


def engine_floor(python: str, path: Path, work: Path) -> float:
    """Rows/s of ClickHouse's own JSONEachRow reader inserting the file (fresh store)."""
    out = _run(python, ["-c", _FLOOR, str(path), str(work / f"floor-{uuid.uuid4().hex[:6]}")], {})
    return float(out.strip().splitlines()[-1])


def replay_rate(python: str, path: Path, work: Path, env: dict[str, str]) -> tuple[float, float]:
    """(events/s, peak RSS MiB) of ``llmpulse replay`` of the file into a fresh store."""
    store = work / f"replay-{uuid.uuid4().hex[:6]}"
    out = _run(
        python,
        ["-m", "llmpulse", "replay", str(path), "--clickhouse", f"chdb://{store}", "--json"],
        {**env, "LLMPULSE_DATA_DIR": str(store) + "-data"},
    )
    summary = json.loads(out[out.index("{") :])
    return float(summary["events_per_second"]), float(summary.get("peak_rss_mib", math.nan))


async def _produce(bootstrap: str, topic: str, lines: list[bytes]) -> None:
    p = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024,
        max_request_size=16 * 1024 * 1024,
    )  # fmt: skip
    await p.start()
    try:
        futures = [await p.send(topic, v) for v in lines]  # unkeyed, as many producers
        await asyncio.gather(*futures)
    finally:
        await p.stop()


def _worker_env(
    bootstrap: str, topic: str, app: str, work: Path, name: str, port: int
) -> dict[str, str]:
    return {
        "LLMPULSE_KAFKA_BOOTSTRAP": bootstrap,
        "LLMPULSE_TOPICS_TRACES": topic,
        "LLMPULSE_TOPICS_DLQ": topic + ".dlq",
        "LLMPULSE_TOPICS_CONTROL": topic + ".control",
        "LLMPULSE_WORKER_APP_ID": app,
        "LLMPULSE_WORKER_WEB_PORT": str(port),
        "LLMPULSE_DATA_DIR": str(work / name / "data"),
        "LLMPULSE_CLICKHOUSE_DSN": f"chdb://{work / name / 'store'}",
    }


def _count(workers: list[WorkerProcess]) -> int:
    total = 0
    for w in workers:
        try:
            total += w.scalar("SELECT count() FROM traces")
        except Exception:
            return -1
    return total


def worker_rate(
    python: str,
    bootstrap: str,
    lines: list[bytes],
    expected: int,
    work: Path,
    *,
    workers: int,
    partitions: int,
    say: Say,
) -> float:
    """Events/s of ``workers`` worker processes draining a backlog of ``lines``,
    measured once every worker owns partitions, until all rows are stored."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    ensure_topics_sync(bootstrap, {topic: partitions})
    asyncio.run(_produce(bootstrap, topic, lines))
    procs = []
    for i in range(workers):
        port = free_port()
        env = _worker_env(bootstrap, topic, topic, work / topic, f"w{i}", port)
        w = WorkerProcess(env, work / topic / f"w{i}.log", web_port=port)
        w.python = python
        procs.append(w)
    try:
        for w in procs:
            w.start()
        for w in procs:
            w.wait_healthy(180)
        # Timing starts once every worker owns partitions (start-up and the first
        # rebalance are not throughput).
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if all(w.health().get("partitions", 1) for w in procs):
                break
            time.sleep(0.1)
        start_count, t0 = _count(procs), time.perf_counter()
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            n = _count(procs)
            if n >= expected:
                break
            time.sleep(0.1)
        else:
            raise TimeoutError(f"workers stored {n} of {expected} events")
        # Not done when the traces are stored: the keyed hop still has windows,
        # budgets, drift and alerts to compute and write (a replay's time includes
        # them). Done once nothing is left to consume and the windows stop changing.
        _wait_drained(procs, deadline)
        elapsed = time.perf_counter() - t0
        done = expected - max(start_count, 0)
        say(f"  {workers} worker(s): {done:,} events in {elapsed:.1f}s")
        return done / elapsed if elapsed > 0 else math.nan
    finally:
        for w in procs:
            w.stop()


def _wait_drained(workers: list[WorkerProcess], deadline: float) -> None:
    last: list[int] | None = None
    while time.monotonic() < deadline:
        lag = sum(int(w.health().get("lag", 0)) for w in workers)
        windows = [w.scalar("SELECT count() FROM window_stats") for w in workers]
        if lag == 0 and windows == last:
            return
        last = windows
        time.sleep(0.5)
    raise TimeoutError("workers did not drain their repartition topics")


async def _paced(bootstrap: str, topic: str, lines: list[bytes], rate: float) -> dict[str, float]:
    sent: dict[str, float] = {}
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await p.start()
    try:
        t0 = time.monotonic()
        for i, v in enumerate(lines):
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            await p.send(topic, v)
            sent[orjson.loads(v)["event_id"]] = time.monotonic()
        await p.flush()
    finally:
        await p.stop()
    return sent


def freshness(
    python: str, bootstrap: str, work: Path, *, events: int, rate: float, partitions: int
) -> tuple[float, float, float]:
    """p50, p99 and max ms from the produce call to the row answering a query."""
    topic = f"fresh-{uuid.uuid4().hex[:8]}"
    ensure_topics_sync(bootstrap, {topic: partitions})
    port = free_port()
    w = WorkerProcess(
        _worker_env(bootstrap, topic, topic, work / topic, "w", port), work / topic / "w.log",
        web_port=port,
    )  # fmt: skip
    w.python = python
    now_ms = int(time.time() * 1000)
    lines = []
    for i, e in enumerate(lean(events)):
        e["event_id"] = f"fresh-{i}"
        e["timestamp"] = now_ms + int(i * 1000 / rate)
        lines.append(orjson.dumps(e))
    seen: dict[str, float] = {}
    w.start()
    try:
        w.wait_ready(180)
        box: dict[str, dict[str, float]] = {}

        def produce() -> None:
            box["sent"] = asyncio.run(_paced(bootstrap, topic, lines, rate))

        import threading

        t = threading.Thread(target=produce)
        t.start()
        deadline = time.monotonic() + events / rate + 120
        while len(seen) < events and time.monotonic() < deadline:
            _, rows = w.sql("SELECT event_id FROM traces")
            now = time.monotonic()
            for (eid,) in rows:
                seen.setdefault(str(eid), now)
            time.sleep(0.05)
        t.join()
    finally:
        w.stop()
    sent = box["sent"]
    lat = sorted((seen[k] - sent[k]) * 1000 for k in sent if k in seen)
    if not lat:
        return (math.nan, math.nan, math.nan)
    return lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))], lat[-1]


def run_pipeline_bench(
    bootstrap: str,
    work: Path,
    *,
    datasets: list[str] | None = None,
    scale: float = 1.0,
    partitions: int = 6,
    python: str = sys.executable,
    fresh_events: int = 2000,
    fresh_rate: float = 500.0,
    workers: bool = True,
    say: Say = print,
) -> PipelineBenchResult:
    result = PipelineBenchResult()
    for key in datasets or list(DATASETS):
        ds = DATASETS[key]
        n = max(100, int(ds.events * scale))
        path = work / f"{key}.jsonl"
        say(f"{ds.name}: generating {n:,} events...")
        write_file(path, ds.make(n))
        row = Row(ds.name, n)
        say("  engine floor (ClickHouse's JSONEachRow insert)...")
        row.floor = engine_floor(python, path, work)
        say("  replay...")
        row.replay, row.replay_rss_mib = replay_rate(python, path, work, {})
        if workers:
            lines = path.read_bytes().splitlines()
            for count in (1, 2):
                rate = worker_rate(
                    python, bootstrap, lines, n, work, workers=count, partitions=partitions,
                    say=say,
                )  # fmt: skip
                if count == 1:
                    row.worker = rate
                else:
                    row.workers2 = rate
        result.rows.append(row)
    by_name = {r.dataset: r for r in result.rows}
    low, high = by_name.get(DATASETS["lean"].name), by_name.get(DATASETS["cardinality"].name)
    if low is not None and high is not None:
        # Series held at once: every endpoint and tenant, once per window grouping
        # that contains it, over the two window specs.
        series = 2 * (30_000 + 20_000)
        extra = high.replay_rss_mib - low.replay_rss_mib
        result.memory_per_series_kib = extra * 1024 / series
        result.notes.append(
            f"replay peak RSS: {low.replay_rss_mib:,.0f} MiB (lean) vs "
            f"{high.replay_rss_mib:,.0f} MiB (high cardinality, {series:,} series x spec)"
        )
    if workers and fresh_events:
        say(f"freshness: {fresh_events} events paced at {fresh_rate:.0f}/s...")
        result.freshness_events = fresh_events
        result.freshness_ms = freshness(
            python, bootstrap, work, events=fresh_events, rate=fresh_rate, partitions=partitions
        )
    return result
