"""The Faust app: a thin adapter from Kafka to the ingest pipeline.

Batches come from ``Stream.take_events``, which acks the batch's offsets only
after the loop body returns; the body therefore returns only once the rows are
durably in ClickHouse (it retries a failing store rather than raising, since an
exception would also ack the batch while unwinding).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import faust
from faust.web import Request, Response, View

from llmpulse.errors import ReadOnlyQueryError, StoreError
from llmpulse.pipeline import BatchOutcome, IngestPipeline
from llmpulse.processors.traces import RawMessage
from llmpulse.settings import Settings
from llmpulse.store.client import SerialClient
from llmpulse.store.readonly import encode_result, run_readonly
from llmpulse.web import register_pages
from llmpulse.worker.metrics import WorkerMetrics

log = logging.getLogger("llmpulse.worker")

# EX_TEMPFAIL: the supervisor should restart us; Kafka redelivers the batch.
EXIT_STORE_UNAVAILABLE = 75


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip()]


def to_messages(events: Any) -> list[RawMessage]:
    out = []
    for e in events:
        m = e.message
        value = m.value if isinstance(m.value, bytes) else b""
        out.append(RawMessage(value, f"kafka:{m.topic}/{m.partition}@{m.offset}", m.key))
    return out


class DurableHandler:
    """Runs the blocking pipeline in a thread until the batch is stored."""

    def __init__(self, pipeline: IngestPipeline, metrics: WorkerMetrics) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        # Batches and wall-clock ticks both move the window state: one at a time.
        self.lock = asyncio.Lock()

    async def tick(self) -> None:
        """Close the windows of quiet series (processing-time idleness)."""
        async with self.lock:
            try:
                written = await asyncio.to_thread(self.pipeline.tick)
            except Exception as exc:  # the next tick retries; windows stay open
                self.metrics.store_errors.inc()
                log.error("closing idle windows failed: %s", exc)
                return
        self.metrics.windows.inc(len(written))

    async def handle(self, messages: list[RawMessage]) -> BatchOutcome:
        async with self.lock:
            return await self._handle(messages)

    async def _handle(self, messages: list[RawMessage]) -> BatchOutcome:
        delay = 0.5
        while True:
            started = time.perf_counter()
            task = asyncio.ensure_future(asyncio.to_thread(self.pipeline.handle, messages))
            try:
                outcome = await asyncio.shield(task)
            except asyncio.CancelledError:
                await self._finish_before_cancel(task)
                raise
            except Exception as exc:
                self.metrics.store_errors.inc()
                log.error("store write failed, retrying in %.1fs: %s", delay, exc)
                try:
                    await asyncio.sleep(delay)
                except asyncio.CancelledError:
                    self._abandon("shutdown while the store is failing")
                delay = min(delay * 2, 30.0)
                continue
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
            self.metrics.record(outcome.stats)
            if len(outcome.written):
                newest = outcome.written.time_range()[1]
                self.metrics.last_event_time.set(newest.timestamp())
            return outcome

    async def _finish_before_cancel(self, task: asyncio.Future[BatchOutcome]) -> None:
        # Shutdown arrived mid-write: let the write finish so the acks that the
        # stream sends while unwinding are true; if it fails, leave without acks.
        try:
            await task
        except BaseException:
            self._abandon("shutdown during a failed store write")

    @staticmethod
    def _abandon(why: str) -> None:
        log.critical("%s: exiting without committing offsets; Kafka will redeliver", why)
        logging.shutdown()
        os._exit(EXIT_STORE_UNAVAILABLE)


def create_app(
    settings: Settings,
    client: SerialClient,
    pipeline: IngestPipeline,
    metrics: WorkerMetrics,
) -> faust.App:
    app = faust.App(
        settings.worker.app_id,
        broker=broker_urls(settings.kafka.bootstrap),
        broker_client_id=settings.kafka.client_id,
        store="memory://",
        datadir=str(settings.data_dir / "faust"),
        autodiscover=False,
        web_enabled=True,
        web_bind=settings.worker.web_host,
        web_host=settings.worker.web_host,
        web_port=settings.worker.web_port,
        topic_partitions=settings.topics.partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # take_events holds a batch unacked until it is stored; if the stream
        # buffer were smaller than a batch, every batch would wait `within`.
        stream_buffer_maxsize=max(4096, 2 * settings.worker.batch_size),
    )
    traces = app.topic(
        settings.topics.traces,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
    )
    dlq = app.topic(settings.topics.dlq, key_serializer="raw", value_serializer="raw")
    handler = DurableHandler(pipeline, metrics)
    batch_size = settings.worker.batch_size
    within = settings.worker.flush_interval_s

    @app.agent(traces, name="llmpulse.ingest")
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(batch_size, within=within):  # type: ignore[attr-defined]
            outcome = await handler.handle(to_messages(events))
            for r in outcome.rejections:
                try:
                    await dlq.send(
                        key=r.rejection_id.encode(),
                        value=r.raw,
                        headers={
                            "llmpulse-reason": r.reason.encode(),
                            "llmpulse-source": r.source.encode(),
                        },
                    )
                except Exception as exc:  # the row in rejected_events is the record
                    metrics.dlq_errors.inc()
                    log.warning("could not send rejection %s to DLQ: %s", r.rejection_id, exc)

    @app.timer(interval=1.0)
    async def close_idle_windows() -> None:
        await handler.tick()

    class Health(View):
        async def get(self, request: Request) -> Response:
            s = pipeline.stats
            return self.json(
                {
                    "status": "ok",
                    "accepted": s.accepted,
                    "duplicates": s.duplicates,
                    "rejected": s.rejected_total,
                    "windows": s.windows,
                    "store": client.dsn.split("@")[-1],
                }
            )

    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    class Sql(View):
        async def post(self, request: Request) -> Response:
            sql = (await request.read()).decode("utf-8", "replace")
            try:
                result = await asyncio.to_thread(run_readonly, client, sql)
            except ReadOnlyQueryError as exc:
                return self.json({"error": exc.problem}, status=403)
            except StoreError as exc:
                return self.json({"error": exc.problem}, status=400)
            return self.bytes(encode_result(result), content_type="application/json")

    app.page("/health")(Health)
    app.page("/metrics")(Metrics)
    app.page("/sql")(Sql)
    register_pages(app, client)  # the live status page at /
    return app
