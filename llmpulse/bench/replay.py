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


def _engine_insert_rate(dsn: str, path: Path, events: int, batch: int = 5_000) -> float:
    """Events/s of ClickHouse's own JSON parser inserting the file into a copy of
    ``traces``: what the storage engine alone costs on this machine, an upper
    bound for any pipeline that writes every event to it."""
    settings = Settings(clickhouse={"dsn": dsn, "database": "bench_engine"})
    client = prepare_store(settings)
    try:
        client.command("CREATE TABLE IF NOT EXISTS raw_traces AS traces")
        lines = path.read_bytes().splitlines()
        options = {"input_format_skip_unknown_fields": 1}
        started = time.perf_counter()
        for a in range(0, len(lines), batch):
            with client.locked() as raw:
                raw.raw_insert(
                    "raw_traces", None, b"\n".join(lines[a : a + batch]), options, "JSONEachRow"
                )
        return events / (time.perf_counter() - started)
    finally:
        client.close()


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

    say("baseline: the engine's own JSONEachRow insert of the same lines...")
    engine_rate = _engine_insert_rate(dsn, path, events)
    rows.append(
        (
            "chDB parses and inserts the raw lines itself (no validation, no windows)",
            f"{engine_rate:,.0f}",
            f"{engine_rate / parse_rate:.3f}",
            f"{_peak_rss_mib():,.0f}",
        )
    )
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
