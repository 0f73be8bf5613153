"""The client library services use to publish LLM-call events to Kafka.

Encoding is kept apart from transport, as in the OpenTelemetry SDK: events are
encoded to JSON bytes and keyed by series in the caller's thread (so a bad event
is refused at once, with the caller's stack), then a background task batches the
bytes and hands them to a :class:`Transport`. The instrumented service must never
slow down or fail because observability is unhealthy, hence:

* ``emit`` is synchronous, never blocks and never raises; when the bounded buffer
  is full the event is dropped, counted and a rate-limited warning is logged;
* a failed batch is retried with exponential backoff, then counted as ``failed``
  and dropped.

Retries can publish a batch twice (the broker may have stored part of it before
the error): consumers deduplicate on ``event_id``, which every event carries.

>>> import asyncio
>>> async def demo() -> list[bytes | None]:
...     transport = MemoryTransport()
...     async with AsyncEmitter(transport) as emitter:
...         emitter.emit({"service": "chat-api", "endpoint": "/v1/chat", "model": "gpt-4o",
...                       "timestamp": 1767225600000, "latency_ms": 812.5})
...     return [r.key for r in transport.records]
>>> asyncio.run(demo())
[b'chat-api|/v1/chat|gpt-4o']
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

import orjson
from pydantic import BaseModel

from llmpulse.errors import ConfigError, KafkaError

__all__ = [
    "DEFAULT_TOPIC",
    "AsyncEmitter",
    "Emitter",
    "KafkaTransport",
    "MemoryTransport",
    "SentRecord",
    "Transport",
    "encode_event",
    "kafka_emitter",
    "series_key",
]

DEFAULT_TOPIC = "llm.traces"
SCHEMA_VERSION = 1

# Naive datetimes are taken as UTC because the contract wants a zone on every
# RFC 3339 timestamp; numpy scalars and arrays appear in embeddings and scores.
_ORJSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY

_COMPRESSION_TYPES = (None, "gzip", "snappy", "lz4", "zstd")

Record = tuple[bytes | None, bytes]
"""One Kafka message: (key, value)."""


class Transport(Protocol):
    """Carries encoded batches to the broker; the emitter owns batching and retries."""

    async def start(self) -> None: ...

    async def send_batch(self, topic: str, records: Sequence[Record]) -> None:
        """Publish every record, returning only once all are acknowledged (raise otherwise)."""
        ...

    async def close(self) -> None: ...


def _as_dict(event: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    # Absent is always valid for an optional field while null might not be, so
    # None values are left out rather than sent as null.
    if isinstance(event, BaseModel):
        return event.model_dump(by_alias=True, exclude_none=True)
    if isinstance(event, Mapping):
        return {k: v for k, v in event.items() if v is not None}
    raise TypeError(f"an event is a mapping or a pydantic model, not {type(event).__name__}")


def encode_event(event: Mapping[str, Any] | BaseModel) -> bytes:
    """Encode one event as compact JSON (None fields left out, datetimes as RFC 3339 UTC).

    >>> from datetime import datetime, timezone
    >>> encode_event({"model": "gpt-4o", "endpoint": None,
    ...               "timestamp": datetime(2026, 1, 1, tzinfo=timezone.utc)})
    b'{"model":"gpt-4o","timestamp":"2026-01-01T00:00:00Z"}'
    """
    return orjson.dumps(_as_dict(event), option=_ORJSON_OPTIONS)


def series_key(event: Mapping[str, Any]) -> bytes:
    """The Kafka key ``service|endpoint|model``: one series stays on one partition, in order.

    >>> series_key({"service": "chat-api", "endpoint": "/v1/chat", "model": "gpt-4o"})
    b'chat-api|/v1/chat|gpt-4o'
    >>> series_key({"service": "search", "model": "claude-haiku-4-5"})
    b'search||claude-haiku-4-5'
    """

    def part(name: str) -> str:
        value = event.get(name)
        return "" if value is None else str(value)

    return f"{part('service')}|{part('endpoint')}|{part('model')}".encode()


# --------------------------------------------------------------------------- transports


class KafkaTransport:
    """A :class:`Transport` on aiokafka's idempotent producer.

    ``send_batch`` hands every record to the producer first and only then awaits
    the acknowledgements, so the producer can pack them into few requests.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "llmpulse-emitter",
        acks: str | int = "all",
        linger_ms: int = 20,
        compression_type: str | None = None,
        request_timeout_ms: int = 30_000,
        enable_idempotence: bool = True,
        max_request_size: int = 1_048_576,
    ) -> None:
        if acks not in ("all", -1, 0, 1):
            raise ConfigError("acks", f"must be 'all', -1, 0 or 1, got {acks!r}")
        # The broker refuses idempotent writes that are not acknowledged by all
        # in-sync replicas; failing here beats failing on every batch later.
        if enable_idempotence and acks not in ("all", -1):
            raise ConfigError("acks", f"the idempotent producer needs acks='all', got {acks!r}")
        if compression_type not in _COMPRESSION_TYPES:
            raise ConfigError(
                "compression_type", f"must be one of {_COMPRESSION_TYPES}, got {compression_type!r}"
            )
        if linger_ms < 0 or request_timeout_ms <= 0:
            raise ConfigError("linger_ms", "linger_ms >= 0 and request_timeout_ms > 0 required")
        self.bootstrap = bootstrap
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "acks": acks,
            "linger_ms": linger_ms,
            "compression_type": compression_type,
            "request_timeout_ms": request_timeout_ms,
            "enable_idempotence": enable_idempotence,
            "max_request_size": max_request_size,
        }
        self._producer: Any = None

    async def start(self) -> None:
        if self._producer is not None:
            return
        from aiokafka import AIOKafkaProducer

        # Built here, not in __init__: aiokafka binds the running event loop.
        producer = AIOKafkaProducer(**self._options)
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


# --------------------------------------------------------------------------- emitters


class AsyncEmitter:
    """Buffers events and publishes them in batches from a background task.

    ``emit`` may be called from any thread; the background task runs on the event
    loop that called :meth:`start` (or the first ``emit`` made inside a running
    loop). Counters: ``sent`` (acknowledged), ``dropped`` (refused by ``emit``:
    buffer full, unencodable or oversized event, emitter closed; or still unsent
    when ``aclose`` timed out), ``failed`` (batches that exhausted their retries)
    and ``buffered`` (accepted, not yet sent nor failed).
    """

    def __init__(
        self,
        transport: Transport,
        topic: str = DEFAULT_TOPIC,
        *,
        max_buffer: int = 10_000,
        batch_size: int = 500,
        linger_s: float = 0.05,
        retries: int = 3,
        logger: logging.Logger | None = None,
        backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        send_timeout_s: float | None = 60.0,
        max_event_bytes: int = 1_000_000,
        warn_interval_s: float = 10.0,
    ) -> None:
        for name, value, low in (
            ("max_buffer", max_buffer, 1),
            ("batch_size", batch_size, 1),
            ("retries", retries, 0),
            ("max_event_bytes", max_event_bytes, 1),
        ):
            if value < low:
                raise ConfigError(name, f"must be >= {low}, got {value!r}")
        for name, seconds in (
            ("linger_s", linger_s),
            ("backoff_s", backoff_s),
            ("max_backoff_s", max_backoff_s),
        ):
            if seconds < 0:
                raise ConfigError(name, f"must be >= 0, got {seconds!r}")
        if send_timeout_s is not None and send_timeout_s <= 0:
            raise ConfigError("send_timeout_s", f"must be > 0 or None, got {send_timeout_s!r}")
        self.transport = transport
        self.topic = topic
        self._max_buffer = max_buffer
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._send_timeout_s = send_timeout_s
        self._max_event_bytes = max_event_bytes
        self._warn_interval_s = warn_interval_s
        self._log = logger or logging.getLogger(__name__)

        # emit() runs on caller threads, the sender on the loop: the lock guards
        # the buffer and the counters, and is never held across an await.
        self._lock = threading.Lock()
        self._buffer: deque[Record] = deque()
        self._accepted = 0  # sequence number of the last accepted event
        self._done = 0  # every event up to this sequence number is sent, failed or dropped
        self._inflight = 0
        self._sent = 0
        self._dropped = 0
        self._failed = 0
        self._unwarned_drops = 0
        self._last_warning = -float("inf")

        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._progress: asyncio.Event | None = None
        self._urgent = 0  # flush() callers waiting: the sender skips lingering
        self._transport_started = False
        self._closing = False
        self._closed = False

    # -- counters

    @property
    def sent(self) -> int:
        return self._sent

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def failed(self) -> int:
        return self._failed

    @property
    def buffered(self) -> int:
        with self._lock:
            return len(self._buffer) + self._inflight

    @property
    def closed(self) -> bool:
        return self._closed

    # -- lifecycle

    async def start(self) -> None:
        """Start the sender on the running loop (idempotent; ``emit`` in a loop does it too)."""
        self._start_on_running_loop()

    def _start_on_running_loop(self) -> None:
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()
        self._task = loop.create_task(self._run(), name="llmpulse-emitter")
        self._task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if self._progress is not None:
            self._progress.set()  # wake flush() waiters whatever happened
        if not task.cancelled() and task.exception() is not None:
            self._log.error("llmpulse emitter sender stopped", exc_info=task.exception())

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the caller's side

    def emit(self, event: Mapping[str, Any] | BaseModel) -> bool:
        """Queue one event; True if accepted. Never blocks, never raises."""
        try:
            data = _as_dict(event)
            data.setdefault("schema_version", SCHEMA_VERSION)
            if not data.get("event_id"):
                data["event_id"] = uuid.uuid4().hex
            value = orjson.dumps(data, option=_ORJSON_OPTIONS)
            key = series_key(data)
        except Exception as exc:
            self._count_drop(f"event cannot be encoded: {exc!r}")
            return False
        if len(value) > self._max_event_bytes:
            self._count_drop(f"event of {len(value)} bytes exceeds {self._max_event_bytes}")
            return False
        size = 0
        with self._lock:
            refused = self._closing or len(self._buffer) >= self._max_buffer
            if not refused:
                self._buffer.append((key, value))
                self._accepted += 1
                size = len(self._buffer)
        if refused:
            self._count_drop("emitter closed" if self._closing else "buffer full")
            return False
        # Waking the sender costs a syscall from another thread: only do it when
        # it may be idle (first event) or when a batch just filled up.
        if size in (1, self._batch_size):
            self._wake()
        return True

    def _wake(self) -> None:
        if self._task is None:
            try:
                self._start_on_running_loop()
            except RuntimeError:
                return  # no running loop here: events wait for start()
        loop, wakeup = self._loop, self._wakeup
        if loop is None or wakeup is None:
            return
        if threading.get_ident() == self._loop_thread:
            wakeup.set()
        else:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(wakeup.set)

    def _count_drop(self, reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._dropped += 1
            self._unwarned_drops += 1
            warn = now - self._last_warning >= self._warn_interval_s
            if warn:
                count, self._unwarned_drops = self._unwarned_drops, 0
                self._last_warning = now
        if warn:
            self._log.warning(
                "llmpulse emitter dropped %d event(s) since last warning (last reason: %s); "
                "%d dropped in total",
                count,
                reason,
                self._dropped,
            )

    # -- the sender

    async def _run(self) -> None:
        assert self._wakeup is not None and self._progress is not None
        wakeup, loop = self._wakeup, asyncio.get_running_loop()
        while True:
            if not self._buffer:
                if self._closing:
                    return
                wakeup.clear()
                if not self._buffer and not self._closing:
                    await wakeup.wait()
                continue
            # Linger a little so that a trickle of events still makes real batches.
            deadline = loop.time() + self._linger_s
            while len(self._buffer) < self._batch_size and not (self._urgent or self._closing):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                wakeup.clear()
                try:
                    await asyncio.wait_for(wakeup.wait(), remaining)
                except TimeoutError:
                    break
            with self._lock:
                count = min(self._batch_size, len(self._buffer))
                batch = [self._buffer.popleft() for _ in range(count)]
                self._inflight = count
            await self._send_with_retries(batch)

    async def _send_with_retries(self, batch: list[Record]) -> None:
        assert self._progress is not None
        outcome = "failed"
        try:
            for attempt in range(self._retries + 1):
                try:
                    if not self._transport_started:
                        await self.transport.start()
                        self._transport_started = True
                    if self._send_timeout_s is None:
                        await self.transport.send_batch(self.topic, batch)
                    else:
                        await asyncio.wait_for(
                            self.transport.send_batch(self.topic, batch), self._send_timeout_s
                        )
                except Exception as exc:
                    if attempt == self._retries:
                        self._log.warning(
                            "llmpulse emitter gave up on %d event(s) after %d attempt(s): %r",
                            len(batch),
                            attempt + 1,
                            exc,
                        )
                        break
                    delay = min(self._max_backoff_s, self._backoff_s * 2**attempt)
                    self._log.debug("llmpulse emitter send failed (%r), retry in %.2fs", exc, delay)
                    await asyncio.sleep(delay)
                else:
                    outcome = "sent"
                    break
        finally:
            # Also reached on cancellation (aclose timed out): the batch is then failed.
            with self._lock:
                if outcome == "sent":
                    self._sent += len(batch)
                else:
                    self._failed += len(batch)
                self._done += len(batch)
                self._inflight = 0
            self._progress.set()

    # -- flushing and closing

    async def flush(self) -> None:
        """Wait until every event accepted before this call is sent or failed.

        Waits as long as the transport does; bound it with ``asyncio.wait_for``.
        """
        target = self._accepted
        if self._done >= target:
            return
        self._start_on_running_loop()
        assert self._wakeup is not None and self._progress is not None
        task = self._task
        self._urgent += 1
        try:
            while self._done < target and task is not None and not task.done():
                self._progress.clear()
                self._wakeup.set()
                await self._progress.wait()
        finally:
            self._urgent -= 1

    async def aclose(self, timeout: float | None = 10.0) -> None:
        """Refuse new events, send the buffered ones (up to ``timeout`` seconds), close
        the transport. Events still unsent at the deadline are counted as dropped."""
        if self._closed:
            return
        with self._lock:
            self._closing = True
            pending = bool(self._buffer)
        if self._task is None and pending:
            self._start_on_running_loop()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        task = self._task
        if task is not None:
            if self._wakeup is not None:
                self._wakeup.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            except Exception:
                pass  # already logged by _on_task_done
        with self._lock:
            leftover = len(self._buffer)
            self._buffer.clear()
            self._dropped += leftover
            self._done += leftover
        if leftover:
            self._log.warning("llmpulse emitter closed with %d unsent event(s) dropped", leftover)
        if self._transport_started:
            remaining = None if deadline is None else max(1.0, deadline - loop.time())
            try:
                await asyncio.wait_for(self.transport.close(), remaining)
            except Exception as exc:
                self._log.warning("llmpulse emitter: closing the transport failed: %r", exc)
        self._closed = True


class Emitter:
    """A thread-safe, synchronous front for :class:`AsyncEmitter`, for threaded code.

    It runs the asynchronous emitter on its own event loop in a daemon thread. Call
    :meth:`close` (or use it as a context manager) to send what is buffered;
    ``close_at_exit=True`` registers that call with :mod:`atexit`.

    >>> transport = MemoryTransport()
    >>> with Emitter(transport, linger_s=0) as emitter:
    ...     emitter.emit({"service": "search", "model": "gpt-4o-mini", "timestamp": 0,
    ...                   "latency_ms": 5.0})
    True
    >>> emitter.sent, len(transport.records), transport.closed
    (1, 1, True)
    """

    def __init__(
        self,
        transport: Transport,
        topic: str = DEFAULT_TOPIC,
        *,
        max_buffer: int = 10_000,
        batch_size: int = 500,
        linger_s: float = 0.05,
        retries: int = 3,
        logger: logging.Logger | None = None,
        backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        send_timeout_s: float | None = 60.0,
        max_event_bytes: int = 1_000_000,
        warn_interval_s: float = 10.0,
        close_at_exit: bool = False,
        thread_name: str = "llmpulse-emitter",
    ) -> None:
        self._inner = AsyncEmitter(
            transport,
            topic,
            max_buffer=max_buffer,
            batch_size=batch_size,
            linger_s=linger_s,
            retries=retries,
            logger=logger,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            send_timeout_s=send_timeout_s,
            max_event_bytes=max_event_bytes,
            warn_interval_s=warn_interval_s,
        )
        self._log = logger or logging.getLogger(__name__)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name=thread_name, daemon=True)
        self._close_lock = threading.Lock()
        self._closed = False
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._inner.start(), self._loop).result()
        self._at_exit = close_at_exit
        if close_at_exit:
            atexit.register(self.close)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    @property
    def inner(self) -> AsyncEmitter:
        return self._inner

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
        return self._closed

    def emit(self, event: Mapping[str, Any] | BaseModel) -> bool:
        """Queue one event from any thread; True if accepted. Never blocks, never raises."""
        return self._inner.emit(event)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the events emitted so far are sent or failed; False on timeout."""
        if self._closed:
            return self._inner.buffered == 0
        future = asyncio.run_coroutine_threadsafe(self._inner.flush(), self._loop)
        try:
            future.result(timeout)
        except TimeoutError:
            future.cancel()
            return False
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Send what is buffered (up to ``timeout`` seconds), close the transport, stop
        the thread. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._at_exit:
            atexit.unregister(self.close)
        future = asyncio.run_coroutine_threadsafe(self._inner.aclose(timeout), self._loop)
        try:
            # aclose bounds itself; the margin covers closing the transport.
            future.result(timeout + 5.0)
        except Exception as exc:
            self._log.warning("llmpulse emitter did not close cleanly: %r", exc)
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def kafka_emitter(
    bootstrap: str,
    topic: str = DEFAULT_TOPIC,
    *,
    client_id: str = "llmpulse-emitter",
    acks: str | int = "all",
    linger_ms: int = 20,
    compression_type: str | None = None,
    request_timeout_ms: int = 30_000,
    **emitter_options: Any,
) -> Emitter:
    """A synchronous :class:`Emitter` publishing to Kafka at ``bootstrap``.

    ``emitter_options`` go to :class:`Emitter` (``max_buffer``, ``batch_size``,
    ``close_at_exit``...). The producer connects in the background: an unreachable
    broker shows as ``failed`` events and logged warnings, never as an exception.
    """
    transport = KafkaTransport(
        bootstrap,
        client_id=client_id,
        acks=acks,
        linger_ms=linger_ms,
        compression_type=compression_type,
        request_timeout_ms=request_timeout_ms,
    )
    return Emitter(transport, topic, **emitter_options)
