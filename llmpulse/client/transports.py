"""Transports carry encoded batches to the broker; the emitter owns batching and retries.

Encoding is kept apart from transport, as in the OpenTelemetry SDK. Retries can
publish a batch twice (the broker may have stored part of it before the
error): consumers deduplicate on ``event_id``, which every event carries.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from llmpulse.client.encoding import Record
from llmpulse.client.settings import DEFAULT_KAFKA_OPTIONS, KafkaOptions
from llmpulse.errors import KafkaError

__all__ = ["KafkaTransport", "MemoryTransport", "SentRecord", "Transport"]


class Transport(Protocol):
    """Carries encoded batches to the broker.

    Its coroutines all run on one private event loop, in the emitter's sender
    thread. A transport holding connections may define ``after_fork()``, called
    in a forked child to forget the parent's (without closing them).
    """

    async def start(self) -> None: ...

    async def send_batch(self, topic: str, records: Sequence[Record]) -> None:
        """Publish every record, returning only once all are acknowledged (raise otherwise)."""
        ...

    async def close(self) -> None: ...


class KafkaTransport:
    """A :class:`Transport` on aiokafka's producer (idempotent by default).

    ``send_batch`` hands every record to the producer first and only then awaits
    the acknowledgements, so the producer can pack them into few requests.
    """

    def __init__(self, bootstrap: str, options: KafkaOptions = DEFAULT_KAFKA_OPTIONS) -> None:
        self.bootstrap = bootstrap
        self.options = options
        self._producer: Any = None

    async def start(self) -> None:
        if self._producer is not None:
            return
        from aiokafka import AIOKafkaProducer

        # Built here, not in __init__: aiokafka binds the running event loop.
        producer = AIOKafkaProducer(**self.options.producer_config(self.bootstrap))
        try:
            await producer.start()
        except Exception as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise KafkaError(self.bootstrap, f"cannot start producer: {exc!r}") from exc
        self._producer = producer

    async def send_batch(self, topic: str, records: Sequence[Record]) -> None:
        producer = self._producer
        if producer is None:
            raise KafkaError(self.bootstrap, "send_batch before start")
        try:
            futures = [await producer.send(topic, value, key=key) for key, value in records]
        except Exception as exc:
            raise KafkaError(self.bootstrap, f"send to {topic} failed: {exc!r}") from exc
        # return_exceptions so that every future is retrieved (no "exception never
        # retrieved" noise) even when several records fail.
        results = await asyncio.gather(*futures, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise KafkaError(
                self.bootstrap,
                f"{len(errors)}/{len(records)} records to {topic} not acknowledged: {errors[0]!r}",
            ) from errors[0]

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    def after_fork(self) -> None:
        from llmpulse.sender import abandon_in_child

        # The producer's sockets and loop are the parent's: never closed here.
        abandon_in_child(self._producer)
        self._producer = None


@dataclass(frozen=True, slots=True)
class SentRecord:
    """A record a :class:`MemoryTransport` accepted."""

    topic: str
    key: bytes | None
    value: bytes

    def event(self) -> dict[str, Any]:
        decoded: dict[str, Any] = orjson.loads(self.value)
        return decoded


class MemoryTransport:
    """An in-memory :class:`Transport` for tests of code that emits events.

    ``fail_next`` makes that many upcoming ``send_batch`` calls raise
    :class:`~llmpulse.errors.KafkaError`; ``batches`` holds the size of every
    accepted batch and ``attempts`` counts every call, failed or not.

    >>> import asyncio
    >>> t = MemoryTransport(fail_next=1)
    >>> asyncio.run(t.send_batch("llm.traces", [(b"k", b"{}")]))
    Traceback (most recent call last):
    llmpulse.errors.KafkaError: kafka memory://: injected failure
    >>> asyncio.run(t.send_batch("llm.traces", [(b"k", b"{}")]))
    >>> t.records, t.attempts
    ([SentRecord(topic='llm.traces', key=b'k', value=b'{}')], 2)
    """

    def __init__(self, *, fail_next: int = 0) -> None:
        self.records: list[SentRecord] = []
        self.batches: list[int] = []
        self.fail_next = fail_next
        self.attempts = 0
        self.started = False
        self.closed = False

    async def start(self) -> None:
        self.started = True

    async def send_batch(self, topic: str, records: Sequence[Record]) -> None:
        self.attempts += 1
        # Yield once, as a network send would, so callers' concurrency is exercised.
        await asyncio.sleep(0)
        if self.fail_next > 0:
            self.fail_next -= 1
            raise KafkaError("memory://", "injected failure")
        self.records.extend(SentRecord(topic, key, value) for key, value in records)
        self.batches.append(len(records))

    async def close(self) -> None:
        self.closed = True

    def events(self) -> list[dict[str, Any]]:
        """Every accepted record decoded, in order."""
        return [r.event() for r in self.records]
