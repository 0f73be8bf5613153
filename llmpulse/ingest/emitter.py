"""Moved to :mod:`llmpulse.client`; this path keeps old imports working."""

from llmpulse.client.emitter import DEFAULT_TOPIC, AsyncEmitter, Emitter, kafka_emitter
from llmpulse.client.encoding import encode_event, series_key
from llmpulse.client.transports import KafkaTransport, MemoryTransport, SentRecord, Transport

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
