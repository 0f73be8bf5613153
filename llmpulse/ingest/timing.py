"""Moved to :mod:`llmpulse.client.timing`; this path keeps old imports working."""

from llmpulse.client.timing import (
    CallRecord,
    CallTracker,
    SupportsEmit,
    UsageApi,
    track_llm_call,
    usage_fields,
)

__all__ = [
    "CallRecord",
    "CallTracker",
    "SupportsEmit",
    "UsageApi",
    "track_llm_call",
    "usage_fields",
]
