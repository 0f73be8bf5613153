"""The whole replay path against the cost of merely reading and parsing the file.

Both run in this process on the same generated file: ``read + orjson.loads`` is
the floor any Python JSON pipeline pays; the replay adds validation, pricing,
dedup, windows, budgets and the ClickHouse writes.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from llmpulse.ingest.files import read_jsonl
from llmpulse.replay import replay_file
from llmpulse.runtime import build_pipeline, prepare_store, tune_gc
from llmpulse.settings import Settings
from llmpulse.synth.traffic import TrafficConfig, TrafficGenerator, write_jsonl


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_replay_bench(
    work: Path,
    *,
    events: int = 200_000,
    seed: int = 1,
    say: Callable[[str], None] = print,
) -> list[tuple[str, str, str, str]]:
    path = work / "stream.jsonl"
    say(f"generating {events:,} events...")
    gen = TrafficGenerator(
        TrafficConfig(include_text=False), seed=seed, start_ms=1_767_225_600_000, rate_per_s=200.0
    )
    write_jsonl(path, gen.events(events))

    say("baseline: read and parse every line...")
    t0 = time.perf_counter()
    for msg in read_jsonl(path):
        orjson.loads(msg.value)
    parse_rate = events / (time.perf_counter() - t0)
    rss_parse = _peak_rss_mib()

    rows = [("read + orjson.loads (floor)", f"{parse_rate:,.0f}", "1.00", f"{rss_parse:,.0f}")]
    dsn = f"chdb://{work / 'store'}"  # one embedded store per process: one database per run
    for label, database, drift in (
        ("replay: parse, validate, cost, dedup, windows, write (drift off)", "bench_core", False),
        ("replay with every stage (windows, budgets, alerts, drift)", "bench_full", True),
    ):
        say(f"llmpulse {label}...")
        settings = Settings(
            data_dir=work / "data",
            clickhouse={"dsn": dsn, "database": database},
            drift={"enabled": drift},
        )
        client = prepare_store(settings)
        try:
            pipeline = build_pipeline(settings, client)
            tune_gc()
            report = replay_file(pipeline, path, batch_size=settings.worker.batch_size)
        finally:
            client.close()
        rate = report.events_per_second
        rows.append((label, f"{rate:,.0f}", f"{rate / parse_rate:.3f}", f"{_peak_rss_mib():,.0f}"))
    return rows
