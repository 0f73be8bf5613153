"""Alert rules: the YAML file, its validation, and the shipped defaults.

A rules file is a mapping with a ``rules`` list (and an optional ``version: 1``).
Each rule reads one signal (see :data:`llmpulse.alerts.signals.SIGNAL_NAMES`) on
the series of one grouping and decides, window after window, whether the series
breaches. Three kinds:

* ``threshold`` (default): ``value <comparison> threshold``.
* ``baseline``: ``value <comparison> multiple x baseline``, the baseline being
  the median (or EWMA) of the same series' previous ``baseline_windows``
  non-overlapping windows: a cost spike relative to what is normal for it.
* ``burn_rate``: SLO error-budget burn, multi-window and multi-burn-rate as in
  the Google SRE workbook: a pair (long, short, burn) breaches when the budget
  burns at least ``burn`` times too fast over both the long and the short span.
* ``no_data``: silence is a signal. A series that had regular traffic (at least
  ``min_requests_per_minute`` over ``min_history`` seconds) and then sends nothing
  for ``silent_for`` seconds of event time fires; it resolves when its traffic
  returns (see :mod:`llmpulse.alerts.nodata`).

Rules sharing an ``incident`` name page once per series (a latency regression
breaks both the p99 threshold and the latency SLO: one page, not two).

This module is the front door; each job has its own module: the rule models
(``rule_models``), summary templates (``rule_summaries``), problem reporting
(``rule_checks``), reading files and data (``rule_loading``) and ``RuleSet``
(``ruleset``).

Every problem is reported at once, each naming the rule and the field:

>>> try:
...     rules_from_data({"rules": [{"name": "p99", "signal": "latency_p99_ms",
...                                 "threshold": "high"}]})
... except RuleError as exc:
...     print(exc.problems[0])
rules[0] (p99): threshold: must be a number, got 'high'
>>> rs = load_rules()
>>> rs["latency-p99-high"].threshold, rs["latency-p99-high"].for_
(800.0, 2)
"""

from __future__ import annotations

from llmpulse.alerts.rule_checks import RuleError
from llmpulse.alerts.rule_loading import (
    DEFAULT_RULES_FILE,
    load_rules,
    parse_rules,
    rules_from_data,
)
from llmpulse.alerts.rule_models import (
    COMPARATORS,
    DEFAULT_BURN_WINDOWS,
    BaselineRule,
    BurnRateRule,
    BurnWindow,
    NoDataRule,
    Rule,
    ThresholdRule,
)
from llmpulse.alerts.rule_summaries import render_summary, template_context
from llmpulse.alerts.ruleset import RuleSet

__all__ = [
    "COMPARATORS",
    "DEFAULT_BURN_WINDOWS",
    "DEFAULT_RULES_FILE",
    "BaselineRule",
    "BurnRateRule",
    "BurnWindow",
    "NoDataRule",
    "Rule",
    "RuleError",
    "RuleSet",
    "ThresholdRule",
    "load_rules",
    "parse_rules",
    "render_summary",
    "rules_from_data",
    "template_context",
]
