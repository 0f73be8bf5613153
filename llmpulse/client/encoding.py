"""Events to Kafka records: compact JSON values keyed by series.

Encoding happens in the caller's thread, so a bad event is refused at once,
with the caller's stack, and only bytes cross to the background sender.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import BaseModel

from llmpulse.schemas.version import SCHEMA_VERSION

__all__ = ["Record", "encode_event", "series_key", "to_record"]

Record = tuple[bytes | None, bytes]
"""One Kafka message: (key, value)."""

# Naive datetimes are taken as UTC because the contract wants a zone on every
# RFC 3339 timestamp; numpy scalars and arrays appear in embeddings and scores.
_ORJSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY


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


def to_record(event: Mapping[str, Any] | BaseModel) -> Record:
    """The record of one event, with ``schema_version`` and ``event_id`` filled in
    when absent (the caller's mapping is not modified); raises if unencodable.

    >>> key, value = to_record({"service": "s", "model": "m", "event_id": "e1"})
    >>> key, value
    (b's||m', b'{"service":"s","model":"m","event_id":"e1","schema_version":1}')
    """
    data = _as_dict(event)
    data.setdefault("schema_version", SCHEMA_VERSION)
    if not data.get("event_id"):
        data["event_id"] = uuid.uuid4().hex
    return series_key(data), orjson.dumps(data, option=_ORJSON_OPTIONS)
