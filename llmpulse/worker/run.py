"""Starting the worker process: store, topics, Faust worker."""

from __future__ import annotations

import logging

from llmpulse.devkafka.topics import ensure_topics_sync
from llmpulse.runtime import build_pipeline, prepare_store, tune_gc
from llmpulse.settings import Settings
from llmpulse.worker.metrics import WorkerMetrics


def run_worker(settings: Settings, *, loglevel: str = "info") -> int:
    import faust

    from llmpulse.worker.app import create_app

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    client = prepare_store(settings)
    try:
        pipeline = build_pipeline(settings, client, send_alerts=True)
        t = settings.topics
        ensure_topics_sync(
            settings.kafka.bootstrap, {t.traces: t.partitions, t.dlq: t.partitions, t.control: 1}
        )
        app = create_app(settings, client, pipeline, WorkerMetrics())
        tune_gc()
        logging.getLogger("llmpulse").setLevel(loglevel.upper())
        worker = faust.Worker(app, loglevel=loglevel, quiet=True)
        code: int = 0
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:  # mode ends the worker with sys.exit
            code = int(exc.code or 0)
        pipeline.close(timeout=5)
        return code
    finally:
        client.close()
