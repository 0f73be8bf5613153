"""End to end against a real Kafka broker: producer -> worker process -> chDB store."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llmpulse.devkafka.topics import ensure_topics_sync
from llmpulse.errors import StoreError
from llmpulse.worker.process import WorkerProcess
from tests import helpers
from tests.helpers import event, raw

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture
def worker_env(kafka_bootstrap: str, tmp_path: Path) -> dict[str, str]:
    topic = f"traces-{uuid.uuid4().hex[:8]}"
    ensure_topics_sync(kafka_bootstrap, {topic: 3, topic + ".dlq": 1})
    return helpers.worker_env(
        kafka_bootstrap,
        topic,
        tmp_path,
        partitions=3,
        app_id=f"llmpulse-test-{topic}",
        worker_batch_size=50,
        worker_flush_interval_s=0.2,
    )


@pytest.fixture
def worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcess]:
    w = helpers.worker_process(worker_env, tmp_path / "worker.log")
    w.start()
    yield w
    w.stop()


def produce(
    bootstrap: str, topic: str, payloads: list[bytes], keyed: Callable[[int], bytes]
) -> None:
    helpers.produce(bootstrap, topic, payloads, [keyed(i) for i in range(len(payloads))])


def payloads(n_valid: int, n_invalid: int, offset: int = 0) -> list[bytes]:
    good = [raw(event(offset + i)) for i in range(n_valid)]
    bad = [raw(event(10_000 + offset + i, latency_ms=-(i + 1))) for i in range(n_invalid)]
    bad[:1] = [b"definitely not json"] if n_invalid else []
    return good + bad


def test_valid_invalid_and_redelivered_events(
    worker: WorkerProcess, worker_env: dict[str, str]
) -> None:
    bootstrap, topic = worker_env["LLMPULSE_KAFKA_BOOTSTRAP"], worker_env["LLMPULSE_TOPICS_TRACES"]
    n, m = 300, 12
    batch = payloads(n, m)
    produce(bootstrap, topic, batch, lambda i: f"k{i % 7}".encode())
    worker.wait_for("SELECT count() FROM traces", n)
    worker.wait_for("SELECT count() FROM rejected_events", m)
    dlq = helpers.consume_values(bootstrap, worker_env["LLMPULSE_TOPICS_DLQ"], m)
    assert sorted(dlq) == sorted(batch[n:])

    # The same events delivered a second time: still exactly N rows.
    produce(bootstrap, topic, batch, lambda i: f"k{i % 7}".encode())
    deadline = time.monotonic() + 60
    while worker.health()["duplicates"] < n and time.monotonic() < deadline:
        time.sleep(0.3)
    assert worker.health()["duplicates"] == n
    assert worker.scalar("SELECT count() FROM traces") == n
    assert worker.scalar("SELECT uniqExact(event_id) FROM traces") == n

    # An analyst's query while the worker owns the embedded store goes through its endpoint.
    proc = helpers.llmpulse(
        ["sql", "SELECT count() AS n FROM traces", "-f", "json"], worker_env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"n": n}]


def test_killed_worker_restarts_without_loss_or_duplicates(
    worker: WorkerProcess, worker_env: dict[str, str]
) -> None:
    bootstrap, topic = worker_env["LLMPULSE_KAFKA_BOOTSTRAP"], worker_env["LLMPULSE_TOPICS_TRACES"]
    produce(bootstrap, topic, payloads(400, 0), lambda i: f"k{i % 5}".encode())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if worker.scalar("SELECT count() FROM traces") > 0:
                break
        except StoreError:
            pass
        time.sleep(0.2)
    worker.stop(signal.SIGKILL)  # no clean shutdown: uncommitted offsets are redelivered
    produce(bootstrap, topic, payloads(400, 0, offset=400), lambda i: f"k{i % 5}".encode())
    worker.start()
    worker.wait_ready()  # its restore (undoing uncommitted rows) done
    worker.wait_for("SELECT count() FROM traces", 800)
    time.sleep(2)  # any redelivery still in flight would show up now
    assert worker.scalar("SELECT count() FROM traces") == 800
    assert worker.scalar("SELECT uniqExact(event_id) FROM traces") == 800


def _cli(
    args: list[str], env: dict[str, str], timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return helpers.llmpulse(args, env, timeout=timeout)


def test_demo_stores_synthetic_traffic(worker_env: dict[str, str]) -> None:
    proc = _cli(["demo", "--duration", "12", "--rate", "50"], worker_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "traces stored" in proc.stdout and "demo stopped" in proc.stdout
    q = "SELECT count() AS n, uniqExact(service) AS services FROM traces"
    result = json.loads(_cli(["sql", q, "-f", "json"], worker_env).stdout)[0]
    assert result["n"] > 300 and result["services"] >= 3
    rejected = json.loads(
        _cli(["sql", "SELECT count() AS n FROM rejected_events", "-f", "json"], worker_env).stdout
    )
    assert rejected == [{"n": 5}]


def test_bench_pipeline_prints_its_figures(worker_env: dict[str, str]) -> None:
    proc = _cli(
        ["bench", "pipeline", "--traffic", "lean", "--scale", "0.01", "--fresh-events", "100"],
        {**worker_env, "COLUMNS": "250"},  # one table line per row
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for measure in ("engine floor", "replay", "1 worker", "2 workers", "worker / replay", "p99"):
        assert measure in proc.stdout


def _window_snapshot(w: WorkerProcess, before_ms: int) -> list[tuple[object, ...]]:
    return w.sql(
        "SELECT window_id, requests, errors, late_events, round(latency_p50_ms, 6), "
        "round(latency_p99_ms, 6), round(cost_usd, 9), input_tokens, output_tokens "
        f"FROM window_stats WHERE toUnixTimestamp(window_end) * 1000 <= {before_ms} "
        "ORDER BY window_id"
    )[1]


def _wait_stable(w: WorkerProcess, query: str, timeout: float = 90.0) -> int:
    """``query``'s value once nothing is left to consume and it stopped changing (the
    windows follow the traces by an iteration or two, longer on a loaded machine)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        value = w.scalar(query)
        if w.health()["lag"] or value != last:
            last, since = value, time.monotonic()
        elif time.monotonic() - since > 4:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{query} kept changing")


def test_window_stats_after_a_crash_equal_an_uninterrupted_run(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Same topic, two consumer groups and stores: one worker runs through, the other
    is killed with SIGKILL mid-stream and restarted. Their window_stats are equal."""

    from llmpulse.client import encode_event
    from llmpulse.synth.traffic import TrafficConfig, TrafficGenerator

    topic = f"win-{uuid.uuid4().hex[:8]}"
    partitions = 3
    ensure_topics_sync(kafka_bootstrap, {topic: partitions, topic + ".dlq": 1})
    start_ms = 1_767_225_600_000
    gen = TrafficGenerator(
        TrafficConfig(include_text=False), seed=11, start_ms=start_ms, rate_per_s=40.0
    )
    events = list(gen.events(6000))
    end_ms = max(e["timestamp"] for e in events)
    sentinel_ms = end_ms + 3_600_000  # pushes every partition's watermark past the data

    sentinels = [
        dict(events[0], event_id=f"sentinel-{part}", timestamp=sentinel_ms)
        for part in range(partitions)
    ]
    # Round robin: event i on partition i % 3, sentinel p on partition p.
    helpers.produce(
        kafka_bootstrap, topic, [encode_event(e) for e in events], partitions=partitions
    )
    helpers.produce(
        kafka_bootstrap, topic, [encode_event(s) for s in sentinels], partitions=partitions
    )
    total = len(events) + partitions

    def worker(name: str) -> WorkerProcess:
        env = helpers.worker_env(
            kafka_bootstrap,
            topic,
            tmp_path,
            app_id=f"{topic}-{name}",
            # Scores and spans of its own: the shared broker's default topics hold
            # other tests' backlog, which only slows each start down.
            own_inputs=True,
            worker_batch_size=300,
            worker_flush_interval_s=0.2,
            windows_specs="[[10, 5], [30, 10]]",
            windows_allowed_lateness_s=2,
            windows_idle_timeout_s=3600,
            data_dir=tmp_path / name,
            clickhouse_dsn=f"chdb://{tmp_path / name / 'store'}",
        )
        return helpers.worker_process(env, tmp_path / f"{name}.log")

    def settled_windows(w: WorkerProcess) -> list[tuple[object, ...]]:
        """``w``'s closed windows once every event is stored and they stopped changing."""
        w.wait_for("SELECT count() FROM traces", total, timeout=120)
        _wait_stable(w, "SELECT count() FROM window_stats")
        return _window_snapshot(w, end_ms)

    steady = worker("steady")
    steady.start()
    try:
        expected = settled_windows(steady)
    finally:
        steady.stop()
    assert len(expected) > 100

    crashy = worker("crashy")
    crashy.start()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if crashy.scalar("SELECT count() FROM traces") >= total // 3:
                break
        except StoreError:
            pass
        time.sleep(0.1)
    crashy.stop(signal.SIGKILL)
    crashy.start()
    crashy.wait_ready()  # its restore (undoing uncommitted rows) done
    try:
        got = settled_windows(crashy)
    finally:
        crashy.stop()
    assert got == expected
