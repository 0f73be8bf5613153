"""A development Kafka: a local KRaft broker from Maven-resolved jars, and topic setup.

``broker`` starts and stops the broker (no Docker needed), ``topics`` creates topics
through the admin API, ``testing`` picks a broker for test suites.
"""

from __future__ import annotations

from llmpulse.devkafka.broker import BrokerInfo, free_port, start, status, stop
from llmpulse.devkafka.jars import resolve_jars
from llmpulse.devkafka.topics import ensure_topics, ensure_topics_sync, wait_for_broker

__all__ = [
    "BrokerInfo",
    "ensure_topics",
    "ensure_topics_sync",
    "free_port",
    "resolve_jars",
    "start",
    "status",
    "stop",
    "wait_for_broker",
]
