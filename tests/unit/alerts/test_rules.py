"""Alert rules files: validation messages, the shipped defaults, the CLI check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from llmpulse.alerts import BaselineRule, BurnRateRule, RuleError, RuleSet, ThresholdRule
from llmpulse.alerts.rules import load_rules, parse_rules, rules_from_data
from llmpulse.alerts.signals import SIGNAL_NAMES, lookup_signal
from llmpulse.errors import LlmpulseError

P99: dict[str, Any] = {"name": "latency-p99", "signal": "latency_p99_ms", "threshold": 800}


def problems_of(*rules: dict[str, Any]) -> list[str]:
    with pytest.raises(RuleError) as info:
        rules_from_data({"rules": list(rules)}, "test.yaml")
    assert isinstance(info.value, LlmpulseError)
    return info.value.problems


def test_error_names_rule_and_field() -> None:
    problems = problems_of(
        {"name": "ok", "signal": "error_rate", "threshold": 0.1},
        P99,
        {**P99, "name": "p99b", "threshold": "high"},
    )
    assert problems == ["rules[2] (p99b): threshold: must be a number, got 'high'"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"threshold": True}, "threshold: must be a number, got True"),
        ({"comparison": "gt"}, "comparison: must be '>', '>=', '<' or '<=' (quote it in YAML"),
        ({"threshhold": 1}, "threshhold: unknown field (did you mean 'threshold'?)"),
        ({"signal": "latency_p98_ms"}, "signal: unknown signal 'latency_p98_ms'; did you mean"),
        ({"for": 0}, "for: must be greater than or equal to 1, got 0"),
        ({"severity": "page"}, "severity: must be 'critical', 'error', 'warning' or 'info'"),
        ({"resolve_threshold": 900}, "resolve_threshold: must be <= 800 for comparison >"),
        ({"grouping": "service+color"}, "grouping: needs distinct dimensions among"),
        ({"grouping": "tenant", "match": {"model": "m"}}, "match.model: model is not a dimension"),
        ({"summary": "{nope}"}, "summary: cannot be rendered (KeyError: 'nope')"),
        ({"runbook_url": "docs/runbook"}, "runbook_url: must be an http(s) URL"),
        ({"window": 0}, "window: must be greater than 0, got 0"),
        ({"min_requests": 1.5}, "min_requests: must be an integer, got 1.5"),
        ({"name": "has space"}, "name: must match pattern"),
        ({"labels": {"team": 3}}, "labels.team: must be a string, got 3"),
    ],
)
def test_field_errors(change: dict[str, Any], expected: str) -> None:
    problems = problems_of({**P99, **change})
    assert len(problems) == 1, problems
    assert expected in problems[0], problems[0]
    assert problems[0].startswith("rules[0]")


def assert_reported(problems: list[str], expected: str) -> None:
    """Each line of ``expected`` (leading white space aside) is in a reported problem."""
    text = "\n".join(problems)
    lines = [line.strip() for line in expected.strip().splitlines()]
    missing = [line for line in lines if line not in text]
    assert lines and not missing, (missing, problems)


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of(
        {**P99, "threshold": "x", "severity": "loud"},
        {"name": "latency-p99", "signal": "error_rate", "threshold": 0.1},  # duplicate of 0?
        {"name": "dup", "signal": "error_rate", "threshold": 0.1},
        {"name": "dup", "signal": "error_rate", "threshold": 0.2},
        {"kind": "nope"},
        "just a string",
    )
    assert_reported(
        problems,
        """
        rules[0] (latency-p99): threshold
        rules[0] (latency-p99): severity
        rules[3] (dup): name: duplicate of rules[2]
        rules[4]: kind: must be one of threshold, baseline, burn_rate
        rules[5]: must be a mapping
        """,
    )


def test_kind_specific_checks() -> None:
    problems = problems_of(
        {"name": "b", "kind": "baseline", "signal": "cost_per_minute"},
        {
            "name": "b2",
            "kind": "baseline",
            "signal": "cost_per_minute",
            "multiple": 3,
            "resolve_multiple": 4,
        },
        {"name": "s", "kind": "burn_rate", "sli": "latency", "objective": 0.99},
        {"name": "s2", "kind": "burn_rate", "sli": "error", "objective": 1.5},
        {
            "name": "s3",
            "kind": "burn_rate",
            "sli": "error",
            "objective": 0.99,
            "burn_windows": [
                {"long": 300, "short": 3600, "burn": 5},
                {"long": 90, "short": 60, "burn": 1},
            ],
        },
        {"name": "s4", "kind": "burn_rate", "sli": "error", "objective": 0.99, "threshold": 3},
        {"name": "w", "signal": "budget_usage_ratio", "threshold": 1, "window": 60},
    )
    assert_reported(
        problems,
        """
        rules[0] (b): multiple: is required
        rules[1] (b2): resolve_multiple: must be <= 3
        rules[2] (s): latency_threshold_ms: is required when sli is latency
        rules[3] (s2): objective: must be less than 1
        rules[4] (s3): burn_windows[0].short: must be shorter than long
        rules[4] (s3): burn_windows[1].long: must be a multiple of window (60 s), got 90
        rules[5] (s4): threshold: unknown field
        rules[6] (w): window: signal 'budget_usage_ratio' is not computed per window
        """,
    )


def test_yaml_errors_have_a_line() -> None:
    with pytest.raises(RuleError) as info:
        parse_rules("rules:\n  - name: x\n   bad: [\n", "f.yaml")
    assert info.value.problems[0].startswith("line ")
    with pytest.raises(RuleError, match="rules: must be a list"):
        parse_rules("rules: 3\n")
    with pytest.raises(RuleError, match="colour: unknown top-level key"):
        parse_rules("colour: red\nrules: []\n")
    assert len(parse_rules("")) == 0  # an empty file disables alerting


def test_unquoted_comparison_in_yaml_is_explained() -> None:
    with pytest.raises(RuleError) as info:
        parse_rules(
            "rules:\n  - name: x\n    signal: error_rate\n    comparison: >\n    threshold: 0.1\n"
        )
    assert 'quote it in YAML: ">"' in "\n".join(info.value.problems)


def test_missing_file() -> None:
    with pytest.raises(RuleError, match="cannot read"):
        load_rules("/nonexistent/rules.yaml")


def test_defaults_load_and_cover_the_issue() -> None:
    rules = load_rules()
    by_signal = {r.signal_name: r for r in rules if r.kind == "threshold"}
    p99 = rules["latency-p99-high"]
    assert isinstance(p99, ThresholdRule)
    assert (p99.threshold, p99.comparison, p99.effective_window, p99.effective_min_requests) == (
        800.0,
        ">",
        60,
        50,
    )
    assert p99.for_ >= 2 and p99.effective_resolve_threshold < p99.threshold
    err = by_signal["error_rate"]
    assert isinstance(err, ThresholdRule) and err.threshold == 0.05
    spikes = [r for r in rules if isinstance(r, BaselineRule)]
    assert {r.signal for r in spikes} == {"cost_per_minute", "cost_per_request"}
    assert all(r.multiple == 3 for r in spikes)
    assert by_signal["budget_usage_ratio"].kind == "threshold"
    assert rules["budget-exceeded"].signal_name == "budget_usage_ratio"
    assert "drift_detected" in by_signal
    assert isinstance(by_signal["score_mean:relevance"], ThresholdRule)
    halluc = by_signal["hallucination_rate"]
    assert isinstance(halluc, ThresholdRule) and halluc.threshold == 0.02
    slos = {r.sli: r for r in rules if isinstance(r, BurnRateRule)}
    assert slos["latency"].objective == 0.99 and slos["latency"].latency_threshold_ms == 800
    assert slos["error"].objective == 0.995
    assert [(w.long, w.short, w.burn) for w in slos["error"].burn_windows] == [
        (3600, 300, 14.4),
        (21600, 1800, 6.0),
    ]
    for r in rules:
        assert r.runbook_url and r.runbook_url.startswith(
            "https://github.com/llmpulse/llmpulse/blob/main/docs/runbooks.md#"
        )
    assert rules.latency_thresholds_ms == (800.0,)
    assert rules.windows == frozenset({60})


def test_every_default_signal_exists() -> None:
    for rule in load_rules():
        info = lookup_signal(rule.signal_name)
        assert info is not None, rule.name
    # and every registry entry documents itself
    assert all(info.description and info.unit for info in SIGNAL_NAMES.values())


def test_grouping_is_normalised_and_match_lists() -> None:
    rs = rules_from_data(
        {
            "rules": [
                {**P99, "grouping": "model+service", "match": {"model": ["a", "b"], "service": "s"}}
            ]
        }
    )
    rule = rs["latency-p99"]
    assert rule.grouping == "service+model"
    assert rule.match_sets == {"model": frozenset({"a", "b"}), "service": frozenset({"s"})}


def test_ruleset_api() -> None:
    rs = RuleSet([ThresholdRule(name="a", signal="error_rate", threshold=0.1)])
    assert "a" in rs and rs.get("b") is None and rs.names == ("a",)
    with pytest.raises(RuleError):
        RuleSet([ThresholdRule(name="a", signal="error_rate", threshold=0.1)] * 2)


# --- CLI ---------------------------------------------------------------------------------


def test_cli_rules_check(tmp_path: Path) -> None:
    from llmpulse.cli.alerts_cmd import app

    runner = CliRunner()
    good = tmp_path / "good.yaml"
    good.write_text("rules:\n  - {name: p99, signal: latency_p99_ms, threshold: 800}\n")
    res = runner.invoke(app, ["rules", "check", str(good)])
    assert res.exit_code == 0, res.output
    assert "1 rules OK" in res.output

    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - {name: p99, signal: latency_p99_ms, threshold: high}\n")
    res = runner.invoke(app, ["rules", "check", str(bad)])
    assert res.exit_code == 1
    assert "rules[0] (p99): threshold: must be a number, got 'high'" in res.output


def test_cli_test_local_validates_payload() -> None:
    from llmpulse.cli.alerts_cmd import app

    res = CliRunner().invoke(app, ["test", "latency-p99-high", "--local"])
    assert res.exit_code == 0, res.output
    assert "pagerduty: firing sent" in res.output
    assert "pagerduty: resolved sent" in res.output
    assert '"event_action": "trigger"' in res.output
    res = CliRunner().invoke(app, ["test", "no-such-rule", "--local"])
    assert res.exit_code == 2
