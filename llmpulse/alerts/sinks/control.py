"""The control topic: firing alerts as actions (retrain, rollback, throttle...).

Kafka publishing is injected (:data:`~llmpulse.alerts.sinks.base.Publish`), so
nothing here imports a Kafka client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from llmpulse.alerts.config import DEFAULT_ACTION_MAP
from llmpulse.alerts.sinks.base import Publish
from llmpulse.alerts.state import AlertState, Transition
from llmpulse.errors import SinkError

__all__ = ["ControlSink", "actions_for", "control_event"]


def _norm(name: str) -> str:
    return name.replace("-", "_").replace(":", "_").lower()


def actions_for(t: Transition, action_map: Mapping[str, str]) -> tuple[str, ...]:
    """The control actions of a transition: the rule's ``actions``, else the first of
    its rule name, ``category`` label and signal found in ``action_map`` (a key also
    matches names it prefixes, so ``cost_spike`` covers ``cost-spike-per-minute``).

    >>> from datetime import UTC, datetime
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> t = Transition("cost-spike-per-minute", {}, AlertState.PENDING, AlertState.FIRING,
    ...                1.0, 0.5, 60, t0, t0, "k", "warning", "s")
    >>> actions_for(t, DEFAULT_ACTION_MAP)
    ('throttle',)
    """
    if t.actions:
        return tuple(t.actions)
    keys = {_norm(k): v for k, v in action_map.items()}
    for candidate in (t.rule, t.labels.get("category", ""), t.signal):
        c = _norm(candidate)
        if not c:
            continue
        for key, action in keys.items():
            if c == key or c.startswith(key + "_"):
                return (action,)
    return ()


# What a control event says of its transition, in the order it says it: the
# transition's own JSON form (Transition.to_dict), cut down.
_TRANSITION_FIELDS: Final = (
    "state",
    "rule",
    "signal",
    "severity",
    "labels",
    "value",
    "threshold",
    "dedup_key",
    "event_time",
    "wall_time",
    "summary",
)


def control_event(t: Transition, action: str) -> dict[str, Any]:
    """The JSON body of one control event on ``llm.control``."""
    fields = t.to_dict()
    return {
        "version": 1,
        "type": "llmpulse.control",
        "action": action,
        **{name: fields[name] for name in _TRANSITION_FIELDS},
    }


class ControlSink:
    """Publishes control actions (retrain, rollback, throttle...) for firing alerts.

    Messages are keyed by dedup key, so the events of one series stay in order
    in one partition. ``publish`` is called from the dispatcher thread: with an
    asyncio producer, wrap it with ``asyncio.run_coroutine_threadsafe(...).result()``.
    """

    name = "control"

    def __init__(
        self,
        publish: Publish,
        topic: str = "llm.control",
        action_map: Mapping[str, str] | None = None,
        *,
        emit_resolved: bool = False,
    ) -> None:
        self.publish = publish
        self.topic = topic
        self.action_map = dict(DEFAULT_ACTION_MAP if action_map is None else action_map)
        self.emit_resolved = emit_resolved

    def events(self, t: Transition) -> list[dict[str, Any]]:
        """The control events ``t`` produces (none for most transitions)."""
        if t.suppressed:
            return []
        if t.to_state is not AlertState.FIRING and not (
            self.emit_resolved and t.to_state is AlertState.RESOLVED
        ):
            return []
        return [control_event(t, a) for a in actions_for(t, self.action_map)]

    def send(self, transition: Transition) -> None:
        for event in self.events(transition):
            try:
                self.publish(self.topic, transition.dedup_key.encode(), orjson.dumps(event))
            except Exception as exc:  # whatever the producer raises, it may pass
                raise SinkError(
                    self.name, f"publish to {self.topic} failed: {exc!r}", retryable=True
                ) from exc
