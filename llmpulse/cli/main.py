"""The ``llmpulse`` command line."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Annotated

import typer

from llmpulse import __version__
from llmpulse.cli import (
    alerts_cmd,
    baseline_cmd,
    bench_cmd,
    compare_cmd,
    dashboards_cmd,
    demo_cmd,
    kafka_cmd,
    prices_cmd,
)
from llmpulse.cli.context import CliState, console, out, reports_errors, state
from llmpulse.cli.datadir import check_state_dirs
from llmpulse.cli.output import as_csv, as_json, as_table

app = typer.Typer(
    name="llmpulse",
    help="Streaming observability for LLM calls: Kafka in, ClickHouse out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(kafka_cmd.app, name="kafka")
app.add_typer(prices_cmd.app, name="prices")
app.add_typer(bench_cmd.app, name="bench")
app.add_typer(alerts_cmd.app, name="alerts")
app.add_typer(baseline_cmd.app, name="baseline")
app.add_typer(dashboards_cmd.app, name="dashboards")
app.command("demo")(demo_cmd.demo)
app.command("compare")(compare_cmd.compare)

ClickHouseOpt = Annotated[
    str | None,
    typer.Option(
        "--clickhouse", help="ClickHouse DSN (chdb:///dir, http://user:pass@host:8123/db)"
    ),
]


def _version(value: bool) -> None:
    if value:
        out.print(f"llmpulse {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="TOML config file (default: ./llmpulse.toml if present)"),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version")
    ] = False,
) -> None:
    ctx.obj = CliState(config=config)


@config_app.command("show")
@reports_errors
def config_show(ctx: typer.Context) -> None:
    """Print the effective settings (file, then environment), secrets masked."""
    out.print_json(json.dumps(state(ctx).settings().masked()))


@app.command()
@reports_errors
def migrate(ctx: typer.Context, clickhouse: ClickHouseOpt = None) -> None:
    """Create or upgrade the ClickHouse schema (idempotent)."""
    from llmpulse.runtime import open_store
    from llmpulse.store.migrations import LATEST_VERSION
    from llmpulse.store.migrations import migrate as run_migrations

    settings = state(ctx).settings(**{"clickhouse.dsn": clickhouse})
    client = open_store(settings)
    try:
        applied = run_migrations(client, retention_days=settings.clickhouse.retention_days)
    finally:
        client.close()
    for m in applied:
        console.print(f"applied migration {m.version}: {m.name}")
    console.print(f"schema at version {LATEST_VERSION} ({settings.clickhouse_dsn.split('@')[-1]})")


@app.command()
@reports_errors
def worker(
    ctx: typer.Context,
    clickhouse: ClickHouseOpt = None,
    bootstrap: Annotated[str | None, typer.Option("--bootstrap", help="Kafka bootstrap")] = None,
    loglevel: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Consume trace events from Kafka and write them to ClickHouse."""
    from llmpulse.worker.run import run_worker

    settings = state(ctx).settings(**{"clickhouse.dsn": clickhouse, "kafka.bootstrap": bootstrap})
    check_state_dirs(settings)
    raise typer.Exit(run_worker(settings, loglevel=loglevel))


@app.command()
@reports_errors
def replay(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Argument(
            help="JSON Lines file of trace events (.jsonl or .gz); score events marked"
            ' "kind": "score" may be mixed in'
        ),
    ] = None,
    scores: Annotated[
        Path | None,
        typer.Option(
            "--scores",
            help="JSON Lines file of score events only (a dump of llm.scores), replayed after FILE",
        ),
    ] = None,
    clickhouse: ClickHouseOpt = None,
    batch_size: Annotated[int | None, typer.Option(help="Events per insert")] = None,
    summary_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON on stdout")
    ] = False,
    send_alerts: Annotated[
        bool,
        typer.Option(
            "--send-alerts", help="Deliver alerts to the configured sinks (default: dry run)"
        ),
    ] = False,
) -> None:
    """Run a recorded stream through the worker's processing, without Kafka."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from llmpulse.errors import ConfigError
    from llmpulse.replay import replay_file
    from llmpulse.runtime import build_pipeline, prepare_store, tune_gc

    if file is None and scores is None:
        raise ConfigError("FILE", "give a file of trace events, --scores FILE, or both")
    for name, path in (("FILE", file), ("--scores", scores)):
        if path is not None and not path.exists():
            raise ConfigError(name, f"{path} does not exist")
    sizes = sum(p.stat().st_size for p in (file, scores) if p is not None)
    label = ", ".join(p.name for p in (file, scores) if p is not None)
    settings = state(ctx).settings(
        **{"clickhouse.dsn": clickhouse, "worker.batch_size": batch_size}
    )
    check_state_dirs(settings)
    client = prepare_store(settings)
    try:
        pipeline = build_pipeline(settings, client, send_alerts=send_alerts)
        tune_gc()
        with Progress(
            TextColumn("[bold]replay[/bold] {task.fields[name]}"),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%  {task.fields[events]:,} events"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=summary_json or not console.is_terminal,
        ) as progress:
            task = progress.add_task("replay", total=sizes, name=label, events=0)
            seen = 0

            def on_batch(stats: object) -> None:
                nonlocal seen
                seen = pipeline.stats.messages
                progress.update(task, events=seen)

            report = replay_file(
                pipeline,
                file,
                batch_size=settings.worker.batch_size,
                on_progress=lambda pos: progress.update(task, completed=pos),
                on_batch=on_batch,
                scores=scores,
            )
        pipeline.close(timeout=60)
    finally:
        client.close()
    s = report.stats
    sc = pipeline.scores.stats if pipeline.scores is not None else None
    transitions = s.alert_transitions
    summary = {
        "file": str(file) if file is not None else None,
        "scores_file": str(scores) if scores is not None else None,
        "events": s.messages,
        "accepted": s.accepted,
        "duplicates": s.duplicates,
        "rejected": s.rejected_total,
        "rejected_by_reason": dict(s.rejected.most_common()),
        "windows": s.windows,
        "alert_transitions": transitions,
        "alerts_sent": send_alerts,
        "unpriced_by_model": dict(s.unpriced_models.most_common()),
        "scores": {
            "messages": sc.messages if sc else 0,
            "accepted": sc.accepted if sc else 0,
            "duplicates": sc.duplicates if sc else 0,
            "rejected": sum(sc.rejected.values()) if sc else 0,
            "unknown_calls": sc.unknown_calls if sc else 0,
            "resolved_late": sc.resolved_late if sc else 0,
            "folded": sc.folded if sc else 0,
        },
        "seconds": round(report.seconds, 3),
        "events_per_second": round(report.events_per_second, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if summary_json:
        out.print_json(json.dumps(summary))
        return
    out.print(
        f"[bold]{s.messages:,}[/bold] events in {report.seconds:.2f}s "
        f"([bold]{report.events_per_second:,.0f}[/bold] events/s): "
        f"[green]{s.accepted:,} accepted[/green], {s.duplicates:,} duplicates, "
        f"[red]{s.rejected_total:,} rejected[/red]; {s.windows:,} windows written; "
        f"{transitions} alert transitions ({'sent' if send_alerts else 'dry run'})"
    )
    if sc is not None and (sc.messages or sc.accepted):
        out.print(
            f"scores: {sc.accepted:,} stored, {sc.duplicates:,} duplicates,"
            f" {sum(sc.rejected.values()):,} rejected, {sc.unknown_calls:,} for calls not"
            f" (yet) known, {sc.folded:,} folded into the windows of their calls"
        )
    if s.rejected:
        out.print(as_table(["rejected because", "events"], s.rejected.most_common()))
    if s.unpriced_models:
        out.print(
            as_table(
                ["model without a price (cost left null)", "events"],
                s.unpriced_models.most_common(10),
            )
        )


# A query may start with an SQL comment ("-- p50 per hour"), which the option
# parser would otherwise read as an unknown option.
@app.command(context_settings={"ignore_unknown_options": True})
@reports_errors
def sql(
    ctx: typer.Context,
    query: Annotated[
        str | None,
        typer.Argument(help="A read-only SQL query; '-' reads the queries from stdin"),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="Read the queries from this file (';' between queries)"),
    ] = None,
    clickhouse: ClickHouseOpt = None,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", help="See only this tenant's rows (as its token would)"),
    ] = None,
) -> None:
    """Run read-only queries against the store (also while a worker owns it).

    The query comes as the argument, from a file (--file q.sql) or from stdin
    ('-'); a file or stdin may hold several queries separated by ';'.
    """
    from llmpulse.errors import ConfigError
    from llmpulse.store.query import query_store
    from llmpulse.store.statements import split_statements

    if format not in ("table", "csv", "json"):
        raise ConfigError("--format", f"must be table, csv or json, got {format!r}")
    if file is not None and query is not None:
        raise ConfigError("--file", "give the query as an argument or in --file, not both")
    if file is not None:
        if not file.is_file():
            raise ConfigError("--file", f"{file} does not exist")
        text, source = file.read_text(), str(file)
    elif query == "-":
        text, source = sys.stdin.read(), "stdin"
    elif query is not None:
        text, source = query, "QUERY"
    else:
        raise ConfigError("QUERY", "give a query, '-' for stdin, or --file q.sql")
    statements = split_statements(text)
    if not statements:
        raise ConfigError(source, "no SQL statement (only comments or whitespace)")
    settings = state(ctx).settings(**{"clickhouse.dsn": clickhouse})
    for statement in statements:
        columns, rows = query_store(settings, statement, tenant=tenant)
        if format == "json":
            print(as_json(columns, rows))
        elif format == "csv":
            print(as_csv(columns, rows), end="")
        else:
            out.print(as_table(columns, rows))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
