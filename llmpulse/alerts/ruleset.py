"""``RuleSet``: a validated, immutable list of rules, and what the engine needs of it
(the signals, windows and latency thresholds the rules read).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from llmpulse.alerts.rule_checks import RuleError
from llmpulse.alerts.rule_models import BurnRateRule, Rule
from llmpulse.alerts.signals import lookup_signal

__all__ = ["RuleSet"]


class RuleSet:
    """A validated, immutable list of rules with unique names.

    >>> from llmpulse.alerts.rule_models import ThresholdRule
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
