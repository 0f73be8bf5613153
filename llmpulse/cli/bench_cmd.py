"""``llmpulse bench``: measured throughput, as ratios against a baseline in the same run."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from llmpulse.cli.context import console, out, reports_errors, state
from llmpulse.cli.output import as_table

app = typer.Typer(
    help="Benchmarks (end-to-end pipeline, windows, drift, compare).", no_args_is_help=True
)


@app.command("pipeline")
@reports_errors
def pipeline(
    ctx: typer.Context,
    traffic: Annotated[
        list[str] | None,
        typer.Option("--traffic", help="lean, rich, cardinality (repeat; default all)"),
    ] = None,
    scale: Annotated[float, typer.Option(help="Multiplier of each traffic's event count")] = 1.0,
    partitions: Annotated[int, typer.Option(help="Partitions of the input topic")] = 6,
    fresh_events: Annotated[int, typer.Option(help="Paced events for freshness (0: skip)")] = 2000,
    workers: Annotated[bool, typer.Option(help="Also run the Kafka workers")] = True,
    python: Annotated[
        str | None, typer.Option(help="Interpreter of another llmpulse install to measure")
    ] = None,
) -> None:
    """Engine floor, replay, one worker and two workers on the same traffic; freshness."""
    import sys

    from llmpulse.bench.pipeline import DATASETS, run_pipeline_bench
    from llmpulse.devkafka.ensure import lease_broker
    from llmpulse.errors import ConfigError

    unknown = sorted(set(traffic or ()) - set(DATASETS))
    if unknown:
        raise ConfigError("--traffic", f"unknown {unknown}; choose from {sorted(DATASETS)}")
    settings = state(ctx).settings()
    lease = lease_broker(
        settings.kafka.bootstrap,
        state_dir=settings.data_dir / "kafka",
        cache_dir=settings.cache_dir,
        local_port=settings.kafka.local_port,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="llmpulse-bench-") as work:
            result = run_pipeline_bench(
                lease.bootstrap,
                Path(work),
                datasets=traffic or None,
                scale=scale,
                partitions=partitions,
                python=python or sys.executable,
                fresh_events=fresh_events,
                workers=workers,
                say=console.log,
            )
    finally:
        lease.release()
    headers, rows = result.table()
    out.print(as_table(headers, rows))
    if result.freshness_events:
        p50, p99, worst = result.freshness_ms
        out.print(
            f"freshness, produce -> row visible ({result.freshness_events} events paced): "
            f"p50 {p50:,.0f} ms, p99 {p99:,.0f} ms, max {worst:,.0f} ms"
        )
    if result.memory_per_series_kib == result.memory_per_series_kib:
        out.print(f"memory per active series: {result.memory_per_series_kib:.2f} KiB")
    for note in result.notes:
        out.print(note)


@app.command("windows")
@reports_errors
def windows(
    events: Annotated[int, typer.Option(help="Events to aggregate")] = 1_000_000,
    series: Annotated[int, typer.Option(help="Distinct series")] = 100,
    seed: Annotated[int, typer.Option(help="Data seed")] = 0,
    hours: Annotated[
        float,
        typer.Option(
            help="Event-time span of the stream: long spans make many windows per event "
            "(emission-bound), short ones few (aggregation-bound)"
        ),
    ] = 2.0,
) -> None:
    """Windowing core vs exact numpy, river, ddsketch and chDB SQL on the same data."""
    from llmpulse.bench.windows import format_table, run_windows_bench

    rows = run_windows_bench(events, series, seed, progress=console.log, hours=hours)
    out.print(format_table(rows), markup=False, highlight=False)


@app.command("replay")
@reports_errors
def replay_bench(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(help="Events in the generated file")] = 200_000,
) -> None:
    """The whole replay path (read, parse, validate, cost, windows, write) against
    reading and JSON-parsing the same file, in one run."""
    from llmpulse.bench.replay import run_replay_bench

    with tempfile.TemporaryDirectory(prefix="llmpulse-bench-") as work:
        rows = run_replay_bench(Path(work), events=events, say=console.log)
    out.print(as_table(["path", "events/s", "ratio", "peak RSS MiB"], rows))


@app.command("alerts")
@reports_errors
def alerts_bench() -> None:
    """Time from the breaching window to the PagerDuty request (local receiver)."""
    from llmpulse.bench.alerts import run_alert_bench

    with tempfile.TemporaryDirectory(prefix="llmpulse-bench-") as work:
        rows = run_alert_bench(Path(work), say=console.log)
    out.print(as_table(["measure", "value"], rows))


@app.command("drift")
@reports_errors
def drift_bench(
    dims: Annotated[str, typer.Option(help="Embedding dimensions, comma-separated")] = "64,384,768",
    seeds: Annotated[int, typer.Option(help="Seeds per scenario")] = 5,
    stationary: Annotated[int, typer.Option(help="Events per stationary control run")] = 100_000,
    evidently: Annotated[bool, typer.Option(help="Run Evidently as the peer if installed")] = True,
) -> None:
    """Drift detection quality and speed on streams with known change points."""
    from llmpulse.bench.drift import format_table, run_drift_bench

    rows = run_drift_bench(
        dims=[int(d) for d in dims.split(",")],
        seeds=range(seeds),
        n_stationary=stationary,
        progress=console.log,
        evidently=evidently,
    )
    out.print(format_table(rows), markup=False, highlight=False)


@app.command("privacy")
@reports_errors
def privacy_bench(
    megabytes: Annotated[float, typer.Option(help="Text per kind, in MB")] = 2.0,
    chunk: Annotated[int, typer.Option(help="Characters per redacted text (a prompt)")] = 2000,
) -> None:
    """PII redaction cost per MB of text (default policy: every type masked)."""
    from llmpulse.bench.privacy import run_privacy_bench

    rows = run_privacy_bench(megabytes, chunk=chunk)
    out.print(
        as_table(
            ["text", "MB", "values found", "ms per MB", "MB/s"],
            [
                (
                    r.text,
                    f"{r.megabytes:.1f}",
                    r.found,
                    f"{r.ms_per_mb:.0f}",
                    f"{r.mb_per_second:.1f}",
                )
                for r in rows
            ],
        )
    )


@app.command("compare")
@reports_errors
def compare_bench(
    seeds: Annotated[int, typer.Option(help="Seeds per scenario")] = 100,
    n: Annotated[int, typer.Option("--n", help="Calls per arm")] = 5000,
) -> None:
    """Canary comparison quality: false fails without an effect, power with one."""
    from llmpulse.bench.compare import format_table, run_compare_bench

    rows = run_compare_bench(n=n, seeds=seeds, progress=console.log)
    print(format_table(rows))  # markdown, as is: a Rich console would wrap it
