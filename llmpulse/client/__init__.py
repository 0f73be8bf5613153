"""The client library: what runs inside a user's service to emit LLM-call events.

It needs no worker-side code (no Faust, no chDB): the emitters, the call timer,
their settings and the transports. Most users import from :mod:`llmpulse`.
"""

from llmpulse.client.emitter import DEFAULT_TOPIC, AsyncEmitter, Emitter, kafka_emitter
from llmpulse.client.encoding import Record, encode_event, series_key
from llmpulse.client.settings import Delivery, KafkaOptions, Limits
from llmpulse.client.timing import (
    CallRecord,
    CallTracker,
    SupportsEmit,
    UsageApi,
    track_llm_call,
    usage_fields,
)
from llmpulse.client.transports import KafkaTransport, MemoryTransport, SentRecord, Transport

__all__ = [
    "DEFAULT_TOPIC",
    "AsyncEmitter",
    "CallRecord",
    "CallTracker",
    "Delivery",
    "Emitter",
    "KafkaOptions",
    "KafkaTransport",
    "Limits",
    "MemoryTransport",
    "Record",
    "SentRecord",
    "SupportsEmit",
    "Transport",
    "UsageApi",
    "encode_event",
    "kafka_emitter",
    "series_key",
    "track_llm_call",
    "usage_fields",
]
