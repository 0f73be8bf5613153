"""The sinks the settings configure."""

from __future__ import annotations

import logging

from pydantic import SecretStr

from llmpulse.alerts.config import AlertSinkSettings
from llmpulse.alerts.sinks.base import Publish, Sink
from llmpulse.alerts.sinks.control import ControlSink
from llmpulse.alerts.sinks.pagerduty import PagerDutySink
from llmpulse.alerts.sinks.slack import SlackSink
from llmpulse.alerts.sinks.webhook import WebhookSink

__all__ = ["build_sinks"]

log = logging.getLogger("llmpulse.alerts")


def build_sinks(
    settings: AlertSinkSettings,
    pagerduty_url: str | None = None,
    pagerduty_routing_key: str | SecretStr | None = None,
    *,
    publish: Publish | None = None,
    control_topic: str = "llm.control",
) -> list[Sink]:
    """The sinks the settings configure.

    ``pagerduty_url``/``pagerduty_routing_key`` (the ``pagerduty`` section:
    ``LLMPULSE_PAGERDUTY_URL``, ``LLMPULSE_PAGERDUTY_ROUTING_KEY``) win over the
    ``alerts.pagerduty_*`` fields. PagerDuty needs a routing key; the control sink
    needs ``publish`` and is left out (with a log line) without one.

    >>> [s.name for s in build_sinks(AlertSinkSettings(), None, "K" * 32,
    ...                              publish=lambda topic, key, value: None)]
    ['pagerduty', 'control']
    """
    sinks: list[Sink] = []
    timeout = settings.http_timeout_s
    key = pagerduty_routing_key or settings.pagerduty_routing_key
    if key is not None:
        sinks.append(PagerDutySink(key, pagerduty_url or settings.pagerduty_url, timeout=timeout))
    if settings.webhook_url:
        sinks.append(WebhookSink(settings.webhook_url, timeout=timeout))
    if settings.slack_webhook_url is not None:
        sinks.append(SlackSink(settings.slack_webhook_url, timeout=timeout))
    if settings.control_enabled:
        if publish is None:
            log.info("alerts: no Kafka producer given, control events are not published")
        else:
            sinks.append(
                ControlSink(
                    publish,
                    control_topic,
                    settings.action_map,
                    emit_resolved=settings.control_emit_resolved,
                )
            )
    return sinks
