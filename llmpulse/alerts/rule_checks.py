"""Checking rules: every problem of a rules file, each naming the rule and the field.

Turns pydantic's errors into one line per problem, adds the checks pydantic
cannot make (cross-field rules, unknown signals, templates that do not render),
and validates one raw rule mapping (``_rule_from``) for ``rule_loading``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from llmpulse.alerts.rule_models import (
    _KINDS,
    DEFAULT_WINDOW,
    BaselineRule,
    BurnRateRule,
    NoDataRule,
    Rule,
    ThresholdRule,
)
from llmpulse.alerts.rule_summaries import render_summary, template_context
from llmpulse.alerts.signals import SIGNAL_NAMES, lookup_signal
from llmpulse.errors import LlmpulseError
from llmpulse.processors.windows import DIMENSIONS

__all__ = ["RuleError"]

_MAX_SPAN_S: Final = 31 * 86_400


class RuleError(LlmpulseError):
    """A rules file is invalid; ``problems`` lists every problem, one line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"rules {source}: " + "; ".join(problems))


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
