"""What the alert rules read from closed windows, and the signals they get.

Window stages ask this, not the engine, which signals a closed window carries:
a window of a length or grouping no rule looks at, or one every rule would
ignore (below their ``min_requests``, a hopping window for a burn rate), makes
none. It needs the rules only, so the stage that closes windows and the alert
stage that judges them share no state.

>>> from llmpulse.alerts.rules import load_rules
>>> reads = WindowReads(load_rules())
>>> sorted(reads.needs(60, "service+endpoint+model").names)  # requests: for no_data
['cost_per_minute', 'cost_per_request', 'error_rate', 'latency_p99_ms', 'requests']
>>> reads.needs(300, "tenant").empty
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from llmpulse._types import FloatArray
from llmpulse.alerts.rules import BurnRateRule
from llmpulse.alerts.ruleset import RuleSet
from llmpulse.alerts.signals import Signal, fractions_above, signals_from_window, window_labels
from llmpulse.alerts.verdicts import CompiledRule
from llmpulse.processors.windows import EmissionRuns, emission_runs

if TYPE_CHECKING:
    from llmpulse.processors.windows import WindowResult

__all__ = ["Needs", "WindowReads"]


@dataclass(frozen=True, slots=True, eq=False)
class Needs:
    """What the rules read from windows of one length and grouping: each signal with
    the fewest requests any rule on it counts, the signals of burn rates, and the
    latency thresholds of latency SLOs."""

    names: dict[str, int]
    burn_names: frozenset[str]
    thresholds: tuple[float, ...]
    most: int = 0  # the largest ``min_requests`` of ``names``: more requests read the same

    @property
    def empty(self) -> bool:
        return not self.names and not self.burn_names and not self.thresholds


class _Labels:
    """The labels (and their ``Signal.series``) of the windows of one call, made once
    per series: the aggregator's results of a series share one ``dims`` mapping.
    Kept for one call only, so the ``id`` of a mapping cannot be reused meanwhile."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[tuple[int, str], tuple[dict[str, str], tuple[tuple[str, str], ...]]] = {}

    def of(self, result: WindowResult) -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
        key = (id(result.dims), result.grouping)
        found = self._seen.get(key)
        if found is None:
            labels = window_labels(result)
            found = self._seen[key] = labels, tuple(sorted(labels.items()))
        return found


class WindowReads:
    """The signals of closed windows that some rule of ``rules`` reads."""

    def __init__(self, rules: RuleSet) -> None:
        self._compiled = [CompiledRule(r) for r in rules]
        self._window_names = rules.window_signal_names
        self._cache: dict[tuple[int, str], Needs] = {}
        self._reads_cache: dict[tuple[Needs, int, bool], tuple[frozenset[str], tuple[float, ...]]]
        self._reads_cache = {}

    def for_window(self, result: WindowResult) -> list[Signal]:
        """The signals of a window result that some rule reads (none for a window
        length or grouping no rule looks at, nor those every rule would ignore: a
        window below their ``min_requests``, a hopping window for a burn rate)."""
        needs = self.needs(result.window_seconds, result.grouping)
        if needs.empty:
            return []
        tile = False
        if needs.burn_names or needs.thresholds:
            length_ms = result.window_seconds * 1000
            tile = result.window_start_ms % length_ms == 0  # burn rates read tiles only
        return self._signals(result, needs, tile)

    def _signals(
        self,
        result: WindowResult,
        needs: Needs,
        tile: bool,
        shared: _Labels | None = None,
        shares: Mapping[float, float] | None = None,
    ) -> list[Signal]:
        """``for_window`` once its needs and tile are known. ``shared``: labels the
        windows of one series share, ``shares``: the window's ``fraction_above`` of
        the latency thresholds (see ``for_windows``)."""
        names, thresholds = self._reads(needs, result.requests, tile)
        if not names and not thresholds:
            return []
        labels = None if shared is None else shared.of(result)
        return signals_from_window(
            result,
            names=names,
            latency_thresholds_ms=thresholds,
            labels=labels,
            shares=shares if thresholds else None,
        )

    def _reads(self, needs: Needs, n: int, tile: bool) -> tuple[frozenset[str], tuple[float, ...]]:
        """The signal names and latency thresholds read from a window of ``n`` requests
        (``tile``: it starts on a multiple of its length), cached: beyond the largest
        ``min_requests`` every ``n`` reads the same."""
        n = min(n, needs.most)
        key = (needs, n, tile)
        found = self._reads_cache.get(key)
        if found is None:
            names = {name for name, least in needs.names.items() if n >= least}
            thresholds: tuple[float, ...] = ()
            if tile:
                names |= needs.burn_names
                thresholds = needs.thresholds
            found = self._reads_cache[key] = (frozenset(names), thresholds)
        return found

    def for_windows(
        self, results: Sequence[WindowResult], runs: EmissionRuns | None = None
    ) -> list[Signal]:
        """``for_window`` of many results, in order. The aggregator's results are
        screened on the columns of their emission pass first: with thousands of
        series most windows are too small for every rule and not a burn-rate tile,
        and they cost no call here. ``runs``: ``emission_runs(results)`` when the
        caller has it already."""
        found, own = emission_runs(results) if runs is None else runs
        keep = np.zeros(len(results), dtype=np.bool_)
        keep[own] = True
        # The latency SLO shares of the burn-rate tiles, read from the sketch columns
        # of their emission pass: threshold -> share per position of ``results``.
        shares: dict[float, FloatArray] = {}
        tiles = np.zeros(len(results), dtype=np.bool_)
        computed: dict[tuple[int, float], FloatArray] = {}  # (emission, threshold): all rows
        for em, where, js in found:
            seconds = em.numbers["window_seconds"][js]
            requests = em.numbers["requests"][js]
            for length in np.unique(seconds).tolist():
                needs = self.needs(length, em.grouping)
                if needs.empty:
                    continue
                rows = seconds == length
                least = min(needs.names.values(), default=None)
                read = rows & (requests >= least) if least is not None else np.zeros_like(rows)
                if needs.burn_names or needs.thresholds:
                    aligned = rows & (em.start_ms[js] % (length * 1000) == 0)
                    read |= aligned
                    at = where[aligned]
                    tiles[at] = True
                    for t in needs.thresholds:
                        col = shares.setdefault(t, np.full(len(results), np.nan))
                        per_em = computed.get((id(em), t))
                        if per_em is None:
                            per_em = computed[id(em), t] = fractions_above(em.sketches, t)
                        col[at] = per_em[js[aligned]]
                keep[where[read]] = True
        shared = _Labels()
        out: list[Signal] = []
        mine = set(own)
        # The screen knows which windows are tiles: the aggregator's results need
        # no datetime conversion for it.
        is_tile = tiles.tolist()
        for i in np.flatnonzero(keep).tolist():
            r = results[i]
            if i in mine:
                out.extend(self.for_window(r))
                continue
            needs = self.needs(r.window_seconds, r.grouping)
            tile = is_tile[i]
            own_shares = {t: float(col[i]) for t, col in shares.items()} if tile else None
            out.extend(self._signals(r, needs, tile, shared, own_shares))
        return out

    def needs(self, window_seconds: int, grouping: str) -> Needs:
        key = (window_seconds, grouping)
        found = self._cache.get(key)
        if found is None:
            names: dict[str, int] = {}
            burn: set[str] = set()
            thresholds: set[float] = set()
            for c in self._compiled:
                if (c.window is not None and c.window != window_seconds) or (
                    c.grouping is not None and c.grouping != grouping
                ):
                    continue
                rule = c.rule
                if isinstance(rule, BurnRateRule):
                    # Burn rates sum every tile, small ones included.
                    if rule.latency_threshold_ms is not None:
                        thresholds.add(rule.latency_threshold_ms)
                    elif rule.signal_name in self._window_names:
                        burn.add(rule.signal_name)
                elif rule.signal_name in self._window_names:
                    least = names.get(rule.signal_name, c.min_requests)
                    names[rule.signal_name] = min(least, c.min_requests)
            found = self._cache[key] = Needs(
                names, frozenset(burn), tuple(sorted(thresholds)), max(names.values(), default=0)
            )
        return found
