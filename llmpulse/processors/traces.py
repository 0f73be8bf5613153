"""Raw messages, rejections, and the per-event pricing rule. Pure: no I/O.

The pipeline validates and prices whole batches (``batch_validate``,
``batch_cost``); ``TraceProcessor.price`` is the per-event definition those
must match, and ``reject`` turns a validation error into a stored rejection.

>>> from llmpulse.processors.cost import PriceTable
>>> from llmpulse.processors.validate import validate_raw
>>> p = TraceProcessor(PriceTable.default())
>>> msg = RawMessage(b'{"schema_version":1}', "test:1")
>>> try:
...     validate_raw(msg.value)
... except ValidationError as err:
...     r = p.reject(msg, err)
>>> r.field, r.source
('event_id', 'test:1')
>>> e = validate_raw(b'{"schema_version":1,"event_id":"e1","timestamp":1767225600000,'
...                  b'"service":"s","model":"gpt-4o","latency_ms":5,"input_tokens":1000}')
>>> p.price(e).cost_source
'price_table'
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from llmpulse.errors import ValidationError
from llmpulse.processors.cost import PriceTable, cost_of_call
from llmpulse.schemas.event import TraceEvent
from llmpulse.schemas.rows import CostFields


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message as received; ``source`` says where from (topic/partition@offset, file:line)."""

    value: bytes
    source: str
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    rejection_id: str
    raw: bytes
    reason: str
    category: str
    field: str
    event_id: str
    source: str

    @property
    def raw_text(self) -> str:
        return self.raw.decode("utf-8", "replace")


def rejection_id(source: str, raw: bytes) -> str:
    # Same position and bytes -> same id: a redelivered or replayed bad message
    # is stored once, while two bad messages with equal text stay two rows.
    return hashlib.blake2b(source.encode() + b"\0" + raw, digest_size=16).hexdigest()


def _event_id_hint(raw: bytes) -> str:
    """Best-effort event id of a rejected message, for joining with the producer's logs."""
    try:
        import orjson

        data = orjson.loads(raw)
    except Exception:
        return ""
    value = data.get("event_id") if isinstance(data, dict) else None
    return value[:256] if isinstance(value, str) else ""


def reject(msg: RawMessage, error: ValidationError) -> Rejection:
    """The stored rejection of a message (trace or score) that broke its contract."""
    first = error.problems[0]
    return Rejection(
        rejection_id=rejection_id(msg.source, msg.value),
        raw=msg.value,
        reason=error.reason,
        category=error.category,
        field=first.field,
        event_id=_event_id_hint(msg.value),
        source=msg.source,
    )


class TraceProcessor:
    def __init__(self, prices: PriceTable) -> None:
        self.prices = prices

    def reject(self, msg: RawMessage, error: ValidationError) -> Rejection:
        return reject(msg, error)

    def price(self, event: TraceEvent) -> CostFields:
        c = cost_of_call(
            self.prices,
            model=event.model,
            provider=event.provider or None,
            at=event.timestamp,
            input_tokens=event.input_tokens,
            output_tokens=event.output_tokens,
            cached_input_tokens=event.cached_input_tokens,
            cache_creation_input_tokens=event.cache_creation_input_tokens,
            reasoning_tokens=event.reasoning_tokens,
            cost_usd=event.cost_usd,
        )
        version = self.prices.version if c.source == "price_table" else ""
        return CostFields(c.cost_usd, c.source, version)
