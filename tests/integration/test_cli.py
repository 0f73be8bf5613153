"""The command line as users run it: separate processes on a real embedded store."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import event, llmpulse, raw


def run(
    args: list[str], env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    return llmpulse(args, env, timeout=180, check=check)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "LLMPULSE_DATA_DIR": str(tmp_path / "data"),
        "LLMPULSE_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'store'}",
        "LLMPULSE_WORKER_BATCH_SIZE": "40",
    }


def write_stream(path: Path) -> None:
    lines = [raw(event(i)) for i in range(100)]
    lines += [raw(event(i)) for i in range(10)]  # duplicate deliveries
    lines += [
        b"{not json",
        b"[]",
        raw(event(900, latency_ms=-5)),
        raw({k: v for k, v in event(901).items() if k != "model"}),
        raw(event(902, timestamp="2026-01-01 00:00:00")),
    ]
    lines.insert(50, b"")  # blank lines are not events
    data = b"\n".join(lines) + b"\n"
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)


def replay_summary(path: Path, env: dict[str, str]) -> dict[str, object]:
    return json.loads(run(["replay", str(path), "--json"], env).stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["stream.jsonl", "stream.jsonl.gz"])
def test_replay_twice_exact_counts(tmp_path: Path, env: dict[str, str], name: str) -> None:
    path = tmp_path / name
    write_stream(path)
    first = replay_summary(path, env)
    assert (first["events"], first["accepted"], first["duplicates"], first["rejected"]) == (
        115,
        100,
        10,
        5,
    )
    reasons = first["rejected_by_reason"]
    assert isinstance(reasons, dict)
    assert reasons["latency_ms: must be >= 0"] == 1 and reasons["model: is required"] == 1
    second = replay_summary(path, env)
    assert (second["accepted"], second["duplicates"]) == (0, 110)

    q = "SELECT count() AS n, uniqExact(event_id) AS ids FROM traces"
    assert json.loads(run(["sql", q, "--format", "json"], env).stdout) == [{"n": 100, "ids": 100}]
    rej = json.loads(
        run(["sql", "SELECT count() AS n FROM rejected_events", "-f", "json"], env).stdout
    )
    assert rej == [{"n": 5}]
    csv_out = run(["sql", "SELECT reason FROM rejected_events ORDER BY source", "-f", "csv"], env)
    assert "latency_ms: must be >= 0, got -5" in csv_out.stdout


def test_sql_is_read_only(tmp_path: Path, env: dict[str, str]) -> None:
    run(["migrate"], env)
    proc = run(["sql", "DROP TABLE traces"], env, check=False)
    assert proc.returncode == 1 and "read" in proc.stderr.lower()
    assert json.loads(
        run(["sql", "SELECT count() AS n FROM traces", "-f", "json"], env).stdout
    ) == [{"n": 0}]


def test_replay_missing_file_is_a_clear_error(env: dict[str, str]) -> None:
    proc = run(["replay", "/nonexistent.jsonl"], env, check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_config_show_masks_secrets_and_env_wins(tmp_path: Path, env: dict[str, str]) -> None:
    cfg = tmp_path / "llmpulse.toml"
    cfg.write_text('[kafka]\nbootstrap = "file:1"\n[worker]\nbatch_size = 77\n')
    env = {
        **env,
        "LLMPULSE_CLICKHOUSE_DSN": "http://u:secret@ch:8123/db",
        "LLMPULSE_KAFKA_BOOTSTRAP": "env:2",
    }
    shown = json.loads(run(["--config", str(cfg), "config", "show"], env).stdout)
    assert shown["kafka"]["bootstrap"] == "env:2"
    assert shown["worker"]["batch_size"] == 40  # env LLMPULSE_WORKER_BATCH_SIZE beats the file
    assert ":secret@" not in json.dumps(shown) and shown["clickhouse"]["dsn"].startswith(
        "http://u:***@"
    )


def test_bad_config_value_names_the_setting(env: dict[str, str]) -> None:
    proc = run(["config", "show"], {**env, "LLMPULSE_WORKER_BATCH_SIZE": "-3"}, check=False)
    assert proc.returncode == 2 and "worker.batch_size" in proc.stderr


def test_baseline_set_pins_a_reference_from_stored_text(
    tmp_path: Path, env: dict[str, str]
) -> None:
    from llmpulse.synth.traffic import TrafficConfig, TrafficGenerator, write_jsonl

    config = TrafficConfig(endpoints=["/v1/chat"], models=["gpt-4o"], prompt_versions=["v1"])
    gen = TrafficGenerator(config, seed=3, start_ms=1_767_225_600_000, rate_per_s=5.0)
    path = tmp_path / "text.jsonl"
    write_jsonl(path, gen.events(400))
    env = {**env, "LLMPULSE_CLICKHOUSE_STORE_TEXT": "true"}
    run(["replay", str(path), "--json"], env)
    args = ["baseline", "set", "-s", "endpoint=/v1/chat", "-s", "model=gpt-4o",
            "-s", "prompt_version=v1", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-02T00:00:00Z"]  # fmt: skip
    out = run(args, env).stdout
    assert "pinned" in out
    listed = json.loads(
        run(["sql", "SELECT series, signal, n FROM drift_baselines ORDER BY created_at DESC LIMIT 1",
             "-f", "json"], env).stdout
    )  # fmt: skip
    assert listed[0]["signal"] == "prompt_embedding" and "model=gpt-4o" in listed[0]["series"]
    bad = run(["baseline", "set", "-s", "nope", "--from", "x", "--to", "y"], env, check=False)
    assert bad.returncode == 2 and "dim=value" in bad.stderr
