"""llmpulse: streaming observability for LLM calls.

What a service author needs is importable from here: the emitters, the call
timer, their settings, the event model and the errors.

>>> from llmpulse import Emitter, MemoryTransport, track_llm_call
>>> with Emitter(MemoryTransport()) as emitter:
...     with track_llm_call(emitter, service="chat-api", model="gpt-4o") as call:
...         call.record_usage({"prompt_tokens": 12, "completion_tokens": 3})
>>> emitter.sent
1

Names load on first use, so ``import llmpulse`` stays cheap and the client side
never loads worker code (Faust, chDB, numpy).
"""

# Imported under private names: every public name here is in __all__ (tested).
import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

__version__ = "0.1.0"

if _TYPE_CHECKING:
    from llmpulse.client.emitter import DEFAULT_TOPIC, AsyncEmitter, Emitter, kafka_emitter
    from llmpulse.client.encoding import encode_event
    from llmpulse.client.settings import Delivery, KafkaOptions, Limits
    from llmpulse.client.timing import CallRecord, track_llm_call, usage_fields
    from llmpulse.client.transports import KafkaTransport, MemoryTransport, Transport
    from llmpulse.errors import (
        ConfigError,
        DecodeError,
        FieldProblem,
        KafkaError,
        LlmpulseError,
        PriceTableError,
        ReadOnlyQueryError,
        SinkError,
        StoreError,
        StoreLockedError,
        ValidationError,
    )
    from llmpulse.schemas.event import TraceEvent
    from llmpulse.schemas.version import SCHEMA_VERSION

# name -> the module that defines it (the exported-members test checks both).
_EXPORTS: dict[str, str] = {
    "DEFAULT_TOPIC": "llmpulse.client.emitter",
    "AsyncEmitter": "llmpulse.client.emitter",
    "Emitter": "llmpulse.client.emitter",
    "kafka_emitter": "llmpulse.client.emitter",
    "encode_event": "llmpulse.client.encoding",
    "Delivery": "llmpulse.client.settings",
    "KafkaOptions": "llmpulse.client.settings",
    "Limits": "llmpulse.client.settings",
    "CallRecord": "llmpulse.client.timing",
    "track_llm_call": "llmpulse.client.timing",
    "usage_fields": "llmpulse.client.timing",
    "KafkaTransport": "llmpulse.client.transports",
    "MemoryTransport": "llmpulse.client.transports",
    "Transport": "llmpulse.client.transports",
    "ConfigError": "llmpulse.errors",
    "DecodeError": "llmpulse.errors",
    "FieldProblem": "llmpulse.errors",
    "KafkaError": "llmpulse.errors",
    "LlmpulseError": "llmpulse.errors",
    "PriceTableError": "llmpulse.errors",
    "ReadOnlyQueryError": "llmpulse.errors",
    "SinkError": "llmpulse.errors",
    "StoreError": "llmpulse.errors",
    "StoreLockedError": "llmpulse.errors",
    "ValidationError": "llmpulse.errors",
    "TraceEvent": "llmpulse.schemas.event",
    "SCHEMA_VERSION": "llmpulse.schemas.version",
}


def __getattr__(name: str) -> _Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "DEFAULT_TOPIC",
    "SCHEMA_VERSION",
    "AsyncEmitter",
    "CallRecord",
    "ConfigError",
    "DecodeError",
    "Delivery",
    "Emitter",
    "FieldProblem",
    "KafkaError",
    "KafkaOptions",
    "KafkaTransport",
    "Limits",
    "LlmpulseError",
    "MemoryTransport",
    "PriceTableError",
    "ReadOnlyQueryError",
    "SinkError",
    "StoreError",
    "StoreLockedError",
    "TraceEvent",
    "Transport",
    "ValidationError",
    "__version__",
    "encode_event",
    "kafka_emitter",
    "track_llm_call",
    "usage_fields",
]
