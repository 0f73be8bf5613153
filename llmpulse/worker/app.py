"""The Faust app: lifecycle, web views, producer and sensors around the bulk topology.

Faust's own consumer path handles every message through an agent (a task per
message, locks, an Event object, acks): about 116 µs of wall time each on this
kind of machine. The app therefore starts without Faust's consumer
(``BootStrategy``), and a service drives :class:`~llmpulse.worker.runner.TopologyRunner`,
which consumes in bulk with its own ``AIOKafkaConsumer`` in the same consumer
group, and sends through the app's producer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable
from typing import Any

import faust
from faust.app.base import BootStrategy
from faust.web import Request, Response, View
from mode import Service

from llmpulse.access import Authorizer
from llmpulse.errors import ReadOnlyQueryError, StoreError
from llmpulse.ingest.kafka_security import faust_credentials
from llmpulse.otlp import OtlpReceiver
from llmpulse.otlp.web import traces_view
from llmpulse.settings import Settings
from llmpulse.store.client import SerialClient
from llmpulse.store.query import sql_limits
from llmpulse.store.readonly import encode_result, run_readonly
from llmpulse.web import register_pages
from llmpulse.worker.metrics import WorkerMetrics
from llmpulse.worker.runner import (
    MAX_MESSAGE_BYTES,
    REPARTITION_BATCH_BYTES,
    Message,
    TopologyRunner,
)

log = logging.getLogger("llmpulse.worker")

# EX_TEMPFAIL: the supervisor should restart us; Kafka redelivers the batch.
EXIT_STORE_UNAVAILABLE = 75
# A shutdown cut short by its deadline (see exit_after).
EXIT_SHUTDOWN_TIMEOUT = 70


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip()]


class _BulkBoot(BootStrategy):
    # No Faust consumer, conductor or table manager: the runner consumes.
    enable_kafka_consumer = False


class _App(faust.App):
    BootStrategy = _BulkBoot


class FaustSender:
    """The runner's :class:`~llmpulse.worker.runner.Sender` over the app's producer."""

    def __init__(self, app: faust.App) -> None:
        self.app = app

    async def send(self, message: Message) -> Awaitable[Any]:
        # Faust's producer takes positional arguments; no headers is None, not [].
        fut: Awaitable[Any] = await self.app.producer.send(
            message.topic,
            message.key,
            message.value,
            message.partition,
            None,  # timestamp: the producer takes its clock
            message.headers or None,
        )
        return fut


def create_app(
    settings: Settings,
    client: SerialClient,
    metrics: WorkerMetrics,
    make_runner: Any,
) -> tuple[faust.App, Any]:
    """The app, and a holder whose ``runner`` is set once the app's producer runs.

    ``make_runner(sender) -> TopologyRunner`` builds the runner (it needs the
    producer, which exists only inside the app).
    """
    app = _App(
        settings.worker.app_id,
        broker=broker_urls(settings.kafka.bootstrap),
        broker_client_id=settings.kafka.client_id,
        broker_credentials=faust_credentials(settings.kafka),
        store="memory://",
        datadir=str(settings.data_dir / "faust"),
        autodiscover=False,
        web_enabled=True,
        web_bind=settings.worker.web_host,
        web_host=settings.worker.web_host,
        web_port=settings.worker.web_port,
        topic_partitions=settings.topics.partitions,
        producer_acks=-1,
        producer_max_request_size=MAX_MESSAGE_BYTES,
        # Repartition messages are whole batches (up to 4 MiB). With aiokafka's
        # default 16 KiB batches each one is a batch of its own, and sending the
        # next to the same partition waits for the previous request's ack: the
        # send of one iteration's messages became a chain of round trips.
        producer_max_batch_size=REPARTITION_BATCH_BYTES,
        producer_linger_ms=5,
    )
    holder = _Holder()
    sender = FaustSender(app)
    authz = Authorizer.from_settings(settings.worker)

    def guarded(view: type[View]) -> type[View]:
        """``view`` behind the bearer-token check (``/health`` stays open); a view
        with a ``denied(access)`` method answers refusals itself (the page's HTML)."""

        class Guarded(view):  # type: ignore[valid-type, misc]
            async def dispatch(self, request: Any) -> Any:
                # path_qs: the page may carry its token as ?token= (access.PAGE_PATHS)
                access = authz.authorize(request.path_qs, request.headers)
                if not access.allowed:
                    if hasattr(self, "denied"):
                        return self.denied(access)
                    return self.json(
                        {"error": access.problem}, status=access.status, headers=access.headers
                    )
                request["llmpulse_tenant"] = access.tenant
                return await super().dispatch(request)

        Guarded.__name__ = view.__name__
        return Guarded

    @app.service
    class Topology(Service):
        """Starts the runner once the producer is up; stops it cleanly first."""

        async def on_start(self) -> None:
            runner: TopologyRunner = make_runner(sender)
            holder.runner = runner
            await runner.start()
            self._task = asyncio.ensure_future(runner.run())
            self._task.add_done_callback(_crashed)

        async def on_stop(self) -> None:
            runner = holder.runner
            if runner is None:
                return
            await runner.stop(timeout=settings.worker.shutdown_timeout_s / 2)
            task = getattr(self, "_task", None)
            if task is not None:
                try:
                    async with asyncio.timeout(10):
                        await task
                except (TimeoutError, asyncio.CancelledError):
                    task.cancel()

    class Health(View):
        async def get(self, request: Request) -> Response:
            runner = holder.runner
            s = runner.stats if runner is not None else None
            return self.json(
                {
                    "status": "ok",
                    "accepted": s.accepted if s else 0,
                    "duplicates": s.duplicates if s else 0,
                    "rejected": s.rejected_total if s else 0,
                    "windows": s.windows if s else 0,
                    "skipped_spans": s.skipped_spans if s else 0,
                    "partitions": len(runner.tasks) if runner is not None else 0,
                    "store": client.dsn.split("@")[-1],
                    # Liveness is this answer itself; readiness is /ready.
                    "ready": runner is not None and runner.ready,
                    "store_ok": runner.store.up if runner is not None else True,
                    "store_error": runner.store.last_error if runner is not None else "",
                    "store_outage_s": runner.store.outage_s(now_s=time.time())
                    if runner is not None
                    else 0.0,
                    "lag": sum(runner.lag().values()) if runner is not None else 0,
                }
            )

    class Ready(View):
        """200 once the worker owns its partitions and has restored their state
        (a load balancer or a test should not read through it before)."""

        async def get(self, request: Request) -> Response:
            runner = holder.runner
            ready = runner is not None and runner.ready
            return self.json({"ready": ready}, status=200 if ready else 503)

    class Metrics(View):
        async def get(self, request: Request) -> Response:
            runner = holder.runner
            if runner is not None:
                metrics.observe_lag(runner.lag())
            return self.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    class Sql(View):
        async def post(self, request: Request) -> Response:
            sql = (await request.read()).decode("utf-8", "replace")
            tenant = request.get("llmpulse_tenant")  # type: ignore[attr-defined]
            try:
                result = await asyncio.to_thread(
                    lambda: run_readonly(client, sql, tenant=tenant, settings=limits)
                )
            except ReadOnlyQueryError as exc:
                return self.json({"error": exc.problem}, status=403)
            except StoreError as exc:
                return self.json({"error": exc.problem}, status=400)
            return self.bytes(encode_result(result), content_type="application/json")

    async def produce_spans(value: bytes) -> None:
        # Awaited: the answer to the SDK means the request is durable in Kafka.
        await app.producer.send_and_wait(settings.otlp.topic, None, value, None, None, None)

    limits = sql_limits(settings)
    app.page("/health")(Health)
    app.page("/ready")(guarded(Ready))  # a readiness probe sends the token
    app.page("/metrics")(guarded(Metrics))
    app.page("/sql")(guarded(Sql))
    app.page("/v1/traces")(guarded(traces_view(OtlpReceiver(settings.otlp, produce_spans))))
    register_pages(app, client, guard=guarded)  # the live status page at /
    return app, holder


def exit_after(seconds: float) -> None:
    """End the process if a clean shutdown takes longer than ``seconds``.

    With the broker down, Faust's producer and aiokafka's coordinator wait for it
    on the way out, for minutes. Nothing is lost by cutting that short: offsets are
    committed only after checkpoints, which follow the writes, so the next owner
    redoes whatever this worker had not finished.
    """

    def expire() -> None:
        log.error("shutdown took longer than %.0fs; exiting now", seconds)
        logging.shutdown()
        os._exit(EXIT_SHUTDOWN_TIMEOUT)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True  # a clean exit before the deadline does not wait for it
    timer.start()


class _Holder:
    runner: TopologyRunner | None = None


def _crashed(task: asyncio.Future[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.critical("the topology stopped on an error; exiting for a restart", exc_info=exc)
        logging.shutdown()
        os._exit(EXIT_STORE_UNAVAILABLE)
