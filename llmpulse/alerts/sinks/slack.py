"""Slack incoming webhooks: a transition as a Block Kit message."""

from __future__ import annotations

from typing import Any, Final

from pydantic import SecretStr

from llmpulse.alerts.sinks.base import truncate
from llmpulse.alerts.sinks.http import post_json
from llmpulse.alerts.state import AlertState, Transition

__all__ = ["SlackSink", "slack_message"]

_SEVERITY_EMOJI: Final = {
    "critical": ":red_circle:",
    "error": ":large_orange_circle:",
    "warning": ":large_yellow_circle:",
    "info": ":large_blue_circle:",
}


def slack_message(t: Transition) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (notifications) plus Block Kit ``blocks``."""
    firing = t.to_state is AlertState.FIRING
    icon = _SEVERITY_EMOJI.get(t.severity, "") if firing else ":white_check_mark:"
    state = "FIRING" if firing else "RESOLVED"
    title = truncate(f"[{state}] {t.rule} ({t.severity})", 150)
    series = ", ".join(f"{k}={v}" for k, v in sorted(t.labels.items()) if k != "grouping")
    fields = [
        f"*Value*\n{t.value:.4g}",
        f"*Threshold*\n{t.threshold:.4g}",
        f"*Window*\n{t.window_seconds}s" if t.window_seconds else "*Window*\n-",
        f"*Series*\n{truncate(series or 'all', 1900)}",
    ]
    links = " · ".join(
        f"<{href}|{text}>"
        for href, text in ((t.runbook_url, "Runbook"), (t.dashboard_url, "Dashboard"))
        if href
    )
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title}},
        {"type": "section", "text": {"type": "mrkdwn", "text": truncate(t.summary, 3000)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    context = f"event time {t.event_time:%Y-%m-%d %H:%M:%S} UTC · dedup `{t.dedup_key}`"
    if links:
        context = f"{links} · {context}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": truncate(f"{icon} {state}: {t.summary}".strip(), 3000), "blocks": blocks}


class SlackSink:
    """Slack incoming webhook (the URL is a secret: it is never logged)."""

    name = "slack"

    def __init__(self, webhook_url: str | SecretStr, *, timeout: float = 10.0) -> None:
        self._url = webhook_url if isinstance(webhook_url, SecretStr) else SecretStr(webhook_url)
        self.timeout = timeout

    def send(self, transition: Transition) -> None:
        if transition.notify:
            post_json(
                self.name,
                self._url.get_secret_value(),
                slack_message(transition),
                timeout=self.timeout,
            )

    def __repr__(self) -> str:
        return "SlackSink(webhook_url=**********)"
