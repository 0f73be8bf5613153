"""Scores through a running worker against real Kafka and chDB, and the same stream
replayed: scores before and after their calls, redelivered, for unknown calls and
malformed; window quality by the call's window; the hallucination alert."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from llmpulse.devkafka.topics import ensure_topics_sync
from llmpulse.errors import LlmpulseError, StoreError
from llmpulse.worker.process import WorkerProcess
from tests.helpers import (
    BASE_MS,
    consume_values,
    event,
    llmpulse,
    produce,
    store_rows,
    worker_env,
    worker_process,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CALLS = 1800  # 30 calls per second of event time: a minute, three 20 s tiles
TILE_MS = 20_000


def common_env(tmp: Path) -> dict[str, str]:
    return {
        "LLMPULSE_WINDOWS_SPECS": "[[20, 10]]",
        "LLMPULSE_WINDOWS_IDLE_TIMEOUT_S": "3",
        "LLMPULSE_SCORES_SIGNAL_WINDOW_S": "20",
        # Scores sent after their calls must reach the second tile's alert: its
        # end plus this delay is 20 s of (idle, wall-clock) time after the last call.
        "LLMPULSE_SCORES_ALERT_DELAY_S": "40",
        "LLMPULSE_DRIFT_ENABLED": "false",
        "LLMPULSE_ALERTS_CONTROL_ENABLED": "false",
        "LLMPULSE_DATA_DIR": str(tmp / "data"),
    }


def call_ms(i: int) -> int:
    return BASE_MS + i * 100 // 3


def score(i: int, name: str, value: Any, **fields: Any) -> dict[str, Any]:
    s = {
        "event_id": f"evt-{i}",
        "name": name,
        "value": value,
        "source": "eval",
        "timestamp": call_ms(i) + 20_000,
    }
    s.update(fields)
    return s


def relevance(i: int) -> dict[str, Any]:
    return score(i, "relevance", 0.25 if i % 4 else 0.75, source="human")


# Scores sent before their calls (the first tile, none hallucinated); the calls;
# scores after them (the next two tiles, 10 % hallucinated); a score for a call that
# never comes. In that order, as the worker receives them.
EARLY = [score(i, "hallucination", False) for i in range(CALLS // 3)]
CALL_EVENTS = [event(i, timestamp=call_ms(i)) for i in range(CALLS)]
LATE = [score(i, "hallucination", i % 10 == 0) for i in range(CALLS // 3, CALLS)] + [
    relevance(i) for i in range(0, CALLS, 2)
]
UNKNOWN = [score(0, "hallucination", 1.0, event_id="evt-never-sent")]
MALFORMED = [b"definitely not json", orjson.dumps({"event_id": "evt-1", "value": 1}),
             orjson.dumps(score(2, "hallucination", "high"))]  # fmt: skip
SCORES = len(EARLY) + len(LATE) + len(UNKNOWN)


def dumps(items: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(i) for i in items]


def metric(worker: WorkerProcess, name: str, outcome: str) -> float:
    with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(rf'^{name}{{outcome="{outcome}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else -1.0


def wait_until(worker: WorkerProcess, condition: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (StoreError, OSError, LlmpulseError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}\n{worker.log_tail(4000)}")


SCORE_ROWS = (
    "SELECT score_id, name, value, source, event_id, call_event_id, call_known "
    "FROM scores FINAL ORDER BY score_id"
)
QUALITY_ROWS = (
    "SELECT window_id, grouping, score_name, scores, below, round(mean, 9) "
    "FROM window_quality ORDER BY window_id, score_name"
)


@pytest.fixture(scope="module")
def worker(run: dict[str, Any]) -> WorkerProcess:
    """The worker of :func:`run`, after the scenario."""
    return run["worker"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One worker fed the whole scenario; the tests read what it left."""
    tmp = tmp_path_factory.mktemp("scores-worker")
    name = f"scores-{uuid.uuid4().hex[:8]}"
    ensure_topics_sync(kafka_bootstrap, {name: 2, name + "-scores": 2})
    env = {
        **common_env(tmp),
        **worker_env(kafka_bootstrap, name, tmp, partitions=2, own_inputs=True,
                     worker_batch_size=400, worker_commit_interval_s=0.5),
    }  # fmt: skip
    w = worker_process(env, tmp / "worker.log")
    w.start()
    w.wait_ready()
    scores_topic = env["LLMPULSE_TOPICS_SCORES"]
    try:
        produce(kafka_bootstrap, scores_topic, dumps(EARLY))
        wait_until(w, lambda: metric(w, "llmpulse_scores_total", "unknown_call") == len(EARLY),
                   "the early scores waiting for their calls")  # fmt: skip
        produce(kafka_bootstrap, name, dumps(CALL_EVENTS))
        w.wait_for("SELECT count() FROM traces", CALLS)
        produce(kafka_bootstrap, scores_topic, dumps(LATE + UNKNOWN) + MALFORMED)
        w.wait_for("SELECT count() FROM scores FINAL", SCORES)
        w.wait_for("SELECT count() FROM rejected_events", len(MALFORMED))
        # Everything once more (a producer retrying, a replayed topic).
        produce(kafka_bootstrap, scores_topic, dumps(EARLY + LATE + UNKNOWN))
        wait_until(w, lambda: metric(w, "llmpulse_scores_total", "duplicate") >= SCORES,
                   "the redelivered scores")  # fmt: skip
        # The last tiles are alerted on once the idle stream's time has moved past
        # them by the alert delay.
        wait_until(
            w,
            lambda: (
                w.scalar(
                    "SELECT count() FROM alerts WHERE rule = 'hallucination-rate-high' "
                    "AND state = 'firing'"
                )
                > 0
            ),
            "the hallucination alert",
        )
        yield {
            "worker": w,
            "env": env,
            "tmp": tmp,
            "dlq": consume_values(
                kafka_bootstrap, env["LLMPULSE_TOPICS_SCORES_DLQ"], len(MALFORMED)
            ),
            "scores": w.sql(SCORE_ROWS)[1],
            "quality": w.sql(QUALITY_ROWS)[1],
        }
    finally:
        w.stop()


def test_each_score_is_stored_once_whatever_came_first_or_again(
    run: dict[str, Any], worker: WorkerProcess
) -> None:
    assert len(run["scores"]) == SCORES
    assert worker.scalar("SELECT uniqExact(score_id) FROM scores") == SCORES
    assert worker.scalar("SELECT count() FROM scores FINAL WHERE call_known") == SCORES - 1
    early = worker.sql(
        "SELECT count(), min(version), countIf(call_event_id = event_id) FROM scores FINAL "
        "WHERE name = 'hallucination' AND toUnixTimestamp64Milli(call_timestamp) < "
        f"{BASE_MS + TILE_MS}"
    )[1][0]
    assert list(early) == [len(EARLY), 1, len(EARLY)]
    assert metric(worker, "llmpulse_scores_total", "resolved_late") == len(EARLY)


def test_a_score_for_an_unknown_call_is_kept_with_call_known_0(
    run: dict[str, Any], worker: WorkerProcess
) -> None:
    rows = worker.sql(
        "SELECT call_known, call_event_id, isNull(call_timestamp) FROM scores FINAL "
        "WHERE event_id = 'evt-never-sent'"
    )[1]
    assert [list(r) for r in rows] == [[0, "evt-never-sent", 1]]
    assert worker.scalar("SELECT count() FROM window_scores WHERE has(score_ids, "
                    f"'{_id_of(run, 'evt-never-sent')}')") == 0  # fmt: skip


def _id_of(run: dict[str, Any], event_id: str) -> str:
    return next(str(r[0]) for r in run["scores"] if r[4] == event_id)


def test_malformed_scores_go_to_rejected_events_and_the_dlq(
    run: dict[str, Any], worker: WorkerProcess
) -> None:
    topic = run["env"]["LLMPULSE_TOPICS_SCORES"]
    rows = worker.sql("SELECT source, reason FROM rejected_events ORDER BY reason")[1]
    assert len(rows) == len(MALFORMED)
    assert all(str(r[0]).startswith(f"kafka:{topic}/") for r in rows)
    reasons = " | ".join(str(r[1]) for r in rows)
    assert "name: is required" in reasons
    assert "value: must be a boolean or a finite number, got 'high'" in reasons
    assert sorted(run["dlq"]) == sorted(MALFORMED)


def test_scores_fold_into_the_window_of_their_call(worker: WorkerProcess) -> None:
    # The three tiles: 600 scores each, counted once although every score came
    # twice; those of the first tile arrived before their calls.
    rows = worker.sql(
        "SELECT toUnixTimestamp(window_start) * 1000, scores, below, 1 - rate_below "
        "FROM window_quality WHERE grouping = 'service+endpoint+model' "
        "AND score_name = 'hallucination' AND toUnixTimestamp(window_start) % 20 = 0 "
        "ORDER BY window_start"
    )[1]
    assert [list(r) for r in rows] == [
        [BASE_MS, 600, 600, 0.0],
        [BASE_MS + TILE_MS, 600, 540, pytest.approx(0.1)],
        [BASE_MS + 2 * TILE_MS, 600, 540, pytest.approx(0.1)],
    ]
    by_tenant = worker.sql(
        "SELECT tenant, sum(scores) FROM window_quality WHERE grouping = 'tenant' "
        "AND score_name = 'relevance' AND toUnixTimestamp(window_start) % 20 = 0 "
        "GROUP BY tenant ORDER BY tenant"
    )[1]
    assert [list(r) for r in by_tenant] == [
        [f"tenant-{t}", len([i for i in range(0, CALLS, 2) if i % 3 == t])] for t in range(3)
    ]
    # Same window ids as the window statistics of the calls (those closed so far).
    assert (
        worker.scalar(
            "SELECT count() FROM window_quality AS q INNER JOIN window_stats AS s "
            "ON s.window_id = q.window_id WHERE q.score_name = 'hallucination'"
        )
        >= 3 * 5
    )
    assert (
        worker.scalar(
            "SELECT count() FROM window_quality WHERE score_name = 'hallucination' "
            "AND window_end <= (SELECT max(window_end) FROM window_stats) "
            "AND window_id NOT IN (SELECT window_id FROM window_stats)"
        )
        == 0
    )


def test_a_hallucination_rate_breach_raises_one_alert_per_series(worker: WorkerProcess) -> None:
    rows = worker.sql(
        "SELECT state, labels['grouping'], round(value, 3) FROM alerts "
        "WHERE rule = 'hallucination-rate-high' ORDER BY wall_time"
    )[1]
    # Raised by scores that came after their calls, on the two last tiles (for: 2);
    # one series of one grouping pages, not one per grouping.
    assert [r[0] for r in rows] == ["pending", "firing"], rows
    assert {r[1] for r in rows} == {"service+endpoint+model"}
    assert {r[2] for r in rows} == {0.1}, rows


def test_a_replay_of_the_mixed_stream_stores_the_same_scores_and_quality(
    run: dict[str, Any],
) -> None:
    tmp: Path = run["tmp"]
    lines = [
        *(orjson.dumps({"kind": "score", **s}) for s in EARLY),
        *dumps(CALL_EVENTS),
        *(orjson.dumps({"kind": "score", **s}) for s in LATE + UNKNOWN),
        *(orjson.dumps({"kind": "score", **s}) for s in EARLY + LATE + UNKNOWN),
    ]
    path = tmp / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    store = tmp / "replay-store"
    env = {**common_env(tmp), "LLMPULSE_DATA_DIR": str(tmp / "replay-data")}
    summary = json.loads(cli(["replay", str(path), "--clickhouse", f"chdb://{store}", "--json",
                              "--batch-size", "500"], env))  # fmt: skip
    assert summary["accepted"] == CALLS
    assert summary["scores"]["accepted"] == SCORES
    assert summary["scores"]["duplicates"] == SCORES
    assert store_rows(store, SCORE_ROWS) == [list(r) for r in run["scores"]]
    assert store_rows(store, QUALITY_ROWS) == [list(r) for r in run["quality"]]


def test_replay_scores_only_file_after_the_calls(run: dict[str, Any]) -> None:
    """``--scores FILE``: a dump of llm.scores, every line a score, no kind needed."""
    tmp: Path = run["tmp"]
    calls, scores = tmp / "calls.jsonl", tmp / "scores.jsonl"
    calls.write_bytes(b"\n".join(dumps(CALL_EVENTS)) + b"\n")
    scores.write_bytes(b"\n".join(dumps(EARLY + LATE + UNKNOWN)) + b"\n")
    store = tmp / "replay-scores-store"
    env = {**common_env(tmp), "LLMPULSE_DATA_DIR": str(tmp / "replay-scores-data")}
    summary = json.loads(cli(["replay", str(calls), "--scores", str(scores), "--clickhouse",
                              f"chdb://{store}", "--json"], env))  # fmt: skip
    assert (summary["accepted"], summary["scores"]["accepted"]) == (CALLS, SCORES)
    assert store_rows(store, QUALITY_ROWS) == [list(r) for r in run["quality"]]


def cli(args: list[str], env: dict[str, str]) -> str:
    return llmpulse(args, env, check=True).stdout


def test_a_worker_killed_while_storing_scores_counts_each_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """SIGKILL while scores are being stored, restart: every score once, and window
    quality equal to a replay of the same stream (redelivered scores are recognised,
    and those whose fold the kill interrupted are folded on redelivery)."""
    name = f"scores-kill-{uuid.uuid4().hex[:8]}"
    ensure_topics_sync(kafka_bootstrap, {name: 2, name + "-scores": 2})
    env = {
        **common_env(tmp_path),
        **worker_env(kafka_bootstrap, name, tmp_path, partitions=2, own_inputs=True,
                     worker_batch_size=50, worker_commit_interval_s=1),
    }  # fmt: skip
    scores = [
        score(i, n, (i * 7 + k) % 10 / 10)
        for k, n in enumerate(("hallucination", "relevance", "helpful"))
        for i in range(CALLS)
    ]
    w = worker_process(env, tmp_path / "worker.log")
    w.start()
    try:
        w.wait_ready()
        produce(kafka_bootstrap, name, dumps(CALL_EVENTS))
        w.wait_for("SELECT count() FROM traces", CALLS)
        produce(kafka_bootstrap, env["LLMPULSE_TOPICS_SCORES"], dumps(scores))
        wait_until(w, lambda: w.scalar("SELECT count() FROM scores") >= len(scores) // 4,
                   "a quarter of the scores stored")  # fmt: skip
        w.stop(signal.SIGKILL)
        w.start()
        w.wait_ready()
        w.wait_for("SELECT count() FROM scores FINAL", len(scores))
        wait_until(
            w,
            lambda: w.scalar("SELECT sum(scores) FROM window_quality WHERE grouping = 'model' "
                             "AND toUnixTimestamp(window_start) % 20 = 0") == len(scores),
            "every score folded",
        )  # fmt: skip
        assert w.scalar("SELECT uniqExact(score_id) FROM scores") == len(scores)
        worker_quality = [list(r) for r in w.sql(QUALITY_ROWS)[1]]
    finally:
        w.stop()
    path = tmp_path / "stream.jsonl"
    marked = [orjson.dumps({"kind": "score", **s}) for s in scores]
    path.write_bytes(b"\n".join([*dumps(CALL_EVENTS), *marked]) + b"\n")
    store = tmp_path / "replay-store"
    replay_env = {**common_env(tmp_path), "LLMPULSE_DATA_DIR": str(tmp_path / "replay-data")}
    cli(["replay", str(path), "--clickhouse", f"chdb://{store}", "--json"], replay_env)
    assert store_rows(store, QUALITY_ROWS) == worker_quality
