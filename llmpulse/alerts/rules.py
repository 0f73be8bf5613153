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

import difflib
import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator

from llmpulse.alerts.signals import SIGNAL_NAMES, latency_signal_name, lookup_signal
from llmpulse.errors import ConfigError, LlmpulseError
from llmpulse.processors.windows import DIMENSIONS, GroupingSet

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
    "rules_from_data",
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

DEFAULT_RULES_FILE: Final = "default_rules.yaml"
DEFAULT_WINDOW: Final = 60
DEFAULT_BURN_MIN_REQUESTS: Final = 100
_MAX_SPAN_S: Final = 31 * 86_400


class RuleError(LlmpulseError):
    """A rules file is invalid; ``problems`` lists every problem, one line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"rules {source}: " + "; ".join(problems))


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


# --- rendering (shared with the engine) --------------------------------------------------


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


# --- validation ------------------------------------------------------------------------

_TYPE_MESSAGES: Final = {
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "missing": "is required",
}


def _loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(err: Mapping[str, Any], model: type[BaseModel]) -> str:
    typ = err["type"]
    field = _loc(tuple(err["loc"]))
    if typ == "extra_forbidden":
        fields = [f.alias or n for n, f in model.model_fields.items()]
        close = difflib.get_close_matches(str(err["loc"][-1]), fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{field}: unknown field{hint}"
    msg = _TYPE_MESSAGES.get(typ) or str(err["msg"]).removeprefix("Value error, ")
    msg = msg.replace("Input should be", "must be").replace("String should", "must")
    if typ == "literal_error" and field == "comparison":
        msg += ' (quote it in YAML: ">")'
    if typ == "missing":
        return f"{field}: {msg}"
    return f"{field}: {msg}, got {_short(err.get('input'))}"


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_signal(signal: str) -> str:
    known = sorted(SIGNAL_NAMES)
    close = difflib.get_close_matches(signal, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(known)
    return f"signal: unknown signal {signal!r}; {hint}"


def _check(rule: Rule) -> list[str]:
    """Problems pydantic cannot see: cross-field rules and references."""
    problems: list[str] = []
    signal = rule.signal_name
    info = lookup_signal(signal)
    if info is None:
        problems.append(_unknown_signal(signal))
    elif not info.windowed and rule.window is not None:
        problems.append(f"window: signal {signal!r} is not computed per window; remove it")
    if info is not None and info.source == "budget" and rule.grouping is not None:
        problems.append("grouping: budget signals have no grouping; use match on scope/name")

    if rule.grouping is not None:
        dims = set(rule.grouping.split("+"))
        for key in rule.match:
            if key in DIMENSIONS and key not in dims:
                problems.append(
                    f"match.{key}: {key} is not a dimension of grouping {rule.grouping};"
                    " the rule would never match"
                )
    for key, values in rule.match.items():
        if not isinstance(values, str) and not values:
            problems.append(f"match.{key}: must not be an empty list")

    if isinstance(rule, ThresholdRule) and rule.resolve_threshold is not None:
        _check_side(
            problems, "resolve_threshold", rule.comparison, rule.threshold, rule.resolve_threshold
        )
    if isinstance(rule, BaselineRule):
        if rule.resolve_multiple is not None:
            _check_side(
                problems, "resolve_multiple", rule.comparison, rule.multiple, rule.resolve_multiple
            )
        if rule.effective_min_baseline_windows > rule.baseline_windows:
            problems.append(
                f"min_baseline_windows: must be <= baseline_windows ({rule.baseline_windows}),"
                f" got {rule.min_baseline_windows}"
            )
    if isinstance(rule, BurnRateRule):
        _check_burn(problems, rule)
    if isinstance(rule, NoDataRule):
        _check_no_data(problems, rule)

    ctx = template_context(rule, {"service": "s", "model": "m"}, value=1.0, threshold=1.0)
    try:
        render_summary(rule, ctx)
    except (KeyError, IndexError, AttributeError, ValueError, TypeError) as exc:
        problems.append(f"summary: cannot be rendered ({type(exc).__name__}: {exc})")
    for name in ("runbook_url", "dashboard_url"):
        url = getattr(rule, name)
        if url is not None and not url.startswith(("http://", "https://", "{dashboard_base_url}")):
            problems.append(f"{name}: must be an http(s) URL, got {_short(url)}")
    if any(not a.strip() for a in rule.actions):
        problems.append("actions: must not contain empty names")
    return problems


def _check_side(problems: list[str], field: str, cmp: str, limit: float, resolve: float) -> None:
    # Hysteresis must sit on the good side, or a firing alert could never resolve
    # without first breaching again.
    if cmp in (">", ">=") and resolve > limit:
        problems.append(f"{field}: must be <= {limit:g} for comparison {cmp}, got {resolve:g}")
    if cmp in ("<", "<=") and resolve < limit:
        problems.append(f"{field}: must be >= {limit:g} for comparison {cmp}, got {resolve:g}")


def _check_burn(problems: list[str], rule: BurnRateRule) -> None:
    if rule.sli == "latency" and rule.latency_threshold_ms is None:
        problems.append("latency_threshold_ms: is required when sli is latency")
    if rule.sli == "error" and rule.latency_threshold_ms is not None:
        problems.append("latency_threshold_ms: only applies when sli is latency")
    window = rule.effective_window or DEFAULT_WINDOW
    for i, w in enumerate(rule.burn_windows):
        where = f"burn_windows[{i}]"
        if w.short >= w.long:
            problems.append(f"{where}.short: must be shorter than long ({w.long}), got {w.short}")
        for span_name, span in (("long", w.long), ("short", w.short)):
            if span % window:
                problems.append(
                    f"{where}.{span_name}: must be a multiple of window ({window} s), got {span}"
                )
        if w.long > _MAX_SPAN_S:
            problems.append(f"{where}.long: must be at most 31 days, got {w.long}")
        # A burn above 1/(1-objective) needs more than 100 % bad requests: never fires.
        if w.burn * (1.0 - rule.objective) > 1.0:
            problems.append(
                f"{where}.burn: {w.burn:g} can never be reached with objective"
                f" {rule.objective:g} (max {1.0 / (1.0 - rule.objective):g})"
            )


def _check_no_data(problems: list[str], rule: NoDataRule) -> None:
    if rule.min_requests is not None:
        problems.append("min_requests: does not apply to no_data (see min_requests_per_minute)")
    if rule.for_ != 1 or rule.resolve_after != 1:
        problems.append("for/resolve_after: do not apply to no_data (silence is silent_for)")
    window = rule.effective_window or DEFAULT_WINDOW
    if rule.silent_for <= window:
        problems.append(
            f"silent_for: must be longer than the window ({window} s): silence is seen in"
            f" whole windows, got {rule.silent_for}"
        )
    if rule.history < window:
        problems.append(f"history: must be at least the window ({window} s), got {rule.history}")


def _rule_from(raw: Any, index: int) -> tuple[Rule | None, list[str]]:
    if not isinstance(raw, Mapping):
        return None, [f"rules[{index}]: must be a mapping, got {_short(raw)}"]
    name = raw.get("name")
    where = f"rules[{index}] ({name})" if isinstance(name, str) and name else f"rules[{index}]"
    kind = raw.get("kind", "threshold")
    model = _KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        return None, [f"{where}: kind: must be one of {', '.join(_KINDS)}, got {_short(kind)}"]
    try:
        rule = model.model_validate(dict(raw))
    except ValidationError as exc:
        problems = [f"{where}: {_describe(e, model)}" for e in exc.errors()]
        signal = raw.get("signal")
        if isinstance(signal, str) and lookup_signal(signal) is None:
            problems.append(f"{where}: {_unknown_signal(signal)}")
        return None, problems
    assert isinstance(rule, ThresholdRule | BaselineRule | BurnRateRule | NoDataRule)
    return rule, [f"{where}: {p}" for p in _check(rule)]


def rules_from_data(data: Any, source: str = "<data>") -> RuleSet:
    """Validate already-parsed YAML/JSON data; raise RuleError listing every problem."""
    if data is None:
        data = {"rules": []}
    if not isinstance(data, Mapping):
        raise RuleError(source, [f"top level: must be a mapping with 'rules', got {_short(data)}"])
    problems = [
        f"{key}: unknown top-level key (expected 'version' and 'rules')"
        for key in data
        if key not in ("version", "rules")
    ]
    if data.get("version", 1) != 1:
        problems.append(f"version: must be 1, got {_short(data.get('version'))}")
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise RuleError(source, [*problems, f"rules: must be a list, got {_short(raw_rules)}"])
    rules: list[Rule] = []
    first_index: dict[str, int] = {}
    for i, raw in enumerate(raw_rules):
        rule, found = _rule_from(raw, i)
        problems.extend(found)
        if rule is None:
            continue
        if rule.name in first_index:
            problems.append(
                f"rules[{i}] ({rule.name}): name: duplicate of rules[{first_index[rule.name]}]"
            )
            continue
        first_index[rule.name] = i
        rules.append(rule)
    if problems:
        raise RuleError(source, problems)
    return RuleSet(rules, source)


def parse_rules(text: str, source: str = "<text>") -> RuleSet:
    """Parse and validate a rules file's YAML text."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RuleError(source, [f"{where}invalid YAML: {problem}"]) from exc
    return rules_from_data(data, source)


def load_rules(path: Path | str | None = None) -> RuleSet:
    """The rules of ``path``, or the shipped defaults when ``path`` is None."""
    if path is None:
        text = resources.files("llmpulse.alerts").joinpath(DEFAULT_RULES_FILE).read_text()
        return parse_rules(text, f"<defaults: {DEFAULT_RULES_FILE}>")
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise RuleError(str(p), [f"cannot read: {exc.strerror or exc}"]) from exc
    return parse_rules(text, str(p))


class RuleSet:
    """A validated, immutable list of rules with unique names.

    >>> rs = RuleSet([ThresholdRule(name="r", signal="error_rate", threshold=0.1)])
    >>> len(rs), rs.names, rs.window_signal_names
    (1, ('r',), frozenset({'error_rate'}))
    """

    def __init__(self, rules: Iterable[Rule], source: str = "<memory>") -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.source = source
        self._by_name = {r.name: r for r in self.rules}
        if len(self._by_name) != len(self.rules):
            raise RuleError(source, ["name: rule names must be unique"])

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __getitem__(self, name: str) -> Rule:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> Rule | None:
        return self._by_name.get(name)

    def __repr__(self) -> str:
        return f"RuleSet({len(self.rules)} rules from {self.source})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    @property
    def signal_names(self) -> frozenset[str]:
        """Every signal some rule reads."""
        return frozenset(r.signal_name for r in self.rules)

    @property
    def window_signal_names(self) -> frozenset[str]:
        """The precomputed window signals some rule reads (``signals_from_window(names=)``)."""
        return frozenset(
            n
            for n in self.signal_names
            if (info := lookup_signal(n)) is not None
            and info.source == "window"
            and not n.startswith("slo_")
        )

    @property
    def latency_thresholds_ms(self) -> tuple[float, ...]:
        """Thresholds of latency SLOs (``signals_from_window(latency_thresholds_ms=)``)."""
        return tuple(
            sorted(
                {
                    r.latency_threshold_ms
                    for r in self.rules
                    if isinstance(r, BurnRateRule)
                    and r.sli == "latency"
                    and r.latency_threshold_ms is not None
                }
            )
        )

    @property
    def windows(self) -> frozenset[int]:
        """Window lengths the rules read: the window specs must include them."""
        return frozenset(w for r in self.rules if (w := r.effective_window) is not None)
