"""``llmpulse kafka``: a local single-node Kafka broker for development and tests."""

from __future__ import annotations

from typing import Annotated

import typer

from llmpulse.cli.context import console, out, reports_errors, state

app = typer.Typer(
    help="Run a local single-node Apache Kafka broker (KRaft) from Maven Central jars.",
    no_args_is_help=True,
)


@app.command()
@reports_errors
def start(
    ctx: typer.Context,
    port: Annotated[
        int | None, typer.Option(help="Listener port (default kafka.local_port)")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness")] = 120.0,
) -> None:
    """Start the broker (downloads the jars once into the cache directory)."""
    from llmpulse.cli.datadir import check_writable
    from llmpulse.devkafka import broker

    settings = state(ctx).settings()
    check_writable(settings.data_dir / "kafka", "broker state directory")
    with console.status("starting Kafka (first run resolves the jars with Maven)..."):
        info = broker.start(
            state_dir=settings.data_dir / "kafka",
            cache_dir=settings.cache_dir,
            port=port or settings.kafka.local_port,
            timeout=timeout,
            log=console.log,
        )
    out.print(
        f"Kafka running at [bold]{info.bootstrap}[/bold] (pid {info.pid}); log: {info.log_file}"
    )
    out.print(f"use it with: export LLMPULSE_KAFKA_BOOTSTRAP={info.bootstrap}")


@app.command()
@reports_errors
def stop(ctx: typer.Context) -> None:
    """Stop the local broker."""
    from llmpulse.devkafka import broker

    stopped = broker.stop(state(ctx).settings().data_dir / "kafka")
    out.print("Kafka stopped" if stopped else "no local Kafka was running")


@app.command()
@reports_errors
def status(ctx: typer.Context) -> None:
    """Tell whether the local broker runs, and where."""
    from llmpulse.devkafka import broker

    info = broker.status(state(ctx).settings().data_dir / "kafka")
    if info is None:
        out.print("no local Kafka is running")
        raise typer.Exit(1)
    out.print(f"Kafka running at {info.bootstrap} (pid {info.pid}); log: {info.log_file}")
