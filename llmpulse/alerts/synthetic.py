"""Made-up transitions of a rule, for ``llmpulse alerts test``: what a page of that
rule looks like on every sink, without waiting for a real breach."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from llmpulse.alerts.rules import (
    BaselineRule,
    NoDataRule,
    Rule,
    ThresholdRule,
    render_summary,
    template_context,
)
from llmpulse.alerts.state import AlertState, Transition, dedup_key
from llmpulse.alerts.urls import render_url

__all__ = ["synthetic_transition"]


def synthetic_transition(
    rule: Rule,
    wall_now: datetime,
    *,
    labels: Mapping[str, str] | None = None,
    to_state: AlertState = AlertState.FIRING,
    dashboard_base_url: str | None = None,
) -> Transition:
    """A made-up transition of ``rule`` for ``llmpulse alerts test``.

    Its dedup key is distinct from any real series (the label ``test=true`` is in
    it), so a test never resolves a real incident.

    >>> from datetime import UTC, datetime
    >>> from llmpulse.alerts.rules import ThresholdRule
    >>> r = ThresholdRule(name="p99", signal="latency_p99_ms", threshold=800)
    >>> t = synthetic_transition(r, datetime(2026, 1, 1, tzinfo=UTC))
    >>> t.to_state.value, t.value, t.labels["test"]
    ('firing', 1200.0, 'true')
    >>> t.summary
    '[test] p99: latency_p99_ms = 1200 (threshold > 800) over 60s on service=llmpulse-test'
    """
    series = dict(labels or {"service": "llmpulse-test"})
    series["test"] = "true"
    if isinstance(rule, ThresholdRule):
        threshold = rule.threshold
        value = threshold * 1.5 if rule.comparison in (">", ">=") else threshold * 0.5
        if value == threshold:
            value = threshold + 1.0
        extra: dict[str, float] = {}
    elif isinstance(rule, BaselineRule):
        extra = {"baseline": 1.0, "ratio": rule.multiple * 1.5}
        threshold, value = rule.multiple, rule.multiple * 1.5
    elif isinstance(rule, NoDataRule):
        threshold, value, extra = float(rule.silent_for), float(rule.silent_for), {}
    else:
        w = rule.burn_windows[0]
        threshold, value = w.burn, w.burn * 1.5
        extra = {"burn_long": value, "burn_short": value, "long_s": w.long, "short_s": w.short}
    ctx = template_context(
        rule,
        {k: v for k, v in series.items() if k != "test"},
        value=value,
        threshold=threshold,
        extra=extra,
    )
    base = dashboard_base_url.rstrip("/") if dashboard_base_url else None
    resolved = to_state is AlertState.RESOLVED
    return Transition(
        rule=rule.name,
        labels={**rule.labels, **series},
        from_state=AlertState.FIRING if resolved else AlertState.PENDING,
        to_state=to_state,
        value=value,
        threshold=threshold,
        window_seconds=rule.effective_window or 0,
        event_time=wall_now,
        wall_time=wall_now,
        dedup_key=dedup_key(rule.name, series),
        severity=rule.severity,
        summary=f"[test{' resolved' if resolved else ''}] {render_summary(rule, ctx)}",
        runbook_url=render_url(rule.runbook_url, series, base),
        dashboard_url=render_url(rule.dashboard_url, series, base, dashboard=True),
        actions=tuple(rule.actions),
        signal=rule.signal_name,
        kind=rule.kind,
        reason="test",
        extra=extra,
        incident_key=dedup_key(rule.incident_name, series),
    )
