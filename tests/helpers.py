"""Small builders shared by tests, and the running of workers, the CLI and Kafka I/O
for the integration tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from llmpulse.devkafka.broker import free_port
from llmpulse.worker.process import WorkerProcess

BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def event(i: int, **fields: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "schema_version": 1,
        "event_id": f"evt-{i}",
        "timestamp": BASE_MS + i * 100,
        "service": "chat-api",
        "endpoint": "/v1/chat",
        "model": "gpt-4o",
        "provider": "openai",
        "tenant": f"tenant-{i % 3}",
        "latency_ms": 100.0 + i,
        "input_tokens": 1000,
        "output_tokens": 200,
    }
    e.update(fields)
    return e


def raw(e: dict[str, Any]) -> bytes:
    return orjson.dumps(e)


class QuietHandler(BaseHTTPRequestHandler):
    """An HTTP handler of a test's stand-in server: it logs nothing, and
    :meth:`reply` sends a whole response."""

    def reply(
        self, status: int, body: bytes, content_type: str | None = "application/json"
    ) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


# ------------------------------------------------------------ processes and Kafka


def llmpulse(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    timeout: float = 300,
    stdin: str | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``python -m llmpulse *args`` with ``env`` over this process's environment;
    with ``check``, a non-zero exit fails the test with the command's output."""
    proc = subprocess.run(
        [sys.executable, "-m", "llmpulse", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )
    if check:
        assert proc.returncode == 0, (
            f"{list(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def store_rows(store: Path, sql: str) -> list[list[Any]]:
    """Rows of ``sql`` from an embedded store no process holds (one store per process)."""
    out = llmpulse(["sql", sql, "--clickhouse", f"chdb://{store}", "-f", "json"], check=True)
    return [list(r.values()) for r in orjson.loads(out.stdout)]


def worker_env(
    bootstrap: str,
    topic: str,
    tmp: Path,
    *,
    partitions: int | None = None,
    own_inputs: bool = False,
    app_id: str | None = None,
    port: int | None = None,
    **settings: object,
) -> dict[str, str]:
    """The environment of a worker reading ``topic`` (its DLQ and control topics
    named after it), storing into ``tmp``/store with data in ``tmp``/data.

    ``own_inputs``: private scores and OTLP topics too (the shared broker's default
    ones carry other tests' events). Each keyword in ``settings`` sets the variable
    of its upper-cased name: ``worker_batch_size=50`` is LLMPULSE_WORKER_BATCH_SIZE."""
    env = {
        "LLMPULSE_KAFKA_BOOTSTRAP": bootstrap,
        "LLMPULSE_TOPICS_TRACES": topic,
        "LLMPULSE_TOPICS_DLQ": topic + ".dlq",
        "LLMPULSE_TOPICS_CONTROL": topic + ".control",
        "LLMPULSE_WORKER_APP_ID": app_id or topic,
        "LLMPULSE_WORKER_WEB_PORT": str(port or free_port()),
        "LLMPULSE_DATA_DIR": str(tmp / "data"),
        "LLMPULSE_CLICKHOUSE_DSN": f"chdb://{tmp / 'store'}",
    }
    if partitions is not None:
        env["LLMPULSE_TOPICS_PARTITIONS"] = str(partitions)
    if own_inputs:
        env["LLMPULSE_TOPICS_SCORES"] = topic + "-scores"
        env["LLMPULSE_TOPICS_SCORES_DLQ"] = topic + "-scores.dlq"
        env["LLMPULSE_OTLP_TOPIC"] = topic + "-spans"
    env.update({f"LLMPULSE_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def worker_process(env: dict[str, str], log: Path) -> WorkerProcess:
    """A (not yet started) worker with ``env`` (from :func:`worker_env`), logging to ``log``."""
    return WorkerProcess(env, log, web_port=int(env["LLMPULSE_WORKER_WEB_PORT"]))


def produce(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes],
    keys: Sequence[bytes | None] | None = None,
    partitions: int | None = None,
) -> None:
    """Send ``values`` to ``topic`` and wait for every acknowledgement: unkeyed
    unless ``keys``; with ``partitions``, round robin over that many partitions."""

    async def go() -> None:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await p.start()
        try:
            for i, v in enumerate(values):
                part = None if partitions is None else i % partitions
                await p.send(topic, v, key=None if keys is None else keys[i], partition=part)
            await p.flush()
        finally:
            await p.stop()

    asyncio.run(go())


async def read_topic(
    bootstrap: str, topic: str, expected: int, timeout: float = 30.0, settle_s: float = 0.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """The records on ``topic`` from its start (no group) until ``expected`` came or
    ``timeout`` passed; then ``settle_s`` longer, so that extra ones show up."""
    c = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await c.start()
    got: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            for msgs in (await c.getmany(timeout_ms=500)).values():
                got.extend(msgs)
        if settle_s:
            for msgs in (await c.getmany(timeout_ms=int(settle_s * 1000))).values():
                got.extend(msgs)
    finally:
        await c.stop()
    return got


def consume(
    bootstrap: str, topic: str, expected: int, timeout: float = 30.0, settle_s: float = 0.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """:func:`read_topic` from synchronous code."""
    return asyncio.run(read_topic(bootstrap, topic, expected, timeout, settle_s))


def consume_values(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[bytes]:
    """The values of :func:`consume`."""
    return [m.value for m in consume(bootstrap, topic, expected, timeout)]
