"""The emitter client library and the call-timing helper."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
from pydantic import BaseModel

from llmpulse import (
    AsyncEmitter,
    Delivery,
    Emitter,
    KafkaOptions,
    Limits,
    track_llm_call,
)
from llmpulse.client import KafkaTransport, MemoryTransport, encode_event, series_key, usage_fields
from llmpulse.errors import ConfigError, KafkaError
from llmpulse.processors.validate import validate_raw


def _event(i: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "service": ["chat-api", "search"][i % 2],
        "endpoint": "/v1/chat",
        "model": ["gpt-4o", "claude-haiku-4-5", "gemini-2.5-flash"][i % 3],
        "timestamp": 1_767_225_600_000 + i,
        "latency_ms": 100.0 + i,
        **extra,
    }


class HangingTransport:
    """A transport whose sends never complete, like a broker that stopped answering."""

    def __init__(self) -> None:
        self.calls = 0
        self.closed = False

    async def start(self) -> None:
        return None

    async def send_batch(self, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
        self.calls += 1
        await asyncio.Event().wait()

    async def close(self) -> None:
        self.closed = True


class FlakyStartTransport(MemoryTransport):
    def __init__(self, start_failures: int) -> None:
        super().__init__()
        self.start_failures = start_failures
        self.start_calls = 0

    async def start(self) -> None:
        self.start_calls += 1
        if self.start_failures > 0:
            self.start_failures -= 1
            raise KafkaError("memory://", "broker not up yet")
        await super().start()


# --------------------------------------------------------------------------- encoding


def test_series_key_and_encoding() -> None:
    assert series_key(_event(0)) == b"chat-api|/v1/chat|gpt-4o"
    assert series_key({"service": "s", "endpoint": None, "model": "m"}) == b"s||m"
    raw = encode_event(
        {
            "timestamp": datetime(2026, 1, 1, 12, 30),  # naive: taken as UTC
            "latency_ms": np.float32(1.5),
            "prompt_embedding": np.array([0.25, 0.5]),
            "endpoint": None,
        }
    )
    assert orjson.loads(raw) == {
        "timestamp": "2026-01-01T12:30:00Z",
        "latency_ms": 1.5,
        "prompt_embedding": [0.25, 0.5],
    }


def test_encode_pydantic_model() -> None:
    class Event(BaseModel):
        service: str
        model: str
        endpoint: str | None = None
        latency_ms: float

    assert orjson.loads(encode_event(Event(service="s", model="m", latency_ms=2))) == {
        "service": "s",
        "model": "m",
        "latency_ms": 2.0,
    }


def test_kafka_options_are_validated() -> None:
    with pytest.raises(ConfigError):
        KafkaOptions(acks=1)  # idempotence needs acks=all
    with pytest.raises(ConfigError):
        KafkaOptions(compression_type="brotli")  # type: ignore[arg-type]
    options = KafkaOptions(acks=1, enable_idempotence=False)
    transport = KafkaTransport("localhost:9092", options)
    assert transport.options.producer_config("localhost:9092")["acks"] == 1


def test_invalid_emitter_settings() -> None:
    with pytest.raises(ConfigError) as info:
        Limits(max_buffer=0)
    assert info.value.setting == "max_buffer"
    with pytest.raises(ConfigError):
        Delivery(linger_s=-1)
    with pytest.raises(ConfigError):
        Delivery(send_timeout_s=0)


# --------------------------------------------------------------------------- AsyncEmitter


async def test_batches_keys_and_filled_fields() -> None:
    transport = MemoryTransport()
    emitter = AsyncEmitter(transport, "t1", delivery=Delivery(batch_size=10, linger_s=5.0))
    caller_event = _event(0)
    assert emitter.emit(caller_event)
    assert "event_id" not in caller_event  # the caller's dict is not modified
    for i in range(1, 25):
        assert emitter.emit(_event(i))
    assert emitter.emit(_event(99, event_id="given", schema_version=1))
    await emitter.flush()  # flush does not wait out the long linger

    assert transport.batches == [10, 10, 6]
    assert emitter.sent == 26 and emitter.buffered == 0
    assert all(r.topic == "t1" for r in transport.records)
    events = transport.events()
    assert [e["latency_ms"] for e in events[:25]] == [100.0 + i for i in range(25)]  # in order
    for record, event in zip(transport.records, events, strict=True):
        assert record.key == series_key(event)
        assert event["schema_version"] == 1
    assert all(len(e["event_id"]) == 32 for e in events[:25])
    assert events[-1]["event_id"] == "given"
    assert len({e["event_id"] for e in events}) == 26
    await emitter.aclose()


async def test_linger_sends_without_flush() -> None:
    transport = MemoryTransport()
    async with AsyncEmitter(transport, delivery=Delivery(linger_s=0.01)) as emitter:
        for i in range(3):
            emitter.emit(_event(i))
        for _ in range(100):
            if emitter.sent == 3:
                break
            await asyncio.sleep(0.01)
        assert emitter.sent == 3
        assert transport.batches == [3]


async def test_full_buffer_drops_count_and_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    transport = HangingTransport()
    emitter = AsyncEmitter(
        transport, delivery=Delivery(batch_size=1, linger_s=0), limits=Limits(max_buffer=5)
    )
    assert emitter.emit(_event(0))
    while transport.calls == 0:  # wait until the sender is stuck on that event
        await asyncio.sleep(0.01)
    with caplog.at_level(logging.WARNING, logger="llmpulse.client.emitter"):
        accepted = [emitter.emit(_event(i)) for i in range(20)]
    assert accepted == [True] * 5 + [False] * 15
    assert emitter.dropped == 15 and emitter.buffered == 6
    drop_warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drop_warnings) == 1  # rate-limited
    await emitter.aclose(timeout=0.1)


async def test_bad_events_are_dropped_not_raised() -> None:
    transport = MemoryTransport()
    emitter = AsyncEmitter(transport, limits=Limits(max_event_bytes=10_000))
    assert emitter.emit({"service": object(), "model": "m"}) is False  # not serialisable
    assert emitter.emit(42) is False  # type: ignore[arg-type]
    assert emitter.emit({1: "non-str key"}) is False  # type: ignore[dict-item]
    assert emitter.emit(_event(0, prompt="x" * 20_000)) is False  # too big for one message
    assert emitter.dropped == 4
    assert emitter.emit(_event(1))
    await emitter.aclose()
    assert emitter.sent == 1 and len(transport.records) == 1


async def test_retries_with_backoff_then_succeeds() -> None:
    transport = MemoryTransport(fail_next=2)
    async with AsyncEmitter(transport, delivery=Delivery(retries=3, backoff_s=0.001)) as emitter:
        for i in range(5):
            emitter.emit(_event(i))
        await emitter.flush()
        assert emitter.sent == 5 and emitter.failed == 0
    assert transport.attempts == 3


async def test_exhausted_retries_count_failed_and_carry_on() -> None:
    transport = MemoryTransport(fail_next=3)
    emitter = AsyncEmitter(transport, delivery=Delivery(batch_size=4, retries=2, backoff_s=0.0))
    for i in range(4):
        emitter.emit(_event(i))
    await emitter.flush()  # never raises
    assert emitter.failed == 4 and emitter.sent == 0
    assert transport.attempts == 3  # 1 try + 2 retries
    emitter.emit(_event(9))
    await emitter.aclose()
    assert emitter.sent == 1 and emitter.failed == 4 and emitter.buffered == 0


async def test_transport_start_is_retried() -> None:
    transport = FlakyStartTransport(start_failures=1)
    async with AsyncEmitter(transport, delivery=Delivery(backoff_s=0.0)) as emitter:
        emitter.emit(_event(0))
        await emitter.flush()
        assert emitter.sent == 1
    assert transport.start_calls == 2 and transport.closed


async def test_emit_after_close_is_dropped() -> None:
    transport = MemoryTransport()
    async with AsyncEmitter(transport) as emitter:
        emitter.emit(_event(0))
    assert transport.closed and len(transport.records) == 1
    assert emitter.emit(_event(1)) is False
    assert emitter.dropped == 1
    await emitter.aclose()  # idempotent


async def test_emit_never_blocks_on_hanging_transport() -> None:
    transport = HangingTransport()
    emitter = AsyncEmitter(
        transport, delivery=Delivery(batch_size=50, linger_s=0.0), limits=Limits(max_buffer=1000)
    )
    emitter.emit(_event(0))
    await asyncio.sleep(0.05)  # the sender is now stuck in send_batch
    assert transport.calls == 1

    started = time.perf_counter()
    results = [emitter.emit(_event(i)) for i in range(5000)]
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, elapsed  # ~ microseconds each; a blocked emit would hang
    assert results.count(True) == 1000 and emitter.dropped == 4000

    started = time.perf_counter()
    await emitter.aclose(timeout=0.2)
    assert time.perf_counter() - started < 3.0
    # Every event is accounted for: the stuck batch failed, the rest were dropped.
    assert emitter.failed == 1
    assert emitter.sent + emitter.failed + emitter.dropped == 5001
    assert emitter.buffered == 0


async def test_emit_before_start_outside_loop_is_kept() -> None:
    transport = MemoryTransport()
    emitter = AsyncEmitter(transport)
    accepted: list[bool] = []
    # Emitted from a thread with no event loop: buffered until the sender starts.
    thread = threading.Thread(target=lambda: accepted.append(emitter.emit(_event(0))))
    thread.start()
    thread.join()
    assert accepted == [True]
    await emitter.start()
    await emitter.flush()
    assert emitter.sent == 1
    await emitter.aclose()


# --------------------------------------------------------------------------- Emitter


def test_sync_emitter_threads_and_flush_on_close() -> None:
    transport = MemoryTransport()
    emitter = Emitter(transport, delivery=Delivery(batch_size=64, linger_s=0.01))

    def worker(offset: int) -> None:
        for i in range(250):
            assert emitter.emit(_event(offset + i))

    threads = [threading.Thread(target=worker, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    emitter.close()
    assert emitter.closed and transport.closed
    assert emitter.sent == 1000 and len(transport.records) == 1000
    assert len({e["event_id"] for e in transport.events()}) == 1000
    assert max(transport.batches) <= 64
    assert emitter.emit(_event(0)) is False
    emitter.close()  # idempotent


def test_sync_emitter_flush() -> None:
    transport = MemoryTransport()
    with Emitter(transport, delivery=Delivery(linger_s=10.0)) as emitter:
        for i in range(3):
            emitter.emit(_event(i))
        assert emitter.flush(timeout=5.0)
        assert len(transport.records) == 3


def test_sync_emitter_with_hanging_transport_never_blocks() -> None:
    transport = HangingTransport()
    emitter = Emitter(transport, delivery=Delivery(linger_s=0.0), limits=Limits(max_buffer=100))
    started = time.perf_counter()
    for i in range(1000):
        emitter.emit(_event(i))
    assert time.perf_counter() - started < 1.0
    assert emitter.flush(timeout=0.1) is False
    started = time.perf_counter()
    emitter.close(timeout=0.2)
    assert time.perf_counter() - started < 3.0
    assert emitter.sent == 0
    assert emitter.failed + emitter.dropped == 1000


def test_close_at_exit_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    import atexit

    registered: list[Any] = []
    monkeypatch.setattr(atexit, "register", registered.append)
    monkeypatch.setattr(atexit, "unregister", registered.remove)
    emitter = Emitter(MemoryTransport(), close_at_exit=True)
    assert registered == [emitter.close]
    emitter.close()
    assert registered == []


# --------------------------------------------------------------------------- timing


class ListEmitter:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: Any) -> bool:
        self.events.append(dict(event))
        return True


def _ticks(*values: float) -> Any:
    return iter(values).__next__


def test_openai_chat_usage_object() -> None:
    usage = SimpleNamespace(
        prompt_tokens=1500,
        completion_tokens=420,
        total_tokens=1920,
        prompt_tokens_details=SimpleNamespace(cached_tokens=1024, audio_tokens=None),
        completion_tokens_details=SimpleNamespace(reasoning_tokens=256),
    )
    assert usage_fields(usage) == {
        "input_tokens": 1500,
        "output_tokens": 420,
        "cached_input_tokens": 1024,
        "reasoning_tokens": 256,
    }
    no_details = {"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": None}
    assert usage_fields(no_details) == {"input_tokens": 10, "output_tokens": 3}


def test_openai_responses_usage() -> None:
    usage = {
        "input_tokens": 2048,
        "input_tokens_details": {"cached_tokens": 1920},
        "output_tokens": 900,
        "output_tokens_details": {"reasoning_tokens": 640},
        "total_tokens": 2948,
    }
    assert usage_fields(usage) == {
        "input_tokens": 2048,
        "output_tokens": 900,
        "cached_input_tokens": 1920,
        "reasoning_tokens": 640,
    }


def test_anthropic_usage_converted_to_totals() -> None:
    usage = SimpleNamespace(
        input_tokens=35,
        cache_read_input_tokens=4000,
        cache_creation_input_tokens=1200,
        output_tokens=512,
        server_tool_use=None,
    )
    assert usage_fields(usage) == {
        "input_tokens": 5235,
        "output_tokens": 512,
        "cached_input_tokens": 4000,
        "cache_creation_input_tokens": 1200,
    }
    # Anthropic's SDK leaves the cache fields None when caching is not used.
    plain = SimpleNamespace(
        input_tokens=80, output_tokens=5, cache_read_input_tokens=None,
        cache_creation_input_tokens=None,
    )  # fmt: skip
    assert usage_fields(plain) == {"input_tokens": 80, "output_tokens": 5}


def test_gemini_usage_counts_thoughts_as_output() -> None:
    usage = {
        "promptTokenCount": 700,
        "cachedContentTokenCount": 512,
        "candidatesTokenCount": 100,
        "thoughtsTokenCount": 300,
    }
    assert usage_fields(usage) == {
        "input_tokens": 700,
        "output_tokens": 400,
        "cached_input_tokens": 512,
        "reasoning_tokens": 300,
    }


def test_unknown_usage_is_ignored_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError):
        usage_fields({"tokens": 3})
    sink = ListEmitter()
    with track_llm_call(sink, service="s", model="m") as call:
        call.record_usage({"tokens": 3})
        call.record_usage({"prompt_tokens": -1, "completion_tokens": True})  # junk counts
    assert "input_tokens" not in sink.events[0] and "output_tokens" not in sink.events[0]
    assert "usage ignored" in caplog.text


def test_track_success_fills_event() -> None:
    sink = ListEmitter()
    tracker = track_llm_call(
        sink,
        service="chat-api",
        model="gpt-4o",
        endpoint="/v1/chat",
        provider="openai",
        tenant="acme",
        team="platform",
        prompt_version="v2",
        variant="treatment",
        attributes={"region": "eu-west-1"},
        clock=lambda: 1_767_225_600.1234,
        perf=_ticks(50.0, 50.2, 51.5),
    )
    with tracker as call:
        call.first_token()
        call.first_token()  # only the first counts
        call.record_usage({"prompt_tokens": 12, "completion_tokens": 34})
        call.set(finish_reason="stop", response_model="gpt-4o-2024-08-06", scores={"q": 1.0})
        call.set(variant=None)
    (event,) = sink.events
    assert event["timestamp"] == 1_767_225_600_123
    assert event["latency_ms"] == pytest.approx(1500.0)
    assert event["ttft_ms"] == pytest.approx(200.0)
    assert event["status"] == "ok" and "error_type" not in event
    assert event["input_tokens"] == 12 and event["output_tokens"] == 34
    assert event["finish_reason"] == "stop" and event["scores"] == {"q": 1.0}
    assert "variant" not in event
    assert event["attributes"] == {"region": "eu-west-1"}
    assert event["event_id"] == call.event_id and call.emitted is True
    assert {k: event[k] for k in ("service", "model", "endpoint", "provider", "operation")} == {
        "service": "chat-api",
        "model": "gpt-4o",
        "endpoint": "/v1/chat",
        "provider": "openai",
        "operation": "chat",
    }


def test_track_error_reraises_and_records() -> None:
    sink = ListEmitter()

    class RateLimitError(Exception):
        pass

    with (
        pytest.raises(RateLimitError),
        track_llm_call(sink, service="s", model="m", perf=_ticks(1.0, 1.05)),
    ):
        raise RateLimitError("429")
    (event,) = sink.events
    assert event["status"] == "error" and event["error_type"] == "RateLimitError"
    assert event["latency_ms"] == pytest.approx(50.0)


def test_track_manual_failure_and_raising_emitter() -> None:
    class Broken:
        def emit(self, event: Any) -> bool:
            raise RuntimeError("emitter bug")

    with track_llm_call(Broken(), service="s", model="m") as call:
        call.fail("ContentFilter")
    assert call.emitted is False  # the emitter's bug did not escape

    with pytest.raises(ZeroDivisionError), track_llm_call(Broken(), service="s", model="m"):
        _ = 1 / 0  # the caller's exception is the one that propagates


async def test_track_async_with_emitter() -> None:
    transport = MemoryTransport()
    async with AsyncEmitter(transport) as emitter:
        async with track_llm_call(emitter, service="s", model="claude-haiku-4-5") as call:
            await asyncio.sleep(0.01)
            call.first_token()
            call.record_usage(
                {"input_tokens": 5, "cache_read_input_tokens": 95, "output_tokens": 7}
            )
        with pytest.raises(TimeoutError):
            async with track_llm_call(emitter, service="s", model="m"):
                raise TimeoutError
    ok, failed = transport.events()
    assert ok["status"] == "ok" and ok["input_tokens"] == 100 and ok["cached_input_tokens"] == 95
    assert 0 < ok["ttft_ms"] <= ok["latency_ms"]
    assert failed["status"] == "error" and failed["error_type"] == "TimeoutError"
    assert ok["schema_version"] == 1 and ok["event_id"] == call.event_id
    for record in transport.records:  # what the pipeline will receive passes its validator
        validate_raw(record.value)


# --------------------------------------------------------------------------- real Kafka
