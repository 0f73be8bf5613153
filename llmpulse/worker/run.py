"""Starting the worker process: store, topics, the Faust app around the topology."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from llmpulse.access import check_web_exposure
from llmpulse.devkafka.topics import ensure_topics, partition_counts
from llmpulse.ingest.kafka_security import aiokafka_security
from llmpulse.otlp import OtlpDecoder
from llmpulse.runtime import Stages, prepare_store, tune_gc
from llmpulse.scores.metrics import ScoreCollector
from llmpulse.settings import Settings
from llmpulse.store.writer import StoreWriter
from llmpulse.worker.metrics import RunnerCollector, WorkerMetrics
from llmpulse.worker.runner import MAX_MESSAGE_BYTES, Sender, TopologyConfig, TopologyRunner
from llmpulse.worker.store_health import StoreHealth

log = logging.getLogger("llmpulse.worker")


def topology_config(
    settings: Settings, inputs: dict[str, int], *, otlp_topic: str | None = None
) -> TopologyConfig:
    w, t, windows = settings.worker, settings.topics, settings.windows
    return TopologyConfig(
        app_id=w.app_id,
        inputs=inputs,  # as the broker has them: a topic may have more than configured
        partitions=t.partitions,  # the internal topics are created with this many
        dlq=t.dlq,
        otlp_topic=otlp_topic,
        scores_topic=t.scores,
        scores_dlq=t.scores_dlq,
        batch_size=w.batch_size,
        poll_s=w.flush_interval_s,  # a poll waits one flush interval at most for records
        commit_interval_s=w.commit_interval_s,
        # Without a setting of its own, a silent partition stops holding event time
        # back once its events would be too late anyway.
        idle_s=windows.allowed_lateness_s
        if windows.idle_timeout_s is None
        else windows.idle_timeout_s,
    )


async def prepare_topics(settings: Settings) -> TopologyConfig:
    """Create the input (traces, OTLP spans, scores), DLQ, control and internal
    topics; read the input partitions."""
    t = settings.topics
    bootstrap = settings.kafka.bootstrap
    otlp = settings.otlp.topic
    await ensure_topics(
        bootstrap,
        {
            t.traces: t.partitions,
            otlp: t.partitions,
            t.scores: t.partitions,
            t.dlq: t.partitions,
            t.scores_dlq: t.partitions,
            t.control: 1,
        },
    )
    inputs = await partition_counts(bootstrap, [t.traces, otlp])
    config = topology_config(settings, inputs, otlp_topic=otlp)
    big = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
    await ensure_topics(
        bootstrap,
        {
            config.events_topic: t.partitions,
            config.keyed_topic: t.partitions,
            config.changelog_topic: t.partitions,
        },
        configs={
            config.events_topic: big,
            config.keyed_topic: big,
            config.changelog_topic: {**big, "cleanup.policy": "compact"},
        },
    )
    return config


def _bounded_worker(base: type[Any], timeout_s: float) -> type[Any]:
    """Faust's worker class, with a deadline on the shutdown a signal starts.

    The deadline must start at the signal: the app's own stop flushes its producer
    first, which with the broker down waits for as long as the broker stays down.
    """
    from llmpulse.worker.app import exit_after

    class BoundedWorker(base):  # type: ignore[misc]
        def _on_sigterm(self) -> None:
            exit_after(timeout_s)
            super()._on_sigterm()

        def _on_sigint(self) -> None:
            exit_after(timeout_s)
            super()._on_sigint()

    return BoundedWorker


def run_worker(settings: Settings, *, loglevel: str = "info") -> int:
    import faust

    from llmpulse.worker.app import create_app

    check_web_exposure(settings.worker)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    client = prepare_store(settings)
    stages = Stages(settings, client, send_alerts=True, replay=False)
    # One score path per worker (docs/topology.md, "Scores"): it passes on scores
    # delivered again after a crash, since the crash may have lost their sends.
    scores = stages.score_path(resend_stored=True)
    try:
        config = asyncio.run(prepare_topics(settings))
        metrics = WorkerMetrics()
        metrics.registry.register(ScoreCollector(scores))

        def make_runner(sender: Sender) -> TopologyRunner:
            return TopologyRunner(
                config,
                stages,
                StoreWriter(client),
                sender,
                otlp=OtlpDecoder(settings.otlp, store_text=settings.clickhouse.store_text),
                security=aiokafka_security(settings.kafka),
                bootstrap=settings.kafka.bootstrap,
                client_id=settings.kafka.client_id,
                on_iteration=metrics.record_iteration,
                scores=scores,
                store_health=StoreHealth(on_write=metrics.write_seconds.observe),
            )

        app, holder = create_app(settings, client, metrics, make_runner)
        metrics.registry.register(RunnerCollector(lambda: holder.runner))
        if stages.dispatcher is not None:  # alert notifications: sent, retried, failed, queued
            metrics.registry.register(stages.dispatcher.metrics.registry)
        tune_gc()
        logging.getLogger("llmpulse").setLevel(loglevel.upper())
        worker = _bounded_worker(faust.Worker, settings.worker.shutdown_timeout_s)(
            app, loglevel=loglevel, quiet=True
        )
        code: int = 0
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:  # mode ends the worker with sys.exit
            code = int(exc.code or 0)
        if holder.runner is not None:
            holder.runner.close(timeout=5)
        scores.close(timeout=5)
        stages.close(timeout=5)
        return code
    finally:
        client.close()
