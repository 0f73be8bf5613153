"""A generic webhook: every notified transition POSTed as JSON."""

from __future__ import annotations

from collections.abc import Mapping

from llmpulse.alerts.sinks.http import post_json
from llmpulse.alerts.state import Transition

__all__ = ["WebhookSink"]


class WebhookSink:
    """POSTs every notified transition as JSON (``Transition.to_dict`` plus ``version``)."""

    name = "webhook"

    def __init__(
        self, url: str, *, timeout: float = 10.0, headers: Mapping[str, str] | None = None
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.headers = dict(headers or {})

    def send(self, transition: Transition) -> None:
        if transition.notify:
            body = {"version": 1, **transition.to_dict()}
            post_json(self.name, self.url, body, timeout=self.timeout, headers=self.headers)
