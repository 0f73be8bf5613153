"""Alert summaries: the names a rule's ``summary`` template may use, and the defaults.

Shared by the engine, the no-data tracker and the rule checks (a template that
cannot be rendered is a problem of the rules file, reported when it is loaded).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from llmpulse.alerts.rule_models import BaselineRule, BurnRateRule, NoDataRule, Rule, _span
from llmpulse.alerts.signals import lookup_signal

__all__ = ["default_summary", "render_summary", "template_context"]


class _Labels(dict[str, str]):
    """Labels for templates: a label the series does not have renders as ''."""

    def __missing__(self, key: str) -> str:
        return ""


def template_context(
    rule: Rule,
    labels: Mapping[str, str],
    *,
    value: float = math.nan,
    threshold: float = math.nan,
    state: str = "firing",
    requests: int = 0,
    extra: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Names a ``summary`` template may use: ``{value}``, ``{threshold}``, ``{labels[model]}``..."""
    info = lookup_signal(rule.signal_name)
    x = extra or {}
    series = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "grouping")
    ctx: dict[str, Any] = {
        "rule": rule.name,
        "signal": rule.signal_name,
        "kind": rule.kind,
        "value": value,
        "threshold": threshold,
        "comparison": getattr(rule, "comparison", ">="),
        "window": rule.effective_window or 0,
        "series": series or "all",
        "labels": _Labels(labels),
        "unit": info.unit if info else "",
        "severity": rule.severity,
        "state": state,
        "requests": requests,
        "baseline": x.get("baseline", math.nan),
        "ratio": x.get("ratio", math.nan),
        "multiple": getattr(rule, "multiple", math.nan),
        "objective": getattr(rule, "objective", math.nan),
        "burn_long": x.get("burn_long", math.nan),
        "burn_short": x.get("burn_short", math.nan),
        "long_window": _span(int(x.get("long_s", 0))) if x.get("long_s") else "",
        "short_window": _span(int(x.get("short_s", 0))) if x.get("short_s") else "",
    }
    return ctx


def default_summary(rule: Rule) -> str:
    if isinstance(rule, BaselineRule):
        return (
            "{rule}: {signal} = {value:.4g}, {ratio:.1f}x its trailing baseline"
            " {baseline:.4g} over {window}s on {series}"
        )
    if isinstance(rule, NoDataRule):
        return "{rule}: no requests for {value:.0f}s (limit {threshold:.0f}s) on {series}"
    if isinstance(rule, BurnRateRule):
        return (
            "{rule}: error budget of SLO {objective:.2%} burning {value:.1f}x"
            " (limit {threshold:g}x over {long_window} and {short_window}) on {series}"
        )
    if rule.effective_window is None:
        return "{rule}: {signal} = {value:.4g} (threshold {comparison} {threshold:.4g}) on {series}"
    return (
        "{rule}: {signal} = {value:.4g} (threshold {comparison} {threshold:.4g})"
        " over {window}s on {series}"
    )


def render_summary(rule: Rule, ctx: Mapping[str, Any]) -> str:
    return (rule.summary or default_summary(rule)).format_map(ctx)
