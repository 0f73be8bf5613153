"""The topology against real Kafka: crashes, rebalances and several workers.

Each test streams the same kind of traffic a producer really sends: 5 % of the
events up to 10 s late, 2 % delivered twice (to another partition, since the
producer here keys nothing), malformed lines mixed in. The reference is a
replay of the very same lines into a store of its own. Every worker has its own
embedded store (chDB), so "the union of the workers' stores equals the replay"
proves that each row was written by exactly one worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from llmpulse.devkafka.broker import free_port
from llmpulse.devkafka.topics import ensure_topics_sync
from llmpulse.errors import LlmpulseError, StoreError
from llmpulse.synth.messy import MessyStream, messy_stream
from llmpulse.worker.process import WorkerProcess
from tests.helpers import consume_values, llmpulse, store_rows

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 4
ROOT = Path(__file__).resolve().parents[2]
WINDOWS = "[[60, 10]]"

WINDOW_ROWS = (
    "SELECT window_id, grouping, requests, errors, late_events, round(latency_p50_ms, 6), "
    "round(latency_p99_ms, 6), round(cost_usd, 9), input_tokens, output_tokens "
    "FROM window_stats WHERE toUnixTimestamp(window_end) * 1000 <= {end} ORDER BY window_id"
)


def _cli(args: list[str], env: dict[str, str], timeout: float = 300) -> str:
    return llmpulse(args, env, timeout=timeout, check=True).stdout


def common_env(tmp: Path) -> dict[str, str]:
    return {
        "LLMPULSE_WINDOWS_SPECS": WINDOWS,
        # Short on purpose: a worker that counted a restart as idleness would close
        # windows before the events still in Kafka arrive (the bug this guards).
        "LLMPULSE_WINDOWS_IDLE_TIMEOUT_S": "3",
        "LLMPULSE_DRIFT_ENABLED": "false",
        "LLMPULSE_DATA_DIR": str(tmp / "replay-data"),
    }


@pytest.fixture(scope="module")
def stream() -> MessyStream:
    return messy_stream(6000, seed=21)


def replay_reference(stream: MessyStream, tmp: Path) -> Path:
    """The replay of exactly the lines the tests send (sentinels included)."""
    path = tmp / "stream.jsonl"
    path.write_bytes(b"\n".join([*stream.lines, *stream.sentinels(PARTITIONS)]) + b"\n")
    store = tmp / "store"
    _cli(["replay", str(path), "--clickhouse", f"chdb://{store}", "--json"], common_env(tmp))
    return store


class Cluster:
    """Workers of one consumer group, each with its own store and web port."""

    def __init__(self, bootstrap: str, tmp: Path) -> None:
        self.bootstrap = bootstrap
        self.tmp = tmp
        self.topic = f"topo-{uuid.uuid4().hex[:8]}"
        ensure_topics_sync(bootstrap, {self.topic: PARTITIONS})
        self.workers: dict[str, WorkerProcess] = {}

    def worker(self, name: str, faults: dict[str, str] | None = None) -> WorkerProcess:
        """Worker ``name``; with ``faults``, run through tests/fault_worker.py with
        those environment variables (see there)."""
        if name not in self.workers:
            port = free_port()
            env = {
                **common_env(self.tmp),
                "LLMPULSE_KAFKA_BOOTSTRAP": self.bootstrap,
                "LLMPULSE_TOPICS_TRACES": self.topic,
                "LLMPULSE_TOPICS_DLQ": self.topic + ".dlq",
                "LLMPULSE_TOPICS_CONTROL": self.topic + ".control",
                "LLMPULSE_TOPICS_PARTITIONS": str(PARTITIONS),
                "LLMPULSE_WORKER_APP_ID": f"{self.topic}-app",
                "LLMPULSE_WORKER_WEB_PORT": str(port),
                "LLMPULSE_WORKER_BATCH_SIZE": "300",
                "LLMPULSE_WORKER_COMMIT_INTERVAL_S": "0.5",
                "LLMPULSE_DATA_DIR": str(self.tmp / name),
                "LLMPULSE_CLICKHOUSE_DSN": f"chdb://{self.store(name)}",
            }
            w = WorkerProcess(env, self.tmp / f"{name}.log", web_port=port)
            if faults is not None:
                w.module = "tests.fault_worker"
                w.env = {**env, **faults, "PYTHONPATH": str(ROOT)}
            self.workers[name] = w
        return self.workers[name]

    def store(self, name: str) -> Path:
        return self.tmp / name / "store"

    def start_and_feed(
        self, name: str, stream: MessyStream, *, seconds: float, ready: bool = True
    ) -> tuple[WorkerProcess, threading.Thread]:
        """Start worker ``name``, wait until it is ready (else only healthy), then
        :meth:`produce` the stream."""
        w = self.worker(name)
        w.start()
        if ready:
            w.wait_ready()
        else:
            w.wait_healthy()
        return w, self.produce(stream, seconds=seconds)

    def produce(self, stream: MessyStream, *, seconds: float) -> threading.Thread:
        """Send the stream paced over ``seconds`` (line i to partition i mod P), then
        one sentinel per partition; in the background."""
        lines, sentinels = stream.lines, stream.sentinels(PARTITIONS)

        async def go() -> None:
            p = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
            await p.start()
            try:
                chunks = 30
                size = -(-len(lines) // chunks)
                for c in range(chunks):
                    for i in range(c * size, min(len(lines), (c + 1) * size)):
                        await p.send(self.topic, lines[i], partition=i % PARTITIONS)
                    await p.flush()
                    await asyncio.sleep(seconds / chunks)
                for part, s in enumerate(sentinels):
                    await p.send(self.topic, s, partition=part)
                await p.flush()
            finally:
                await p.stop()

        t = threading.Thread(target=lambda: asyncio.run(go()), daemon=True)
        t.start()
        return t

    def stored(self, name: str) -> int:
        try:
            return self.workers[name].scalar("SELECT count() FROM traces")
        except (StoreError, OSError, LlmpulseError):
            return -1

    def stop_all(self) -> None:
        for w in self.workers.values():
            w.stop()


@pytest.fixture
def cluster(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(kafka_bootstrap, tmp_path)
    yield c
    c.stop_all()


def wait_until(condition, timeout: float, what: str, cluster: Cluster) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    logs = "\n".join(f"--- {n}\n{w.log_tail(2500)}" for n, w in cluster.workers.items())
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def settle(cluster: Cluster, names: list[str], total: int) -> None:
    """Wait until the live workers together hold every event and their windows stop changing."""

    def union() -> int:
        return sum(max(cluster.stored(n), 0) for n in names)

    wait_until(lambda: union() == total, 180, f"{total} traces in {names}", cluster)
    last, since = None, time.monotonic()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = [cluster.workers[n].scalar("SELECT count() FROM window_stats") for n in names]
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 5:
            return
        time.sleep(0.5)
    raise AssertionError("window_stats kept changing")


def assert_union_equals_replay(
    cluster: Cluster, names: list[str], reference: Path, stream: MessyStream
) -> None:
    """Every table's rows, taken over all workers' stores, equal the replay's: nothing
    lost, nothing written twice, nothing written by two workers."""
    expected = store_rows(reference, WINDOW_ROWS.format(end=stream.end_ms))
    # Give the live workers time to close every window (an iteration can hold them
    # for seconds on a loaded machine); a wrong result still fails below.
    count = f"SELECT count() FROM ({WINDOW_ROWS.format(end=stream.end_ms)})"
    stopped = sum(
        int(str(store_rows(cluster.store(n), count)[0][0]))
        for n in names
        if not cluster.workers[n].alive
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        live = sum(cluster.workers[n].scalar(count) for n in names if cluster.workers[n].alive)
        if stopped + live >= len(expected):
            break
        time.sleep(1)
    cluster.stop_all()
    total = stream.unique_events + PARTITIONS
    ids: list[object] = []
    windows: list[list[object]] = []
    rejected: list[object] = []
    for n in names:
        ids += [r[0] for r in store_rows(cluster.store(n), "SELECT event_id FROM traces")]
        windows += store_rows(cluster.store(n), WINDOW_ROWS.format(end=stream.end_ms))
        rejected += [
            r[0] for r in store_rows(cluster.store(n), "SELECT rejection_id FROM rejected_events")
        ]
    assert len(ids) == len(set(ids)) == total
    assert len(rejected) == len(set(rejected)) == stream.malformed
    assert len(expected) > 200
    got_ids = [w[0] for w in windows]
    assert len(got_ids) == len(set(got_ids)), "a window was written twice"
    assert sorted(windows, key=lambda w: str(w[0])) == expected


def test_killed_worker_restarts_with_windows_equal_to_a_replay(
    cluster: Cluster, stream: MessyStream, reference: Path
) -> None:
    """SIGKILL once a third is stored, a pause longer than the idle timeout, restart:
    the windows equal the replay's, late events and duplicates around the kill included."""
    total = stream.unique_events + PARTITIONS
    w, producer = cluster.start_and_feed("a", stream, seconds=12, ready=False)
    wait_until(lambda: cluster.stored("a") >= total // 3, 120, "a third stored", cluster)
    w.stop(signal.SIGKILL)
    time.sleep(5)
    w.start()
    w.wait_ready()  # its restore (undoing uncommitted rows) done
    producer.join(60)
    settle(cluster, ["a"], total)
    assert_union_equals_replay(cluster, ["a"], reference, stream)


def test_two_workers_one_stopped_mid_stream_equal_one_run(
    cluster: Cluster, stream: MessyStream, reference: Path
) -> None:
    """A second worker joins mid-stream (state moves to it), then the first is stopped
    with SIGTERM (all state moves): together they hold exactly the replay's rows."""
    total = stream.unique_events + PARTITIONS
    a, b = cluster.worker("a"), cluster.worker("b")
    a.start()
    a.wait_healthy()
    producer = cluster.produce(stream, seconds=15)
    wait_until(lambda: cluster.stored("a") >= total // 5, 120, "a fifth stored", cluster)
    b.start()
    wait_until(
        lambda: cluster.stored("a") + cluster.stored("b") >= total // 2, 120, "half", cluster
    )
    a.stop(signal.SIGTERM)
    producer.join(60)
    settle(cluster, ["b"], total - store_count(cluster.store("a")))
    assert_union_equals_replay(cluster, ["a", "b"], reference, stream)


def test_two_workers_one_killed_mid_stream_equal_one_run(
    cluster: Cluster, stream: MessyStream, reference: Path
) -> None:
    """Two workers; one is SIGKILLed mid-stream, the other takes its partitions; the
    killed one comes back later (and undoes what it wrote but never committed)."""
    total = stream.unique_events + PARTITIONS
    a, b = cluster.worker("a"), cluster.worker("b")
    a.start()
    b.start()
    a.wait_healthy()
    b.wait_healthy()
    producer = cluster.produce(stream, seconds=15)
    wait_until(
        lambda: cluster.stored("a") + cluster.stored("b") >= total // 3, 120, "a third", cluster
    )
    a.stop(signal.SIGKILL)
    wait_until(lambda: cluster.stored("b") >= total // 2, 120, "b going on alone", cluster)
    a.start()
    a.wait_ready()  # its restore (undoing uncommitted rows) done
    producer.join(60)
    settle(cluster, ["a", "b"], total)
    assert_union_equals_replay(cluster, ["a", "b"], reference, stream)


def store_count(store: Path) -> int:
    return int(store_rows(store, "SELECT count() FROM traces")[0][0])  # type: ignore[call-overload]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()


def metric(worker: WorkerProcess, name: str) -> float:
    """The value of an unlabelled sample of /metrics."""
    _, body = _get(worker.url + "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_store_outage_of_30s_pauses_then_catches_up_exactly(
    cluster: Cluster, stream: MessyStream, reference: Path
) -> None:
    """The store refuses every write for 30 s while events flow (injected at the store
    client seam: chDB runs in the worker's process and cannot be stopped from
    outside). The worker stays up and in its group, reports the outage on /ready,
    /health and /metrics, stores nothing meanwhile, then catches up: every table
    equals the replay, so nothing was lost and nothing doubled."""
    total = stream.unique_events + PARTITIONS
    down = cluster.tmp / "store-down"
    w = cluster.worker("a", faults={"LLMPULSE_TEST_STORE_DOWN": str(down)})
    w.start()
    w.wait_ready()
    producer = cluster.produce(stream, seconds=20)
    wait_until(lambda: cluster.stored("a") >= total // 4, 120, "a quarter stored", cluster)
    down.touch()
    wait_until(lambda: not w.health()["store_ok"], 60, "the outage noticed", cluster)
    stored_at_start = cluster.stored("a")
    partitions = w.health()["partitions"]
    outage_end = time.monotonic() + 30
    while time.monotonic() < outage_end:
        assert w.alive, w.log_tail()
        health = w.health()
        assert health["status"] == "ok" and health["store_ok"] is False, health
        assert "ConnectionRefusedError" in health["store_error"]
        assert health["partitions"] == partitions  # still in the group, nothing revoked
        assert _get(w.url + "/ready")[0] == 503
        assert metric(w, "llmpulse_store_up") == 0
        # Reads still answer; nothing more is stored while writes fail.
        assert cluster.stored("a") == stored_at_start
        time.sleep(1)
    assert metric(w, "llmpulse_store_errors_total") >= 3  # retried with backoff
    assert health["store_outage_s"] >= 25
    down.unlink()
    producer.join(60)
    wait_until(lambda: _get(w.url + "/ready")[0] == 200, 90, "ready again", cluster)
    assert metric(w, "llmpulse_store_up") == 1
    settle(cluster, ["a"], total)
    assert "gave up" not in w.log_file.read_text()  # never left the group
    assert_union_equals_replay(cluster, ["a"], reference, stream)


def test_sigterm_mid_batch_exits_0_and_the_next_start_resumes_exactly(
    cluster: Cluster, stream: MessyStream, reference: Path
) -> None:
    """SIGTERM while events flow: the worker finishes its batch, checkpoints,
    commits and exits 0; a new start goes on from there."""
    total = stream.unique_events + PARTITIONS
    w, producer = cluster.start_and_feed("a", stream, seconds=10)
    wait_until(lambda: cluster.stored("a") >= total // 4, 120, "a quarter stored", cluster)
    assert w.proc is not None
    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(30) == 0, w.log_tail()
    stored = int(str(store_rows(cluster.store("a"), "SELECT count() FROM traces")[0][0]))
    assert total // 4 <= stored < total, "the SIGTERM landed mid-stream"
    w.start()
    producer.join(60)
    settle(cluster, ["a"], total)
    assert_union_equals_replay(cluster, ["a"], reference, stream)


def test_poison_events_go_to_the_dlq_with_the_step_named_and_the_partition_goes_on(
    cluster: Cluster, stream: MessyStream
) -> None:
    """Valid events that break the cost step every time (injected through
    tests/fault_worker.py) are retried, then set aside to rejected_events and the
    DLQ with the step named; the events around them are all stored, once."""
    total = stream.unique_events + PARTITIONS
    w = cluster.worker("a", faults={"LLMPULSE_TEST_POISON": "poison-"})
    w.start()
    w.wait_ready()
    base = orjson.loads(stream.lines[0])
    poison = [
        orjson.dumps({**base, "event_id": f"poison-{i}", "timestamp": base["timestamp"] + i})
        for i in range(3)
    ]
    lines = list(stream.lines)
    for i, p in enumerate(poison):  # spread over the stream (and its partitions)
        lines.insert((i + 1) * len(lines) // 4, p)
    producer = cluster.produce(dataclasses.replace(stream, lines=lines), seconds=5)
    producer.join(60)
    settle(cluster, ["a"], total)
    assert w.alive
    assert w.scalar("SELECT uniqExact(event_id) FROM traces") == total
    assert w.scalar("SELECT count() FROM traces WHERE startsWith(event_id, 'poison-')") == 0
    _, rows = w.sql(
        "SELECT event_id, field, reason FROM rejected_events "
        "WHERE category = 'traces:poison' ORDER BY event_id"
    )
    assert [r[0] for r in rows] == ["poison-0", "poison-1", "poison-2"]
    assert all(r[1] == "traces" and "step 'traces' failed" in r[2] for r in rows), rows
    assert all("ArithmeticError" in r[2] for r in rows)
    dlq = consume_values(cluster.bootstrap, cluster.topic + ".dlq", len(poison) + stream.malformed)
    assert sum(b'"poison-' in m for m in dlq) == len(poison)
    # The pipeline's own vital signs on /metrics.
    body = _get(w.url + "/metrics")[1].decode()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['llmpulse_rejected_events_total{field="traces"}'] == len(poison)
    assert samples['llmpulse_events_total{outcome="accepted"}'] == total
    assert samples['llmpulse_active_series{grouping="model"}'] > 0
    assert any(k.startswith("llmpulse_consumer_lag{") for k in samples)
    assert samples["llmpulse_store_write_seconds_count"] > 0
