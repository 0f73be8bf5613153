"""The emitters services use to publish LLM-call events to Kafka.

Events are encoded to JSON bytes and keyed by series in the caller's thread (so
a bad event is refused at once, with the caller's stack); a
:class:`~llmpulse.sender.BackgroundSender` then batches the bytes and hands
them to a :class:`~llmpulse.client.transports.Transport` from its own thread.
The instrumented service must never slow down or fail because observability
is unhealthy, hence:

* ``emit`` is synchronous, never blocks and never raises; when the bounded buffer
  is full the event is dropped, counted and a rate-limited warning is logged;
* a failed batch is retried with exponential backoff, then counted as ``failed``
  and dropped;
* after ``os.fork()`` (pre-fork servers such as gunicorn) the child gets its own
  sender thread and producer on its next ``emit``.

>>> from llmpulse.client.transports import MemoryTransport
>>> transport = MemoryTransport()
>>> with Emitter(transport, delivery=Delivery(linger_s=0)) as emitter:
...     emitter.emit({"service": "search", "model": "gpt-4o-mini", "timestamp": 0,
...                   "latency_ms": 5.0})
True
>>> emitter.sent, len(transport.records), transport.closed
(1, 1, True)
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self, TypedDict, Unpack

from pydantic import BaseModel

from llmpulse.client.encoding import Record, to_record
from llmpulse.client.settings import (
    DEFAULT_DELIVERY,
    DEFAULT_KAFKA_OPTIONS,
    DEFAULT_LIMITS,
    Delivery,
    KafkaOptions,
    Limits,
)
from llmpulse.client.transports import KafkaTransport, Transport
from llmpulse.sender import BackgroundSender, Backoff, LoopRunner, SenderListener

__all__ = ["DEFAULT_TOPIC", "AsyncEmitter", "Emitter", "kafka_emitter"]

DEFAULT_TOPIC = "llm.traces"

_SHUTDOWN = "shut down before sent"


class _Options(TypedDict, total=False):
    """Keyword options of :class:`Emitter` that its wrappers pass on unchanged."""

    delivery: Delivery
    limits: Limits
    logger: logging.Logger | None


class _KafkaOptions(_Options, total=False):
    close_at_exit: bool


class _Reporter(SenderListener[Record]):
    """Logs what the sender reports; drop warnings at most once per interval."""

    def __init__(self, log: logging.Logger, interval_s: float, dropped: Callable[[], int]) -> None:
        self._log = log
        self._interval_s = interval_s
        self._total = dropped
        self._lock = threading.Lock()
        self._unwarned = 0
        self._last = -float("inf")

    def retrying(
        self, batch: Sequence[Record], error: BaseException, attempt: int, delay: float
    ) -> None:
        self._log.debug("llmpulse emitter send failed (%r), retry in %.2fs", error, delay)

    def gave_up(self, batch: Sequence[Record], error: BaseException, attempts: int) -> None:
        self._log.warning(
            "llmpulse emitter gave up on %d event(s) after %d attempt(s): %r",
            len(batch),
            attempts,
            error,
        )

    def dropped(self, count: int, reason: str) -> None:
        if reason == _SHUTDOWN:
            self._log.warning("llmpulse emitter closed with %d unsent event(s) dropped", count)
            return
        now = time.monotonic()
        with self._lock:
            self._unwarned += count
            warn = now - self._last >= self._interval_s
            if warn:
                count, self._unwarned = self._unwarned, 0
                self._last = now
        if warn:
            self._log.warning(
                "llmpulse emitter dropped %d event(s) since last warning (last reason: %s); "
                "%d dropped in total",
                count,
                reason,
                self._total(),
            )


class Emitter:
    """Buffers events and publishes them in batches from a background thread.

    ``emit`` may be called from any thread. Call :meth:`close` (or use it as a
    context manager) to send what is buffered; ``close_at_exit=True`` registers
    that call with :mod:`atexit`. Counters: ``sent`` (acknowledged), ``dropped``
    (refused by ``emit``: buffer full, unencodable or oversized event, emitter
    closed; or still unsent when ``close`` timed out), ``failed`` (in batches
    that exhausted their retries) and ``buffered`` (accepted, not yet sent nor
    failed).
    """

    def __init__(
        self,
        transport: Transport,
        topic: str = DEFAULT_TOPIC,
        *,
        delivery: Delivery = DEFAULT_DELIVERY,
        limits: Limits = DEFAULT_LIMITS,
        logger: logging.Logger | None = None,
        close_at_exit: bool = False,
        thread_name: str = "llmpulse-emitter",
    ) -> None:
        self.transport = transport
        self.topic = topic
        self.delivery = delivery
        self.limits = limits
        self._log = logger or logging.getLogger(__name__)
        self._runner = LoopRunner()
        self._transport_started = False
        self._sender: BackgroundSender[Record] = BackgroundSender(
            self._export,
            name=thread_name,
            max_queue=limits.max_buffer,
            batch_size=delivery.batch_size,
            linger_s=delivery.linger_s,
            backoff=Backoff(
                attempts=delivery.retries + 1,
                initial_s=delivery.backoff_s,
                max_s=delivery.max_backoff_s,
            ),
            # Whatever the transport raises may pass: every failure is retried.
            retryable=lambda error: True,
            listener=_Reporter(self._log, limits.warn_interval_s, lambda: self.dropped),
            interrupt=self._runner.interrupt,
            after_fork=self._after_fork,
        )
        self._close_lock = threading.Lock()
        self._closed = False
        self._sender.start()
        self._at_exit = close_at_exit
        if close_at_exit:
            atexit.register(self.close)

    # -- counters

    @property
    def sent(self) -> int:
        return self._sender.sent

    @property
    def dropped(self) -> int:
        return self._sender.dropped

    @property
    def failed(self) -> int:
        return self._sender.failed

    @property
    def buffered(self) -> int:
        return self._sender.pending

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the caller's side

    def emit(self, event: Mapping[str, Any] | BaseModel) -> bool:
        """Queue one event from any thread; True if accepted. Never blocks, never raises."""
        try:
            record = to_record(event)
        except Exception as exc:
            self._sender.count_dropped(1, f"event cannot be encoded: {exc!r}")
            return False
        size = len(record[1])
        if size > self.limits.max_event_bytes:
            self._sender.count_dropped(
                1, f"event of {size} bytes exceeds {self.limits.max_event_bytes}"
            )
            return False
        return self._sender.offer(record)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the events emitted so far are sent or failed; False on timeout."""
        return self._sender.flush(timeout)

    def when_flushed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from any thread) once the events emitted so far are sent
        or failed."""
        self._sender.when_flushed(callback)

    def close(self, timeout: float = 10.0) -> None:
        """Send what is buffered (up to ``timeout`` seconds), close the transport, stop
        the thread. Events still unsent at the deadline are counted as dropped.
        Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._at_exit:
            atexit.unregister(self.close)
        deadline = time.monotonic() + timeout
        # After the deadline the send in flight is cancelled; the grace covers
        # the cancellation reaching the sender thread.
        self._sender.shutdown(timeout, grace_s=5.0)
        if self._sender.running:
            self._log.warning("llmpulse emitter did not close cleanly: its sender is stuck")
            return
        if self._transport_started:
            try:
                self._runner.run(self.transport.close(), max(1.0, deadline - time.monotonic()))
            except Exception as exc:
                self._log.warning("llmpulse emitter: closing the transport failed: %r", exc)
        self._runner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the sender thread

    def _export(self, batch: list[Record]) -> None:
        self._runner.run(self._send(batch))

    async def _send(self, batch: list[Record]) -> None:
        if not self._transport_started:
            await self.transport.start()
            self._transport_started = True
        send = self.transport.send_batch(self.topic, batch)
        if self.delivery.send_timeout_s is None:
            await send
        else:
            await asyncio.wait_for(send, self.delivery.send_timeout_s)

    def _after_fork(self) -> None:
        # Runs in a forked child: the loop and the producer's connections are
        # the parent's; the child makes its own on its next emit.
        self._runner.after_fork()
        forget = getattr(self.transport, "after_fork", None)
        if callable(forget):
            forget()
        self._transport_started = False
        self._close_lock = threading.Lock()


class AsyncEmitter:
    """The :class:`Emitter` for asyncio code: the same sender, awaitable flush and close.

    ``emit`` never blocks the event loop (nor any thread); the transport runs in
    the sender's own thread and loop, never on the caller's. ``options`` are the
    :class:`Emitter`'s ``delivery``, ``limits`` and ``logger``.

    >>> from llmpulse.client.transports import MemoryTransport
    >>> async def demo() -> list[bytes | None]:
    ...     transport = MemoryTransport()
    ...     async with AsyncEmitter(transport) as emitter:
    ...         emitter.emit({"service": "chat-api", "endpoint": "/v1/chat", "model": "gpt-4o",
    ...                       "timestamp": 1767225600000, "latency_ms": 812.5})
    ...     return [r.key for r in transport.records]
    >>> asyncio.run(demo())
    [b'chat-api|/v1/chat|gpt-4o']
    """

    def __init__(
        self, transport: Transport, topic: str = DEFAULT_TOPIC, **options: Unpack[_Options]
    ) -> None:
        self._inner = Emitter(transport, topic, **options)

    @property
    def transport(self) -> Transport:
        return self._inner.transport

    @property
    def topic(self) -> str:
        return self._inner.topic

    @property
    def sent(self) -> int:
        return self._inner.sent

    @property
    def dropped(self) -> int:
        return self._inner.dropped

    @property
    def failed(self) -> int:
        return self._inner.failed

    @property
    def buffered(self) -> int:
        return self._inner.buffered

    @property
    def closed(self) -> bool:
        return self._inner.closed

    def emit(self, event: Mapping[str, Any] | BaseModel) -> bool:
        """Queue one event; True if accepted. Never blocks, never raises."""
        return self._inner.emit(event)

    async def start(self) -> None:
        """Kept for symmetry with ``aclose``: the sender starts with the emitter."""

    async def flush(self) -> None:
        """Wait until every event accepted before this call is sent or failed.

        Waits as long as the transport does; bound it with ``asyncio.wait_for``.
        """
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def settle() -> None:
            if not done.done():
                done.set_result(None)

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone
                loop.call_soon_threadsafe(settle)

        self._inner.when_flushed(wake)
        await done

    async def aclose(self, timeout: float = 10.0) -> None:
        """Refuse new events, send the buffered ones (up to ``timeout`` seconds), close
        the transport. Events still unsent at the deadline are counted as dropped."""
        await asyncio.to_thread(self._inner.close, timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def kafka_emitter(
    bootstrap: str,
    topic: str = DEFAULT_TOPIC,
    *,
    kafka: KafkaOptions = DEFAULT_KAFKA_OPTIONS,
    **options: Unpack[_KafkaOptions],
) -> Emitter:
    """An :class:`Emitter` publishing to Kafka at ``bootstrap``; ``options`` are the
    emitter's (``delivery``, ``limits``, ``logger``, ``close_at_exit``).

    The producer connects in the background: an unreachable broker shows as
    ``failed`` events and logged warnings, never as an exception.
    """
    return Emitter(KafkaTransport(bootstrap, kafka), topic, **options)
