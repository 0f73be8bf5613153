"""Settings of the alert sinks, mounted in the settings tree as ``alerts``.

With the tree's ``LLMPULSE_<SECTION>_<FIELD>`` convention these read
``LLMPULSE_ALERTS_PAGERDUTY_URL``, ``LLMPULSE_ALERTS_WEBHOOK_URL``... The issue's
``LLMPULSE_PAGERDUTY_URL`` and ``LLMPULSE_PAGERDUTY_ROUTING_KEY`` belong to the
``pagerduty`` section (:class:`PagerDutySettings`), which wins over the
``alerts.pagerduty_*`` fields when set (see ``build_sinks``).

>>> s = AlertSinkSettings(pagerduty_routing_key="R" * 32)
>>> s.pagerduty_url, s.pagerduty_routing_key
('https://events.pagerduty.com/v2/enqueue', SecretStr('**********'))
>>> from pydantic import ValidationError
>>> try:
...     AlertSinkSettings(pagerduty_routing_key="short")
... except ValidationError as exc:
...     print(exc.errors()[0]["msg"])
Value error, must be 32 characters (a PagerDuty Events API v2 integration key), got 5
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pydantic import BaseModel, Field, SecretStr, field_validator

__all__ = [
    "DEFAULT_ACTION_MAP",
    "PAGERDUTY_EVENTS_URL",
    "AlertSinkSettings",
    "PagerDutySettings",
    "check_routing_key",
]

PAGERDUTY_EVENTS_URL: Final = "https://events.pagerduty.com/v2/enqueue"
ROUTING_KEY_LENGTH: Final = 32

DEFAULT_ACTION_MAP: Final[dict[str, str]] = {
    "drift_detected": "retrain",
    "quality_drop": "rollback",
    "cost_spike": "throttle",
}


def check_routing_key(v: SecretStr | None) -> SecretStr | None:
    if v is not None and len(v.get_secret_value()) != ROUTING_KEY_LENGTH:
        raise ValueError(
            f"must be {ROUTING_KEY_LENGTH} characters (a PagerDuty Events API v2"
            f" integration key), got {len(v.get_secret_value())}"
        )
    return v


def _check_url(v: str | None) -> str | None:
    if v is not None and not v.startswith(("http://", "https://")):
        raise ValueError(f"must be an http(s) URL, got {v!r}")
    return v


class AlertSinkSettings(BaseModel):
    """Where alerts go and which rules raise them."""

    enabled: bool = Field(True, description="Evaluate alert rules at all")
    rules_file: Path | None = Field(None, description="Rules YAML; default: the shipped rules")
    pagerduty_url: str = Field(PAGERDUTY_EVENTS_URL, description="PagerDuty Events API v2 URL")
    pagerduty_routing_key: SecretStr | None = Field(
        None, description="Integration key of the PagerDuty service; unset: no PagerDuty sink"
    )
    webhook_url: str | None = Field(None, description="Generic JSON webhook receiving every alert")
    slack_webhook_url: SecretStr | None = Field(
        None, description="Slack incoming webhook URL (it embeds a secret)"
    )
    control_enabled: bool = Field(
        True, description="Publish control actions (retrain, rollback, throttle) to llm.control"
    )
    control_emit_resolved: bool = Field(
        False, description="Also publish a control event when the alert resolves"
    )
    action_map: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_ACTION_MAP),
        description="Rule name, category label or signal -> control action",
    )
    dashboard_base_url: str | None = Field(
        None, description="Grafana base URL for the dashboard link of alerts"
    )
    http_timeout_s: float = Field(10.0, gt=0, description="Timeout of one HTTP delivery")
    queue_size: int = Field(1000, ge=1, description="Alerts buffered per sink before dropping")
    max_attempts: int = Field(6, ge=1, description="Delivery attempts on 429/5xx/network errors")

    _routing_key = field_validator("pagerduty_routing_key")(check_routing_key)

    @field_validator("webhook_url", "dashboard_base_url", "pagerduty_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _check_url(v)


class PagerDutySettings(BaseModel):
    """``LLMPULSE_PAGERDUTY_URL`` / ``LLMPULSE_PAGERDUTY_ROUTING_KEY`` (section ``pagerduty``)."""

    url: str | None = Field(None, description="Overrides alerts.pagerduty_url")
    routing_key: SecretStr | None = Field(None, description="Overrides the alerts routing key")

    _routing_key = field_validator("routing_key")(check_routing_key)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _check_url(v)
