"""Small builders shared by tests."""

from __future__ import annotations

from typing import Any

import orjson

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
