"""PagerDuty Events API v2: a transition as a ``trigger`` or ``resolve`` event."""

from __future__ import annotations

from typing import Any, Final

from pydantic import SecretStr

from llmpulse.alerts.config import PAGERDUTY_EVENTS_URL, check_routing_key
from llmpulse.alerts.sinks.base import clean, truncate
from llmpulse.alerts.sinks.http import post_json
from llmpulse.alerts.state import AlertState, Transition
from llmpulse.errors import ConfigError

__all__ = ["PD_SUMMARY_MAX", "PagerDutySink", "pagerduty_event"]

PD_SUMMARY_MAX: Final = 1024


def pagerduty_event(
    t: Transition,
    routing_key: str,
    *,
    client: str = "llmpulse",
    client_url: str | None = None,
) -> dict[str, Any] | None:
    """The Events API v2 body of a transition: ``trigger`` when it fires, ``resolve``
    when it resolves (same ``dedup_key``: the incident key), None for transitions
    not notified."""
    if t.suppressed:
        return None
    if t.to_state is AlertState.FIRING:
        action = "trigger"
    elif t.to_state is AlertState.RESOLVED and t.from_state is AlertState.FIRING:
        action = "resolve"
    else:
        return None
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": t.page_key,
    }
    if action == "resolve":
        return body  # PagerDuty ignores a payload on resolve; the dedup key says it all
    labels = dict(t.labels)
    payload: dict[str, Any] = {
        "summary": truncate(t.summary or t.rule, PD_SUMMARY_MAX),
        "source": labels.get("service") or "llmpulse",
        "severity": t.severity,
        "timestamp": t.event_time.isoformat(timespec="milliseconds"),
        "class": t.signal or t.rule,
        "custom_details": clean(
            {
                "rule": t.rule,
                "kind": t.kind,
                "signal": t.signal,
                "value": t.value,
                "threshold": t.threshold,
                "window_seconds": t.window_seconds,
                "labels": labels,
                "event_time": t.event_time.isoformat(timespec="milliseconds"),
                "reason": t.reason,
                "alert_key": t.dedup_key,
                **({"details": dict(t.extra)} if t.extra else {}),
            }
        ),
    }
    if labels.get("model"):
        payload["component"] = labels["model"]
    if labels.get("service"):
        payload["group"] = labels["service"]
    body["payload"] = payload
    body["client"] = client
    if client_url:
        body["client_url"] = client_url
    links = [
        {"href": href, "text": text}
        for href, text in ((t.runbook_url, "Runbook"), (t.dashboard_url, "Dashboard"))
        if href
    ]
    if links:
        body["links"] = links
    return body


class PagerDutySink:
    """PagerDuty Events API v2."""

    name = "pagerduty"

    def __init__(
        self,
        routing_key: str | SecretStr,
        url: str = PAGERDUTY_EVENTS_URL,
        *,
        timeout: float = 10.0,
        client: str = "llmpulse",
        client_url: str | None = None,
    ) -> None:
        key = routing_key if isinstance(routing_key, SecretStr) else SecretStr(routing_key)
        try:
            check_routing_key(key)
        except ValueError as exc:
            raise ConfigError("pagerduty.routing_key", str(exc)) from None
        self._key = key
        self.url = url
        self.timeout = timeout
        self.client = client
        self.client_url = client_url

    def event(self, t: Transition) -> dict[str, Any] | None:
        return pagerduty_event(
            t, self._key.get_secret_value(), client=self.client, client_url=self.client_url
        )

    def send(self, transition: Transition) -> None:
        body = self.event(transition)
        if body is not None:
            post_json(self.name, self.url, body, timeout=self.timeout)

    def __repr__(self) -> str:
        return f"PagerDutySink(url={self.url!r})"
