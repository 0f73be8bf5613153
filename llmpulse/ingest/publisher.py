"""A synchronous Kafka publisher for code running in threads (alert sinks).

aiokafka is asyncio-only: ``publish`` hands the message to a
:class:`~llmpulse.sender.BackgroundSender`, whose thread sends it on a private
event loop (with whatever other threads published meanwhile), and waits for
the broker's acknowledgement with a timeout. Retrying is the caller's choice
(the alert dispatcher retries a failed control event).
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future
from dataclasses import dataclass

from llmpulse.client.settings import KafkaOptions
from llmpulse.client.transports import KafkaTransport
from llmpulse.errors import KafkaError
from llmpulse.sender import BackgroundSender, Backoff, LoopRunner

__all__ = ["KafkaPublisher"]


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    key: bytes
    value: bytes
    done: Future[None]


class KafkaPublisher:
    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "llmpulse",
        timeout_s: float = 10.0,
        max_queue: int = 10_000,
    ) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        # No linger: a publisher waits for each message, so a linger is pure delay.
        self._transport = KafkaTransport(bootstrap, KafkaOptions(client_id=client_id, linger_ms=0))
        self._runner = LoopRunner()
        self._sender: BackgroundSender[_Message] = BackgroundSender(
            self._export,
            name="kafka-publisher",
            max_queue=max_queue,
            batch_size=500,
            backoff=Backoff(attempts=1),
            interrupt=self._runner.interrupt,
            after_fork=self._after_fork,
        )

    def publish(self, topic: str, key: bytes, value: bytes) -> None:
        """Send one message and wait for the broker's acknowledgement; raise
        :class:`~llmpulse.errors.KafkaError` if it does not come in time."""
        done: Future[None] = Future()
        if not self._sender.offer(_Message(topic, key, value, done)):
            reason = "publisher closed" if self._sender.closed else "too many messages waiting"
            raise KafkaError(self.bootstrap, f"publishing to {topic} refused: {reason}")
        try:
            done.result(self.timeout_s)
        except Exception as exc:
            done.cancel()  # still queued: it will not be sent after we gave up on it
            raise KafkaError(self.bootstrap, f"publishing to {topic} failed: {exc!r}") from exc

    def _export(self, batch: list[_Message]) -> None:
        # Messages whose caller already gave up are skipped.
        live = [m for m in batch if m.done.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            self._runner.run(self._send(live), self.timeout_s)
        except Exception as exc:
            for m in live:  # timed out or interrupted before an answer
                if not m.done.done():
                    m.done.set_exception(exc)
            raise

    async def _send(self, messages: list[_Message]) -> None:
        try:
            await self._transport.start()
        except Exception as exc:
            for m in messages:
                m.done.set_exception(exc)
            raise
        by_topic: dict[str, list[_Message]] = {}
        for m in messages:
            by_topic.setdefault(m.topic, []).append(m)
        errors: list[BaseException] = []
        for topic, group in by_topic.items():
            try:
                await self._transport.send_batch(topic, [(m.key, m.value) for m in group])
            except Exception as exc:
                errors.append(exc)
                for m in group:
                    m.done.set_exception(exc)
            else:
                for m in group:
                    m.done.set_result(None)
        if errors:
            raise errors[0]

    def _after_fork(self) -> None:
        self._runner.after_fork()
        self._transport.after_fork()

    def close(self) -> None:
        """Send what is queued, then stop the producer (best effort, bounded by
        ``timeout_s``)."""
        self._sender.shutdown(self.timeout_s, grace_s=1.0)
        if self._sender.running:
            return  # the thread, a daemon, still holds the loop
        with contextlib.suppress(Exception):
            self._runner.run(self._transport.close(), self.timeout_s)
        self._runner.close()
