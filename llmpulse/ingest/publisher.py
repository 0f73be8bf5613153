"""A synchronous Kafka publisher for code running in threads (alert sinks).

aiokafka is asyncio-only; this runs one producer on a private event loop in a
daemon thread, so ``publish`` can be called from any thread and waits for the
broker's acknowledgement with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from aiokafka import AIOKafkaProducer

from llmpulse.errors import KafkaError


class KafkaPublisher:
    def __init__(
        self, bootstrap: str, *, client_id: str = "llmpulse", timeout_s: float = 10.0
    ) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="kafka-publisher"
        )
        self._thread.start()
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    async def _producer_ready(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, client_id=self._client_id, acks="all"
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()  # a failed start still holds connections
                raise
            self._producer = producer
        return self._producer

    async def _send(self, topic: str, key: bytes, value: bytes) -> None:
        producer = await self._producer_ready()
        await producer.send_and_wait(topic, value, key=key)

    def publish(self, topic: str, key: bytes, value: bytes) -> None:
        future = asyncio.run_coroutine_threadsafe(self._send(topic, key, value), self._loop)
        try:
            future.result(self.timeout_s)
        except Exception as exc:
            future.cancel()
            raise KafkaError(self.bootstrap, f"publishing to {topic} failed: {exc!r}") from exc

    def close(self) -> None:
        async def stop() -> None:
            if self._producer is not None:
                await self._producer.stop()

        # Closing is best effort; the thread is a daemon.
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(self.timeout_s)
        self._loop.call_soon_threadsafe(self._loop.stop)
