"""`llmpulse compare` on a replayed stream, as users run it (separate processes)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from llmpulse.synth.traffic import TrafficConfig, TrafficGenerator, write_jsonl
from tests.helpers import llmpulse

START_MS = 1_767_225_600_000


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return llmpulse(args, env)


def stream() -> list[dict[str, Any]]:
    """One endpoint and model; prompt v3 is 40 % slower than v2 and otherwise the
    same; variants are assigned at random, so within v2 they are an A/A split."""
    config = TrafficConfig(
        services=["chat-api"],
        endpoints=["/v1/chat"],
        models=["gpt-4o-mini"],
        tenants=["acme"],
        prompt_versions=["v2", "v3"],
        variants=["A", "B"],
    )
    gen = TrafficGenerator(config, seed=5, start_ms=START_MS, rate_per_s=25)
    events = list(gen.events_between(START_MS, START_MS + 720_000))
    for e in events:
        if e["prompt_version"] == "v3":
            e["latency_ms"] = round(e["latency_ms"] * 1.4, 3)
    return events


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("compare")
    env = {
        "LLMPULSE_DATA_DIR": str(tmp / "data"),
        "LLMPULSE_CLICKHOUSE_DSN": f"chdb://{tmp / 'store'}",
        "LLMPULSE_DRIFT_ENABLED": "false",
    }
    path = tmp / "stream.jsonl"
    write_jsonl(path, stream())
    proc = run(["replay", str(path), "--json"], env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accepted"] > 17_000
    return env


V2_V3 = ("--baseline", "prompt_version=v2", "--candidate", "prompt_version=v3")


def compare(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    proc = run(["compare", *args, "--format", "json"], env)
    assert proc.returncode in (0, 1, 3), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_a_latency_regression_fails_on_latency_and_only_latency(replayed: dict[str, str]) -> None:
    where = ("--where", "endpoint=/v1/chat", "--where", "model=gpt-4o-mini")
    code, doc = compare(replayed, *V2_V3, *where)
    verdicts = {m["metric"]: m["verdict"] for m in doc["metrics"]}
    assert code == 1 and doc["overall"] == "fail"
    assert verdicts.pop("latency") == "fail"
    assert set(verdicts.values()) == {"pass"}, verdicts
    assert {"ttft", "error_rate", "cost_per_request", "score:hallucination"} <= set(verdicts)
    latency = next(m for m in doc["metrics"] if m["metric"] == "latency")
    assert 0.3 < latency["effect"] < 0.5
    assert latency["details"]["p99_ci"][0] > 0.0
    assert doc["stored"] is True


def test_an_a_a_split_passes_and_is_recorded(replayed: dict[str, str]) -> None:
    code, doc = compare(
        replayed,
        "--baseline",
        "variant=A",
        "--candidate",
        "variant=B",
        "--where",
        "prompt_version=v2",
        "--since",
        "2026-01-01T00:00:00Z",
        "--until",
        "2026-01-02T00:00:00Z",
    )
    assert (code, doc["overall"]) == (0, "pass"), [
        (m["metric"], m["verdict"], m["reason"]) for m in doc["metrics"]
    ]
    stored = run(
        [
            "sql",
            f"SELECT overall, count() FROM comparisons WHERE run_id = '{doc['run_id']}' "
            "GROUP BY overall",
            "--format",
            "json",
        ],
        replayed,
    )
    assert json.loads(stored.stdout) == [{"overall": "pass", "count()": len(doc["metrics"])}]


def test_too_little_data_is_inconclusive_and_says_how_much_more(replayed: dict[str, str]) -> None:
    code, doc = compare(
        replayed, *V2_V3, "--until", "2026-01-01T00:00:20Z", "--metric", "error_rate"
    )
    [m] = doc["metrics"]
    assert (code, m["verdict"]) == (3, "inconclusive")
    assert "not enough data" in m["reason"] and m["needed_per_arm"] > m["n_candidate"]


def test_the_table_and_bad_input(replayed: dict[str, str]) -> None:
    proc = run(["compare", *V2_V3], replayed)
    assert proc.returncode == 1
    assert "latency" in proc.stdout and "overall: fail" in proc.stdout
    bad = run(["compare", "--baseline", "colour=red", "--candidate", "model=x"], replayed)
    assert bad.returncode == 2 and "--baseline: unknown key 'colour'" in bad.stderr
