"""Alerting: rules over live signals, alert states, and the sinks that page people.

The core is pure and clock-free (``signals``, ``rules``, ``state``, ``engine``):
producers turn window results, budget statuses and detector verdicts into
:class:`Signal` values; an :class:`AlertEngine` runs the :class:`RuleSet` over
them and returns :class:`Transition` values (``inactive -> pending -> firing ->
resolved`` per rule and series). The adapters (``sinks``) deliver the notified
transitions to PagerDuty, webhooks, Slack and the ``llm.control`` topic
through a :class:`Dispatcher` that never blocks the stream; every transition
is also a row of the ClickHouse table ``alerts`` (:data:`ALERTS_DDL`,
:func:`transition_row`), from which a restarted worker resumes
(:func:`state_rows_from_alerts`, :meth:`AlertEngine.from_snapshot`).

>>> rules = load_rules()
>>> "latency-p99-high" in rules and "slo-error-burn" in rules
True
>>> from llmpulse.alerts import Dispatcher  # the adapters load on first use
>>> Dispatcher.__module__
'llmpulse.alerts.sinks'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from llmpulse.alerts.config import AlertSinkSettings, PagerDutySettings
from llmpulse.alerts.engine import AlertEngine
from llmpulse.alerts.rules import (
    BaselineRule,
    BurnRateRule,
    BurnWindow,
    Rule,
    RuleError,
    RuleSet,
    ThresholdRule,
    load_rules,
    parse_rules,
    rules_from_data,
)
from llmpulse.alerts.signals import (
    SIGNAL_NAMES,
    Signal,
    SignalInfo,
    fraction_above,
    lookup_signal,
    signal_from_drift,
    signals_from_budget,
    signals_from_window,
)
from llmpulse.alerts.state import (
    ALERT_COLUMNS,
    ALERTS_DDL,
    LATEST_ALERTS_SQL,
    AlertState,
    SeriesState,
    Transition,
    dedup_key,
    state_rows_from_alerts,
    transition_row,
)
from llmpulse.alerts.synthetic import synthetic_transition

if TYPE_CHECKING:
    from llmpulse.alerts.sinks import (
        ControlSink,
        Dispatcher,
        DispatcherMetrics,
        MemorySink,
        PagerDutySink,
        Sink,
        SinkError,
        SlackSink,
        WebhookSink,
        build_sinks,
    )

# The sinks pull in urllib, http and prometheus_client: imported on first use, so
# that importing the pure core (llmpulse.alerts.engine...) stays light.
_LAZY = frozenset(
    {
        "ControlSink",
        "Dispatcher",
        "DispatcherMetrics",
        "MemorySink",
        "PagerDutySink",
        "Sink",
        "SinkError",
        "SlackSink",
        "WebhookSink",
        "build_sinks",
    }
)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module("llmpulse.alerts.sinks"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ALERTS_DDL",
    "ALERT_COLUMNS",
    "LATEST_ALERTS_SQL",
    "SIGNAL_NAMES",
    "AlertEngine",
    "AlertSinkSettings",
    "AlertState",
    "BaselineRule",
    "BurnRateRule",
    "BurnWindow",
    "ControlSink",
    "Dispatcher",
    "DispatcherMetrics",
    "MemorySink",
    "PagerDutySettings",
    "PagerDutySink",
    "Rule",
    "RuleError",
    "RuleSet",
    "SeriesState",
    "Signal",
    "SignalInfo",
    "Sink",
    "SinkError",
    "SlackSink",
    "ThresholdRule",
    "Transition",
    "WebhookSink",
    "build_sinks",
    "dedup_key",
    "fraction_above",
    "load_rules",
    "lookup_signal",
    "parse_rules",
    "rules_from_data",
    "signal_from_drift",
    "signals_from_budget",
    "signals_from_window",
    "state_rows_from_alerts",
    "synthetic_transition",
    "transition_row",
]
