"""Access against real processes: ``llmpulse sql`` sends the token to the worker owning a
store, and the Kafka security arguments connect a real producer (the rest of access:
tests/unit/test_access.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmpulse.ingest.kafka_security import aiokafka_security
from llmpulse.settings import KafkaSettings
from tests.unit.test_access import FULL, _Recorder, recording_worker


@pytest.fixture
def worker_url() -> Iterator[str]:
    with recording_worker() as url:
        yield url


def test_llmpulse_sql_sends_the_token_to_the_worker_owning_the_store(
    worker_url: str, tmp_path: Path
) -> None:
    # A process holds the embedded store as a worker would, so `llmpulse sql`
    # must go through the worker's /sql (here a recording stand-in).
    store = tmp_path / "store"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, clickhouse_connect; c = clickhouse_connect.get_client(dsn=sys.argv[1]);"
         " c.command('SELECT 1'); print('ready', flush=True); sys.stdin.read()",
         f"chdb://{store}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        env = {**os.environ, "LLMPULSE_WORKER_TOKEN": FULL, "LLMPULSE_SQL_URL": worker_url,
               "LLMPULSE_CLICKHOUSE_DSN": f"chdb://{store}"}  # fmt: skip
        out = subprocess.run(
            [sys.executable, "-m", "llmpulse.cli.main", "sql", "SELECT 1", "-f", "json"],
            env=env, capture_output=True, text=True, cwd=tmp_path,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == [{"x": 1}]
        assert _Recorder.seen[-1]["Authorization"] == f"Bearer {FULL}"
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)


# ---------------------------------------------------------------- Kafka


@pytest.mark.kafka
async def test_kafka_arguments_connect_a_real_producer(kafka_bootstrap: str) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, **aiokafka_security(KafkaSettings())
    )
    await producer.start()
    try:
        meta = await producer.client.fetch_all_metadata()
        assert meta.brokers()
    finally:
        await producer.stop()
