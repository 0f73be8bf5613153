"""The rule models: one pydantic model per kind of rule, and what each one reads.

Plain data with the properties the engine asks of a rule (its signal, window,
condition); checking a rules file and rendering summaries live in their own
modules (``rule_checks``, ``rule_summaries``), ``rules`` is the front door.
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator

from llmpulse.alerts.signals import latency_signal_name, lookup_signal
from llmpulse.errors import ConfigError
from llmpulse.processors.windows import GroupingSet

__all__ = [
    "COMPARATORS",
    "DEFAULT_BURN_MIN_REQUESTS",
    "DEFAULT_BURN_WINDOWS",
    "DEFAULT_WINDOW",
    "BaselineRule",
    "BurnRateRule",
    "BurnWindow",
    "NoDataRule",
    "Rule",
    "ThresholdRule",
]

Comparison = Literal[">", ">=", "<", "<="]
Severity = Literal["critical", "error", "warning", "info"]
Float = Annotated[float, Strict()]  # strict: YAML `yes` or "800" is a mistake, not 1.0
Int = Annotated[int, Strict()]

COMPARATORS: Final[Mapping[str, Callable[[float, float], bool]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}

DEFAULT_WINDOW: Final = 60
DEFAULT_BURN_MIN_REQUESTS: Final = 100


class BurnWindow(BaseModel):
    """One (long, short, burn) pair of a burn-rate rule, spans in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    long: Int = Field(gt=0)
    short: Int = Field(gt=0)
    burn: Float = Field(gt=0)


# The SRE workbook's paging pairs: 2 % of a 30-day budget in 1 h, 5 % in 6 h.
DEFAULT_BURN_WINDOWS: Final = (
    BurnWindow(long=3600, short=300, burn=14.4),
    BurnWindow(long=21600, short=1800, burn=6.0),
)


class _RuleBase(BaseModel, ABC):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    description: str | None = None
    window: Int | None = Field(None, gt=0, description="Window length (s) the rule reads")
    for_: Int = Field(1, alias="for", ge=1, description="Breaching windows in a row to fire")
    min_requests: Int | None = Field(None, ge=0, description="Smaller windows are ignored")
    resolve_after: Int = Field(1, ge=1, description="Clear windows in a row to resolve")
    severity: Severity = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    runbook_url: str | None = None
    dashboard_url: str | None = None
    summary: str | None = None
    grouping: str | None = None
    match: dict[str, str | list[str]] = Field(default_factory=dict)
    actions: tuple[str, ...] = ()
    stale_after: Int | None = Field(
        900, gt=0, description="Seconds of event time without data before firing resolves"
    )
    incident: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
        max_length=100,
        description="Rules naming the same incident page once per series: the first one to"
        " fire triggers, the last one to resolve resolves",
    )

    @field_validator("grouping")
    @classmethod
    def _grouping(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return GroupingSet.parse(v).name
        except ConfigError as exc:
            raise ValueError(exc.problem) from None

    @property
    @abstractmethod
    def signal_name(self) -> str:
        """The signal this rule reads."""

    @property
    def incident_name(self) -> str:
        return self.incident or self.name

    @property
    def windowed(self) -> bool:
        info = lookup_signal(self.signal_name)
        return info is None or info.windowed

    @property
    def effective_window(self) -> int | None:
        """Window length the rule matches; None for signals that have no window."""
        if self.window is not None:
            return self.window
        return DEFAULT_WINDOW if self.windowed else None

    @property
    def effective_min_requests(self) -> int:
        if self.min_requests is not None:
            return self.min_requests
        info = lookup_signal(self.signal_name)
        return info.min_requests if info is not None else 0

    @property
    def match_sets(self) -> dict[str, frozenset[str]]:
        return {
            k: frozenset([v] if isinstance(v, str) else v) for k, v in sorted(self.match.items())
        }

    @property
    @abstractmethod
    def condition(self) -> str:
        """Human-readable condition, for tables."""


class ThresholdRule(_RuleBase):
    """``value <comparison> threshold``; resolves once ``value`` is back on the good side
    of ``resolve_threshold`` (default: ``threshold``) for ``resolve_after`` windows."""

    kind: Literal["threshold"] = "threshold"
    signal: str
    comparison: Comparison = ">"
    threshold: Float
    resolve_threshold: Float | None = None

    @property
    def signal_name(self) -> str:
        return self.signal

    @property
    def effective_resolve_threshold(self) -> float:
        return self.threshold if self.resolve_threshold is None else self.resolve_threshold

    @property
    def condition(self) -> str:
        return f"{self.signal} {self.comparison} {self.threshold:g}"


class BaselineRule(_RuleBase):
    """``value <comparison> multiple x baseline`` of the series' trailing windows."""

    kind: Literal["baseline"]
    signal: str
    comparison: Comparison = ">"
    multiple: Float = Field(gt=0)
    resolve_multiple: Float | None = Field(None, gt=0)
    baseline_windows: Int = Field(30, ge=2, le=10_000)
    baseline: Literal["median", "ewma"] = "median"
    min_baseline_windows: Int | None = Field(None, ge=1)
    min_value: Float = Field(
        0.0, ge=0, description="Values below this never breach (a tiny baseline times 3 is tiny)"
    )

    @property
    def signal_name(self) -> str:
        return self.signal

    @property
    def effective_resolve_multiple(self) -> float:
        return self.multiple if self.resolve_multiple is None else self.resolve_multiple

    @property
    def effective_min_baseline_windows(self) -> int:
        if self.min_baseline_windows is not None:
            return self.min_baseline_windows
        return max(2, self.baseline_windows // 3)

    @property
    def condition(self) -> str:
        return f"{self.signal} {self.comparison} {self.multiple:g} x {self.baseline}"


class BurnRateRule(_RuleBase):
    """SLO error-budget burn rate over (long, short) spans of non-overlapping windows."""

    kind: Literal["burn_rate"]
    objective: Float = Field(gt=0, lt=1)
    sli: Literal["error", "latency"]
    latency_threshold_ms: Float | None = Field(None, gt=0)
    burn_windows: tuple[BurnWindow, ...] = Field(DEFAULT_BURN_WINDOWS, min_length=1)

    @property
    def signal_name(self) -> str:
        if self.sli == "latency" and self.latency_threshold_ms is not None:
            return latency_signal_name(self.latency_threshold_ms)
        return "error_rate"

    @property
    def effective_min_requests(self) -> int:
        # Counted over the short span of a pair, not per window.
        return DEFAULT_BURN_MIN_REQUESTS if self.min_requests is None else self.min_requests

    @property
    def horizon_s(self) -> int:
        return max(w.long for w in self.burn_windows)

    @property
    def condition(self) -> str:
        what = "errors" if self.sli == "error" else f"latency > {self.latency_threshold_ms:g} ms"
        pairs = ", ".join(
            f"{w.burn:g}x/{_span(w.long)}+{_span(w.short)}" for w in self.burn_windows
        )
        return f"SLO {self.objective:.3%} {what}: burn {pairs}"


class NoDataRule(_RuleBase):
    """A series with regular traffic that goes quiet for ``silent_for`` seconds.

    It reads the ``requests`` signal of the rule's window length and grouping.
    "Regular" means: seen for at least ``min_history`` seconds, at a mean of at
    least ``min_requests_per_minute`` over the last ``history`` seconds before it
    went quiet (counted on epoch-aligned windows, which do not overlap). Silence
    is measured in event time, from the series' last window with traffic to the
    window watermark (the task's input frontier less the allowed lateness), so it
    is deterministic in a replay; in a worker the frontier moves on with the wall
    clock once every input partition is idle, so a total outage fires too.
    ``silent_for`` must be longer than the window. ``for``, ``resolve_after`` and
    ``min_requests`` do not apply.
    """

    kind: Literal["no_data"]
    silent_for: Int = Field(300, gt=0, description="Seconds of event time with no request")
    min_requests_per_minute: Float = Field(
        1.0, ge=0, description="Mean prior rate a series needs before its silence counts"
    )
    min_history: Int = Field(
        600, ge=0, description="Seconds of traffic seen before the series is judged"
    )
    history: Int = Field(3600, gt=0, description="Span (s) over which the prior rate is taken")
    stale_after: Int | None = Field(
        None, gt=0, description="Seconds of silence after which a firing no_data gives up"
    )

    @property
    def signal_name(self) -> str:
        return "requests"

    @property
    def effective_min_requests(self) -> int:
        return 0  # every window of the series counts: a small one is still traffic

    @property
    def condition(self) -> str:
        return (
            f"no requests for {_span(self.silent_for)}"
            f" (after >= {self.min_requests_per_minute:g}/min)"
        )


Rule = ThresholdRule | BaselineRule | BurnRateRule | NoDataRule
_KINDS: Final[Mapping[str, type[_RuleBase]]] = {
    "threshold": ThresholdRule,
    "baseline": BaselineRule,
    "burn_rate": BurnRateRule,
    "no_data": NoDataRule,
}


def _span(seconds: int) -> str:
    """
    >>> _span(3600), _span(300), _span(90)
    ('1h', '5m', '90s')
    """
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"
