"""The ingest path under hostile input, through replay files: every rejected line
lands in rejected_events with its reason and position, the valid events around
it are stored unchanged, nothing raises, and memory stays bounded."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmpulse.errors import ValidationError
from llmpulse.pipeline import IngestPipeline
from llmpulse.processors.validate import validate_raw
from llmpulse.replay import replay_file
from llmpulse.runtime import build_pipeline, prepare_store
from llmpulse.settings import Settings
from llmpulse.store.client import SerialClient
from tests.garbage import GARBAGE, REAL_WORLD, valid_line

_counter = itertools.count()


def _rejected_by_validation(line: bytes) -> bool:
    try:
        validate_raw(line)
    except ValidationError:
        return True
    return False


@pytest.fixture(scope="module")
def store(
    chdb_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, SerialClient, IngestPipeline]]:
    # One store and pipeline for every example: each example's ids are its own.
    tmp = tmp_path_factory.mktemp("fuzz")
    s = Settings(
        data_dir=tmp / "data", clickhouse={"dsn": f"chdb://{chdb_dir}", "database": "t_fuzz"}
    )
    client = prepare_store(s)
    yield s, client, build_pipeline(s, client, restore=False)
    client.close()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)  # fmt: skip
@given(
    st.lists(st.one_of(st.none(), GARBAGE), min_size=1, max_size=30),
    st.integers(1, 9),
)
def test_garbage_between_valid_events_is_rejected_and_recorded(
    store: tuple[Settings, SerialClient, IngestPipeline],
    tmp_path: Path,
    lines: list[bytes | None],
    batch_size: int,
) -> None:
    cfg, client, pipeline = store
    run = f"run{next(_counter)}"
    path = tmp_path / f"{run}.jsonl"
    valid: dict[str, bytes] = {}
    garbage: dict[int, bytes] = {}
    content: list[bytes] = []
    for lineno, item in enumerate(lines, start=1):
        if item is None:
            event_id, line = valid_line(run, lineno)
            valid[event_id] = line
        else:
            line = item
            assert _rejected_by_validation(line), line[:200]
            garbage[lineno] = line
        content.append(line)
    path.write_bytes(b"\n".join(content) + b"\n")

    report = replay_file(pipeline, path, batch_size=batch_size)
    assert report.stats.messages == len(lines)
    assert report.stats.accepted == len(valid)
    assert report.stats.rejected_total == len(garbage)
    stored = dict(
        client.rows(
            "SELECT event_id, latency_ms FROM traces WHERE startsWith(event_id, {p:String})",
            {"p": run + "-"},
        )
    )
    assert set(stored) == set(valid)
    for event_id, line in valid.items():
        assert stored[event_id] == json.loads(line)["latency_ms"]
    prefix = f"replay:{path.resolve()}:"
    rows = client.rows(
        "SELECT source, reason, category, length(raw) FROM rejected_events"
        " WHERE startsWith(source, {p:String})",
        {"p": prefix},
    )
    by_line = {int(src.removeprefix(prefix)): (reason, cat, n) for src, reason, cat, n in rows}
    assert set(by_line) == set(garbage)
    for reason, category, raw_len in by_line.values():
        assert reason and category
        assert raw_len <= cfg.limits.max_event_bytes + 1  # cut, not stored whole


def test_real_world_garbage_corpus_through_llmpulse_replay(tmp_path: Path) -> None:
    lines: list[bytes] = []
    expected_valid = 0
    for i, junk in enumerate(REAL_WORLD):
        assert b"\n" not in junk
        assert _rejected_by_validation(junk), junk[:120]
        _, ok = valid_line("corpus", i)
        lines += [ok, junk]
        expected_valid += 1
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    env = {**os.environ, "LLMPULSE_DATA_DIR": str(tmp_path / "data")}
    out = subprocess.run(
        [sys.executable, "-m", "llmpulse.cli.main", "replay", str(path), "--json"],
        env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["accepted"] == expected_valid
    assert summary["rejected"] == len(REAL_WORLD)
    check = subprocess.run(
        [sys.executable, "-m", "llmpulse.cli.main", "sql", "-f", "json",
         "SELECT count() AS n, countIf(reason != '') AS with_reason FROM rejected_events"],
        env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout) == [{"n": len(REAL_WORLD), "with_reason": len(REAL_WORLD)}]


def test_embedding_dimension_changing_within_a_drift_series(
    settings: Settings, tmp_path: Path
) -> None:
    # One drift series (same endpoint, model, prompt version) whose vectors change
    # dimension between batches and within one: all are valid events and stored;
    # the drift detector skips what it cannot compare instead of failing.
    lines = []
    for i in range(700):
        dim = 16 if i < 550 else (8 if i % 2 else 32)
        vec = [((i * 7 + k) % 13) / 13.0 for k in range(dim)]
        lines.append(valid_line("dims", i, prompt_embedding=vec, endpoint="/chat",
                                prompt_version="v1")[1])  # fmt: skip
    path = tmp_path / "dims.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    client = prepare_store(settings)
    try:
        pipeline = build_pipeline(settings, client, restore=False)
        report = replay_file(pipeline, path, batch_size=100)
        assert report.stats.accepted == 700 and report.stats.rejected_total == 0
        dims = client.rows(
            "SELECT prompt_embedding_dim, count() FROM traces"
            " WHERE startsWith(event_id, 'dims-') GROUP BY 1 ORDER BY 1"
        )
        assert dims == [(8, 75), (16, 550), (32, 75)]
    finally:
        client.close()


_PEAK_RSS = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _replay_peak_kib(path: Path, data: Path) -> int:
    env = {**os.environ, "LLMPULSE_DATA_DIR": str(data)}
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, sys.executable, "-m", "llmpulse.cli.main", "replay",
         str(path), "--json"],
        env=env, capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    return int(out.stdout.strip().splitlines()[-1])


def _hostile_file(path: Path, huge: int) -> None:
    valid = [valid_line("mem", i)[1] for i in range(300)]
    with path.open("wb") as f:
        for i, line in enumerate(valid):
            f.write(line + b"\n")
            if i % 100 == 50:  # a huge prompt, a huge array, huge bytes that are no JSON
                f.write(b'{"prompt":"' + b"x" * huge + b'"}\n')
                f.write(b"[" + b"1," * (huge // 2) + b"1]\n")
                f.write(b"\xff" * huge + b"\n")


@pytest.mark.slow
def test_memory_stays_bounded_with_huge_lines(tmp_path: Path) -> None:
    # The same file twice, its nine huge lines 2 MiB long, then 64 MiB long: both
    # are cut at the event size limit, so the peak memory must not follow them.
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    _hostile_file(small, 2 * 1024 * 1024)
    _hostile_file(large, 64 * 1024 * 1024)
    base = _replay_peak_kib(small, tmp_path / "a")
    peak = _replay_peak_kib(large, tmp_path / "b")
    # Were one huge line read whole, the peak would grow by 62 MiB at least.
    assert peak - base < 24 * 1024, (base, peak)
