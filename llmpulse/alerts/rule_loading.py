"""Loading rules: a rules file, its YAML text or parsed data, into a ``RuleSet``.

Also where the shipped defaults (``default_rules.yaml``) are read. Every problem
is collected (see ``rule_checks``) and raised at once as a ``RuleError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Final

import yaml

from llmpulse.alerts.rule_checks import RuleError, _rule_from, _short
from llmpulse.alerts.rule_models import Rule
from llmpulse.alerts.ruleset import RuleSet

__all__ = ["DEFAULT_RULES_FILE", "load_rules", "parse_rules", "rules_from_data"]

DEFAULT_RULES_FILE: Final = "default_rules.yaml"


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
