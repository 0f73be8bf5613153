"""What one window says about one series under one rule: breach, clear, or neither.

The engine's state machine (:mod:`llmpulse.alerts.engine`) only counts verdicts; how a
rule reaches one lives here. A threshold rule compares the window's value; a baseline
rule compares it with the trailing baseline of the series; a burn-rate rule sums the
error budget spent over its spans. Baselines and burn rates learn only from
epoch-aligned windows: hopping windows overlap and would count each request several times.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from llmpulse.alerts.estimators import BurnRateTracker, TrailingBaseline
from llmpulse.alerts.rules import (
    COMPARATORS,
    BaselineRule,
    BurnRateRule,
    NoDataRule,
    Rule,
    ThresholdRule,
)
from llmpulse.alerts.signals import Signal

__all__ = ["CompiledRule", "Judge", "Series", "SeriesKey", "Verdict"]

# A series is its sorted labels; state and history are kept per (rule name, series).
Series = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Series]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one window says about one series: breach, clear, or neither."""

    breach: bool
    clear: bool
    value: float
    threshold: float
    extra: Mapping[str, float]


class CompiledRule:
    """A rule with its matching precomputed (the per-signal hot path)."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.name = rule.name
        self.window = rule.effective_window
        self.grouping = rule.grouping
        self.match = rule.match_sets
        self.min_requests = rule.effective_min_requests
        self.cmp: Callable[[float, float], bool] = COMPARATORS[getattr(rule, "comparison", ">=")]
        self.stale_after = None if rule.stale_after is None else timedelta(seconds=rule.stale_after)
        self.horizon = timedelta(
            seconds=max(
                rule.stale_after or 0,
                rule.horizon_s if isinstance(rule, BurnRateRule) else 0,
                (rule.baseline_windows * (self.window or 0))
                if isinstance(rule, BaselineRule)
                else 0,
            )
        )

    def matches(self, sig: Signal) -> bool:
        if self.window is not None and sig.window_seconds != self.window:
            return False
        labels = sig.labels
        if self.grouping is not None and labels.get("grouping") != self.grouping:
            return False
        return all(labels.get(k) in allowed for k, allowed in self.match.items())


class Judge:
    """The verdict of each window, with the history baseline and burn-rate rules keep
    per (rule, series): a :class:`TrailingBaseline` or a :class:`BurnRateTracker`.

    Threshold rules judge a window alone and keep nothing here.
    """

    __slots__ = ("baselines", "burns")

    def __init__(self) -> None:
        self.baselines: dict[SeriesKey, TrailingBaseline] = {}
        self.burns: dict[SeriesKey, BurnRateTracker] = {}

    def forget(self, key: SeriesKey) -> None:
        """Drop the history of a series no rule can use any more."""
        self.baselines.pop(key, None)
        self.burns.pop(key, None)

    def verdict(self, c: CompiledRule, key: SeriesKey, sig: Signal) -> Verdict | None:
        """What ``sig`` says about the series ``key`` under ``c``; None when it says nothing
        (too few requests, no baseline yet, a window burn rates do not read)."""
        rule = c.rule
        if isinstance(rule, ThresholdRule):
            if sig.requests < c.min_requests:
                return None
            v = sig.value
            return Verdict(
                c.cmp(v, rule.threshold),
                not c.cmp(v, rule.effective_resolve_threshold),
                v,
                rule.threshold,
                {},
            )
        if isinstance(rule, BaselineRule):
            return self._baseline(c, rule, key, sig)
        if isinstance(rule, NoDataRule):
            return None  # silence has no signal: llmpulse.alerts.nodata runs these
        return self._burn(c, rule, key, sig)

    def _baseline(
        self, c: CompiledRule, rule: BaselineRule, key: SeriesKey, sig: Signal
    ) -> Verdict | None:
        if sig.requests < c.min_requests:
            return None
        hist = self.baselines.get(key)
        if hist is None:
            hist = self.baselines[key] = TrailingBaseline(
                rule.baseline_windows,
                method=rule.baseline,
                min_windows=rule.effective_min_baseline_windows,
            )
        base = hist.value
        v = sig.value
        # Only aligned windows teach the baseline: hopping windows overlap, and a
        # spike would otherwise enter it six times before it is judged.
        if sig.window_aligned and (hist.last_time is None or sig.event_time > hist.last_time):
            hist.update(v)
            hist.last_time = sig.event_time
        if base is None:
            return None
        limit = rule.multiple * base
        big_enough = v >= rule.min_value if rule.comparison in (">", ">=") else True
        ratio = v / base if base > 0 else math.inf
        return Verdict(
            c.cmp(v, limit) and big_enough,
            not c.cmp(v, rule.effective_resolve_multiple * base),
            v,
            limit,
            {"baseline": base, "ratio": ratio},
        )

    def _burn(
        self, c: CompiledRule, rule: BurnRateRule, key: SeriesKey, sig: Signal
    ) -> Verdict | None:
        if not sig.window_aligned:
            return None  # overlapping windows would count each request several times
        tr = self.burns.get(key)
        if tr is None:
            tr = self.burns[key] = BurnRateTracker(rule.horizon_s)
        end_s = round(sig.event_time.timestamp())
        if tr.last_end is not None and end_s <= tr.last_end:
            return None
        bad = sig.extra.get("bad", sig.value * sig.requests)
        tr.update(end_s, float(sig.requests), float(bad))
        budget = 1.0 - rule.objective
        observed = tr.observed_s(sig.window_seconds)
        pairs: list[tuple[float, float, float, float, int, int]] = []
        for w in rule.burn_windows:
            t_long, b_long = tr.sums(w.long)
            t_short, b_short = tr.sums(w.short)
            if t_short < c.min_requests:
                continue  # too few requests to judge this pair (t_long >= t_short)
            # A span only partly observed (just started, restarted without warm())
            # counts its unseen part as good traffic at the observed rate: otherwise
            # the long span degenerates into the short one and a few unlucky minutes
            # of a quiet series would page.
            coverage = min(1.0, observed / w.long) if observed > 0 else 1.0
            burn_long = b_long / (t_long / coverage) / budget
            burn_short = b_short / t_short / budget
            pairs.append(
                (min(burn_long, burn_short), w.burn, burn_long, burn_short, w.long, w.short)
            )
        if not pairs:
            return None
        # Report the first breaching pair (the fastest), else the closest to breaching.
        hits = [p for p in pairs if p[0] >= p[1]]
        breach = bool(hits)
        best = hits[0] if hits else max(pairs, key=lambda p: p[0] / p[1])
        effective, limit, burn_long, burn_short, long_s, short_s = best
        return Verdict(
            breach,
            not breach,
            effective,
            limit,
            {
                "burn_long": burn_long,
                "burn_short": burn_short,
                "long_s": float(long_s),
                "short_s": float(short_s),
            },
        )
