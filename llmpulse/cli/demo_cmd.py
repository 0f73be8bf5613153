"""``llmpulse demo``: broker, worker and synthetic traffic with scheduled incidents."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from llmpulse.cli.context import console, out, reports_errors, state
from llmpulse.cli.datadir import check_state_dirs
from llmpulse.settings import Settings

if TYPE_CHECKING:
    from llmpulse.client import Emitter
    from llmpulse.synth.traffic import TrafficGenerator

# (kind, start s, duration s, service, magnitude): one of each incident the
# later issues alert on, spaced so each shows up alone in the charts.
SCHEDULE: tuple[tuple[str, float, float, str | None, float], ...] = (
    ("latency_regression", 60, 60, "chat-api", 4.0),
    ("error_burst", 150, 45, "search", 0.3),
    ("cost_spike", 225, 60, "support-bot", 5.0),
    ("prompt_drift", 300, 120, "chat-api", 0.6),
)

STATUS_SQL = """
SELECT service,
       count() AS calls,
       round(countIf(status = 'error') / count() * 100, 2) AS error_pct,
       round(quantile(0.5)(latency_ms)) AS p50_ms,
       round(quantile(0.99)(latency_ms)) AS p99_ms,
       round(sum(cost_usd), 4) AS cost_usd
FROM traces
WHERE timestamp >= now64() - INTERVAL 60 SECOND
GROUP BY service ORDER BY service
"""


def _env_for_worker(settings: Settings, bootstrap: str) -> dict[str, str]:
    return {
        "LLMPULSE_KAFKA_BOOTSTRAP": bootstrap,
        "LLMPULSE_DATA_DIR": str(settings.data_dir),
        "LLMPULSE_CLICKHOUSE_DSN": settings.clickhouse_dsn,
        "LLMPULSE_WORKER_WEB_PORT": str(settings.worker.web_port),
        "LLMPULSE_TOPICS_TRACES": settings.topics.traces,
        "LLMPULSE_TOPICS_DLQ": settings.topics.dlq,
    }


@reports_errors
def demo(
    ctx: typer.Context,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C)")
    ] = None,
    rate: Annotated[float, typer.Option(help="Calls per second of synthetic traffic")] = 40.0,
    seed: Annotated[int, typer.Option(help="Seed of the traffic generator")] = 7,
    incidents: Annotated[bool, typer.Option(help="Schedule the incidents")] = True,
    traffic_only: Annotated[
        bool,
        typer.Option(
            "--traffic-only",
            help="Only emit the traffic to the configured Kafka (no local broker, no worker):"
            " the demo profile of compose.yaml",
        ),
    ] = False,
) -> None:
    """Run the pipeline on synthetic traffic with scheduled incidents.

    Uses the configured broker, or starts a local one; runs a worker on the
    configured store (the embedded default unless set) and emits traffic from
    several services, models and tenants. Ctrl-C stops everything.
    """
    from llmpulse.client import kafka_emitter
    from llmpulse.devkafka.ensure import lease_broker
    from llmpulse.devkafka.lifetime import die_with_parent
    from llmpulse.synth.traffic import malformed_events
    from llmpulse.worker.process import WorkerProcess

    settings = state(ctx).settings()
    if traffic_only:
        _emit_traffic(settings, duration=duration, rate=rate, seed=seed, incidents=incidents)
        return
    check_state_dirs(settings)
    page = page_url(settings)
    _safe(out.print, f"status page: [bold link={page}]{page}[/] (live once the worker runs)")
    with console.status("Kafka: looking for a broker (or starting one)..."):
        lease = lease_broker(
            settings.kafka.bootstrap,
            state_dir=settings.data_dir / "kafka",
            cache_dir=settings.cache_dir,
            local_port=settings.kafka.local_port,
            # If the demo dies (SIGKILL, a crash), its broker must not outlive it.
            die_with_parent=True,
        )
    console.print(
        f"Kafka at [bold]{lease.bootstrap}[/bold]"
        + (" (started for the demo)" if lease.started_here else "")
    )
    _ensure_topics(settings, lease.bootstrap)
    worker = WorkerProcess(
        _env_for_worker(settings, lease.bootstrap),
        settings.data_dir / "demo-worker.log",
        web_port=settings.worker.web_port,
    )
    worker.preexec = die_with_parent()
    emitter = None
    broken_pipe = False
    stop = _StopRequest()
    previous = signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        with console.status("starting the worker (migrates the store)..."):
            worker.start()
            worker.wait_healthy()
        start_ms = int(time.time() * 1000)
        planned = _planned(incidents)
        gen = _traffic(start_ms, rate, seed, planned)
        emitter = kafka_emitter(lease.bootstrap, settings.topics.traces)
        _print_intro(settings, planned)
        # A few malformed messages show the DLQ and rejected_events at work.
        _send_malformed(lease.bootstrap, settings.topics.traces, malformed_events(5, seed=seed))
        # In a terminal the status table updates in place; piped, it is printed
        # every 15 s like a log.
        live: Live | None = None
        if out.is_terminal:
            live = Live(status_view(page, None, None, None), console=out, auto_refresh=False)
        every = 5.0 if live is not None else 15.0
        next_status = time.monotonic() + (2.0 if live is not None else every)
        view_cm: AbstractContextManager[Any] = live if live is not None else nullcontext()
        with view_cm:
            for now_ms in _emit_until(gen, emitter, start_ms, duration, stop):
                if time.monotonic() >= next_status:
                    next_status += every
                    view = status_view(page, *_status(worker), (now_ms - start_ms) / 1000)
                    if live is not None:
                        live.update(view, refresh=True)
                    else:
                        out.print(view)
                if not worker.alive:
                    console.print(f"[red]the worker stopped:[/red]\n{worker.log_tail()}")
                    raise typer.Exit(1)
    except BrokenPipeError:
        # `llmpulse demo | head -1`, or `| tee log` then Ctrl-C: the reader left.
        # Stop like on Ctrl-C; nothing more goes to stdout.
        broken_pipe = True
        _detach_stdout()
    finally:
        signal.signal(signal.SIGINT, previous)
        # The cleanup must run to the end whatever the output does: each print is
        # guarded, so a closed pipe cannot skip stopping the worker and the broker.
        try:
            if emitter is not None:
                emitter.close(timeout=10)
                _safe(console.print, f"emitted {emitter.sent:,} events ({emitter.dropped} dropped)")
            time.sleep(2 * settings.worker.flush_interval_s)
            if worker.alive and not broken_pipe:
                _safe(out.print, status_view(page, *_status(worker), None))
        finally:
            worker.stop()
            lease.release()
    if broken_pipe:
        return
    out.print("demo stopped; the data stays in the store: try [bold]llmpulse sql[/bold]")


def _detach_stdout() -> None:
    """Point stdout at /dev/null: the reader of the pipe is gone, and the interpreter
    would otherwise fail again flushing it at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _safe(printer: Any, *args: Any) -> None:
    try:
        printer(*args)
    except BrokenPipeError:
        _detach_stdout()


def _send_malformed(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    import asyncio

    from aiokafka import AIOKafkaProducer

    async def go() -> None:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await p.start()
        try:
            for v in payloads:
                await p.send(topic, v, key=b"demo-malformed")
        finally:
            await p.stop()

    asyncio.run(go())


class _StopRequest:
    """A SIGINT/SIGTERM handler that only asks the emitting loop to end, so that
    the cleanup after it still runs."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: object) -> None:
        self.requested = True


def _ensure_topics(settings: Settings, bootstrap: str) -> None:
    from llmpulse.devkafka.topics import ensure_topics_sync

    t = settings.topics
    ensure_topics_sync(bootstrap, {t.traces: t.partitions, t.dlq: t.partitions, t.control: 1})


def _traffic(start_ms: int, rate: float, seed: int, planned: list[Any]) -> TrafficGenerator:
    from llmpulse.synth.traffic import TrafficConfig, TrafficGenerator

    return TrafficGenerator(
        TrafficConfig(embeddings=True),
        seed=seed,
        start_ms=start_ms,
        rate_per_s=rate,
        incidents=planned,
    )


def _emit_until(
    gen: TrafficGenerator,
    emitter: Emitter,
    start_ms: int,
    duration: float | None,
    stop: _StopRequest,
) -> Iterator[int]:
    """Emit the traffic due so far every 0.2 s until a stop is requested or
    ``duration`` seconds have passed; yields the time (epoch ms) after each batch."""
    cursor = start_ms
    while not stop.requested:
        now_ms = int(time.time() * 1000)
        for e in gen.events_between(cursor, now_ms):
            emitter.emit(e)
        cursor = now_ms
        if duration is not None and now_ms - start_ms >= duration * 1000:
            return
        yield now_ms
        time.sleep(0.2)


def _planned(incidents: bool) -> list[Any]:
    from llmpulse.synth.traffic import Incident

    if not incidents:
        return []
    return [
        Incident(kind, start_s, dur, service=svc, magnitude=mag)  # type: ignore[arg-type]
        for kind, start_s, dur, svc, mag in SCHEDULE
    ]


def _emit_traffic(
    settings: Settings, *, duration: float | None, rate: float, seed: int, incidents: bool
) -> None:
    """The synthetic traffic alone, to the configured broker, until Ctrl-C or ``duration``."""
    from llmpulse.client import kafka_emitter

    traces = settings.topics.traces
    bootstrap = settings.kafka.bootstrap
    _ensure_topics(settings, bootstrap)
    start_ms = int(time.time() * 1000)
    gen = _traffic(start_ms, rate, seed, _planned(incidents))
    emitter = kafka_emitter(bootstrap, traces)
    stop = _StopRequest()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    out.print(f"emitting {rate:g} calls/s to {traces} at {bootstrap} (Ctrl-C stops)")
    next_report = time.monotonic() + 15
    try:
        for now_ms in _emit_until(gen, emitter, start_ms, duration, stop):
            if time.monotonic() >= next_report:
                next_report += 15
                out.print(f"+{(now_ms - start_ms) / 1000:.0f}s: {emitter.sent:,} events sent")
    finally:
        emitter.close(timeout=10)
    out.print(f"emitted {emitter.sent:,} events ({emitter.dropped} dropped)")


def page_url(settings: Settings) -> str:
    host = settings.worker.web_host
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown}:{settings.worker.web_port}/"


def _print_intro(settings: Settings, planned: Sequence[object]) -> None:
    out.print(
        f"worker: http://{settings.worker.web_host}:{settings.worker.web_port}"
        " (/ status page, /health, /metrics, POST /sql)"
    )
    out.print(f"store:  {settings.clickhouse_dsn}")
    if planned:
        t = Table("incident", "starts at", "lasts", "where")
        for kind, start_s, dur, svc, _ in SCHEDULE:
            t.add_row(kind, f"+{start_s:.0f}s", f"{dur:.0f}s", svc or "all")
        out.print(t)
    out.print("look at it (in another terminal, while the demo runs):")
    for q in (
        'llmpulse sql "SELECT service, model, count() FROM traces GROUP BY ALL"',
        'llmpulse sql "SELECT reason, count() FROM rejected_events GROUP BY reason"',
        'llmpulse sql "SELECT model, sum(cost_usd) FROM traces GROUP BY model" -f csv',
    ):
        out.print(f"  {q}")
    out.print("Ctrl-C stops the demo.")


StatusRows = tuple[list[str], list[tuple[Any, ...]]]


def _status(worker: object) -> tuple[StatusRows | None, tuple[Any, ...] | None]:
    """The last minute per service and the store's totals, or (None, None)."""
    from llmpulse.errors import LlmpulseError
    from llmpulse.worker.process import WorkerProcess

    assert isinstance(worker, WorkerProcess)
    try:
        table = worker.sql(STATUS_SQL)
        totals = worker.sql(
            "SELECT (SELECT count() FROM traces), (SELECT count() FROM rejected_events)"
        )[1][0]
    except LlmpulseError:
        return None, None
    return table, totals


def status_view(
    page: str,
    table: StatusRows | None,
    totals: tuple[Any, ...] | None,
    elapsed: float | None,
) -> Group:
    """What the demo shows: the status page's URL on top, then the last minute per service."""
    head = Text.assemble(("status page ", "dim"), (page, "bold cyan"))
    if table is None or totals is None:
        return Group(head, Text("waiting for the first numbers...", style="dim"))
    cols, rows = table
    title = "last 60 s" + (f" at +{elapsed:.0f}s" if elapsed is not None else "")
    t = Table(*cols, title=f"{title}: {totals[0]:,} traces stored, {totals[1]} rejected")
    for r in rows:
        t.add_row(*(str(v) for v in r))
    return Group(head, t)
