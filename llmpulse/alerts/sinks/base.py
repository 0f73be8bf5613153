"""What every sink is: the :class:`Sink` protocol, plus the text helpers the
payload builders share."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from llmpulse.alerts.state import Transition

__all__ = ["Publish", "Sink", "clean", "truncate"]

Publish = Callable[[str, bytes, bytes], None]
"""``publish(topic, key, value)``: hands one message to Kafka, raising on failure."""


@runtime_checkable
class Sink(Protocol):
    """Delivers transitions somewhere. ``send`` is called from a dispatcher thread,
    one transition at a time per sink, and raises :class:`SinkError` on failure."""

    @property
    def name(self) -> str: ...

    def send(self, transition: Transition) -> None: ...


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clean(value: Any) -> Any:
    """Drop NaN/inf (no JSON spelling) from nested detail values."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    return value
