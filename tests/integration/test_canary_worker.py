"""Evaluators, the LLM judge and a continuous canary in a running worker against real
Kafka and chDB: evaluator and judge scores take the score path, the judge's counters
are on /metrics, and a slower candidate fails its canary pair, which raises the
``canary-regression`` alert, writes ``comparisons`` and publishes one rollback."""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from llmpulse.devkafka.topics import ensure_topics_sync
from llmpulse.worker.process import WorkerProcess
from tests.helpers import consume_values, event, produce, worker_env, worker_process
from tests.integration.test_scores_worker import wait_until
from tests.unit.evaluators.test_evaluators import ChatServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CALLS = 1200
REFUSAL = "I'm sorry, but I can't help with that."
PAIR = {
    "name": "chat-v3",
    "baseline": {"prompt_version": "v2"},
    "candidate": {"prompt_version": "v3"},
    "where": {"endpoint": "/v1/chat"},
}


def call(i: int) -> dict[str, Any]:
    """Prompt v2 and v3 alternate; v3 is three times slower; one call in 20 refuses."""
    v3 = i % 2 == 1
    return event(
        i,
        prompt_version="v3" if v3 else "v2",
        latency_ms=(100.0 + i % 50) * (3 if v3 else 1),
        prompt=f"What is the capital of country number {i % 40}?",
        response=REFUSAL if i % 40 in (0, 1) else f"The capital of country {i % 40} is a city.",
    )


def metrics(worker: WorkerProcess) -> str:
    with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as r:
        return r.read().decode()


def counter(text: str, name: str, outcome: str) -> float:
    m = re.search(rf'^{name}{{outcome="{outcome}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else -1.0


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("canary-worker")
    name = f"canary-{uuid.uuid4().hex[:8]}"
    ensure_topics_sync(kafka_bootstrap, {name: 2, name + ".control": 1})
    chat = ChatServer()
    chat.answers["capital"] = '{"score": 0.8, "reason": "grounded"}'
    env = worker_env(
        kafka_bootstrap,
        name,
        tmp,
        partitions=2,
        own_inputs=True,
        worker_batch_size=400,
        windows_specs="[[60, 10]]",
        windows_idle_timeout_s=3,
        scores_signal_window_s=60,
        drift_enabled="false",
        alerts_control_enabled="false",
        evaluators_enabled="true",
        judge_enabled="true",
        judge_url=chat.url,
        judge_sample_rate="1.0",
        judge_max_per_minute=600000,
        judge_queue_size=2 * CALLS,
        canary_pairs=json.dumps([PAIR]),
        canary_rollback="true",
    )
    w = worker_process(env, tmp / "worker.log")
    w.start()
    try:
        w.wait_ready()
        produce(kafka_bootstrap, name, [orjson.dumps(call(i)) for i in range(CALLS)])
        w.wait_for("SELECT count() FROM traces", CALLS)
        w.wait_for("SELECT count() FROM scores WHERE source = 'llm_judge'", CALLS)
        wait_until(
            w,
            lambda: (
                w.scalar(
                    "SELECT count() FROM alerts WHERE rule = 'canary-regression' AND state = 'firing'"
                )
                > 0
            ),
            "the canary alert",
        )
        # Later windows compare again (the stream is idle, time moves on).
        wait_until(
            w,
            lambda: w.scalar("SELECT uniqExact(run_id) FROM comparisons") >= 3,
            "more comparisons",
        )
        yield {
            "worker": w,
            "chat": chat,
            "metrics": metrics(w),
            "control": consume_values(
                kafka_bootstrap, env["LLMPULSE_TOPICS_CONTROL"], 2, timeout=10
            ),
        }
    finally:
        w.stop()
        chat.close()


@pytest.fixture(scope="module")
def worker(run: dict[str, Any]) -> WorkerProcess:
    """The worker that ran the scenario."""
    return run["worker"]  # type: ignore[no-any-return]


def test_evaluator_and_judge_scores_take_the_score_path(
    run: dict[str, Any], worker: WorkerProcess
) -> None:
    assert len(run["chat"].requests) == CALLS  # each call judged once
    rows = worker.sql(
        "SELECT source, name, count(), sum(value), countIf(call_known) FROM scores FINAL "
        "GROUP BY source, name ORDER BY source, name"
    )[1]
    got = {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}
    assert got[("eval", "refusal")] == (CALLS, CALLS // 20, CALLS)
    assert got[("eval", "prompt_similarity")][0] == CALLS
    assert got[("llm_judge", "judge")] == (CALLS, pytest.approx(0.8 * CALLS), CALLS)
    assert (
        worker.scalar(
            "SELECT sum(scores) FROM window_quality WHERE score_name = 'judge' "
            "AND grouping = 'model' AND toUnixTimestamp(window_start) % 60 = 0"
        )
        == CALLS
    )


def test_judge_and_score_counters_are_on_metrics(run: dict[str, Any]) -> None:
    text = run["metrics"]
    assert counter(text, "llmpulse_judge_total", "results") == CALLS
    assert counter(text, "llmpulse_judge_total", "submitted") == CALLS
    assert counter(text, "llmpulse_judge_total", "failures") == 0
    assert counter(text, "llmpulse_evaluator_calls_total", "evaluated") == CALLS
    assert counter(text, "llmpulse_scores_total", "accepted") == 3 * CALLS
    assert "llmpulse_scores_pending 0.0" in text


def test_a_slower_candidate_fails_its_canary_alerts_and_rolls_back_once(
    run: dict[str, Any], worker: WorkerProcess
) -> None:
    [event_] = [orjson.loads(v) for v in run["control"]]  # one while the pair keeps failing
    assert event_["action"] == "rollback" and event_["failed_metrics"] == ["latency"]
    assert event_["candidate"] == {"prompt_version": "v3"}
    latency = worker.sql(
        "SELECT verdict, overall, count() FROM comparisons "
        "WHERE origin = 'canary:chat-v3' AND metric = 'latency' GROUP BY verdict, overall"
    )[1]
    assert [list(r) for r in latency] == [["fail", "fail", latency[0][2]]]
    assert latency[0][2] >= 3  # one row per evaluated window
    others = worker.sql(
        "SELECT DISTINCT verdict FROM comparisons WHERE origin = 'canary:chat-v3' "
        "AND metric != 'latency'"
    )[1]
    assert {r[0] for r in others} <= {"pass", "inconclusive"}, worker.sql(
        "SELECT metric, verdict, reason FROM comparisons WHERE verdict = 'fail'"
    )[1]
    alerts = worker.sql(
        "SELECT state, labels['pair'], labels['metric'] FROM alerts "
        "WHERE rule = 'canary-regression' ORDER BY wall_time"
    )[1]
    assert [list(r) for r in alerts] == [["firing", "chat-v3", "latency"]]
