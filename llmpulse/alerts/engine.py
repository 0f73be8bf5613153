"""The alert engine: signals in, state transitions out. Pure and clock-free.

Event time comes from the signals (the end of their window); wall time is passed
to :meth:`AlertEngine.evaluate` and only stamped on transitions. Per (rule,
series) the engine runs ``inactive -> pending -> firing -> resolved``:

* a window below the rule's ``min_requests`` is ignored: it neither breaches
  nor clears (a p99 of 20 requests is just their maximum);
* ``for`` breaching windows in a row fire; a clear window while pending goes
  back to inactive (recorded, not notified);
* firing resolves after ``resolve_after`` windows in a row on the good side of
  ``resolve_threshold`` (hysteresis); a window between the two thresholds
  breaks the run;
* a pending or firing series with no counted window for ``stale_after``
  seconds of event time resolves (reason ``stale``), so an alert on a series
  that went quiet does not stay open for ever;
* a window not newer than the last one counted for the series is ignored, so
  re-emitted windows after a restart do not count twice;
* rules naming the same ``incident`` share one page per series: the first to
  fire notifies, later ones are recorded with ``suppressed=True``, and only the
  last one to resolve notifies the resolve (all under the shared ``page_key``).

Baselines and burn rates learn only from epoch-aligned windows (start a
multiple of the length): hopping windows overlap and would count each request
several times. The engine is not thread-safe: one worker thread feeds it.

>>> from datetime import UTC, datetime, timedelta
>>> from llmpulse.alerts.rules import RuleSet, ThresholdRule
>>> from llmpulse.alerts.signals import Signal
>>> rules = RuleSet([ThresholdRule(name="p99", signal="latency_p99_ms", threshold=800,
...                                min_requests=50)])
>>> engine = AlertEngine(rules)
>>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
>>> def window(i, p99):
...     return Signal("latency_p99_ms", {"grouping": "model", "model": "m"}, 60,
...                   t0 + timedelta(seconds=10 * i), p99, 100)
>>> [(t.from_state, t.to_state) for t in engine.evaluate([window(1, 950.0)], t0)]
[(<AlertState.INACTIVE: 'inactive'>, <AlertState.FIRING: 'firing'>)]
>>> engine.evaluate([window(2, 990.0)], t0)
[]
>>> [t.to_state.value for t in engine.evaluate([window(3, 120.0)], t0)]
['resolved']
"""

from __future__ import annotations

import logging
import math
import statistics
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import orjson

from llmpulse.alerts.rules import (
    COMPARATORS,
    BaselineRule,
    BurnRateRule,
    NoDataRule,
    Rule,
    RuleSet,
    ThresholdRule,
    render_summary,
    template_context,
)
from llmpulse.alerts.signals import Signal, signals_from_window
from llmpulse.alerts.state import (
    AlertState,
    SeriesState,
    Transition,
    dedup_key,
)

if TYPE_CHECKING:
    from llmpulse.processors.windows import WindowResult

__all__ = [
    "AlertEngine",
    "BurnRateTracker",
    "TrailingBaseline",
    "synthetic_transition",
]

log = logging.getLogger("llmpulse.alerts")

Series = tuple[tuple[str, str], ...]
_GC_EVERY: Final = timedelta(minutes=5)


# --- small stateful estimators ---------------------------------------------------------


class TrailingBaseline:
    """Median or EWMA of the last ``windows`` values, None until ``min_windows`` seen.

    >>> b = TrailingBaseline(windows=3, min_windows=2)
    >>> b.update(1.0); b.value is None
    True
    >>> for x in (2.0, 10.0, 3.0):
    ...     b.update(x)
    >>> b.value, b.n
    (3.0, 4)
    """

    def __init__(self, windows: int, *, method: str = "median", min_windows: int = 1) -> None:
        self.windows = windows
        self.method = method
        self.min_windows = min_windows
        self._values: deque[float] = deque(maxlen=windows)
        self._ewma = math.nan
        self._alpha = 2.0 / (windows + 1.0)
        self.n = 0
        self.last_time: datetime | None = None  # end of the last window learnt (caller's)

    def update(self, x: float) -> None:
        self.n += 1
        self._values.append(x)
        self._ewma = x if self.n == 1 else self._ewma + self._alpha * (x - self._ewma)

    @property
    def value(self) -> float | None:
        if self.n < self.min_windows:
            return None
        if self.method == "ewma":
            return self._ewma
        return float(statistics.median(self._values))

    def to_dict(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "method": self.method,
            "min_windows": self.min_windows,
            "values": list(self._values),
            "ewma": None if math.isnan(self._ewma) else self._ewma,
            "n": self.n,
            "last_time": _iso_or_none(self.last_time),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrailingBaseline:
        b = cls(int(d["windows"]), method=str(d["method"]), min_windows=int(d["min_windows"]))
        b._values.extend(float(v) for v in d["values"])
        b._ewma = math.nan if d["ewma"] is None else float(d["ewma"])
        b.n = int(d["n"])
        b.last_time = _parse_iso(d["last_time"])
        return b


class BurnRateTracker:
    """Rolling (total, bad) sums of one series over non-overlapping windows.

    Cumulative sums with a bisect give the sum over any span ending at the latest
    window in O(log n); entries older than ``horizon_s`` are dropped in bulk.

    >>> tr = BurnRateTracker(horizon_s=180)
    >>> for end, bad in ((60, 0), (120, 5), (180, 10), (240, 20)):
    ...     tr.update(end, 100.0, float(bad))
    >>> tr.sums(60), tr.sums(180)
    ((100.0, 20.0), (300.0, 35.0))
    """

    __slots__ = ("_base_b", "_base_t", "_cb", "_ct", "_ends", "first_end", "horizon_s")

    def __init__(self, horizon_s: int) -> None:
        self.horizon_s = horizon_s
        self.first_end: int | None = None
        self._ends: list[int] = []
        self._ct: list[float] = []
        self._cb: list[float] = []
        self._base_t = 0.0
        self._base_b = 0.0

    @property
    def last_end(self) -> int | None:
        return self._ends[-1] if self._ends else None

    def update(self, end_s: int, total: float, bad: float) -> None:
        if self.first_end is None:
            self.first_end = end_s
        ct = self._ct[-1] if self._ct else self._base_t
        cb = self._cb[-1] if self._cb else self._base_b
        self._ends.append(end_s)
        self._ct.append(ct + total)
        self._cb.append(cb + bad)
        # Prune in bulk when half the list is out of the horizon: amortised O(1).
        cut = bisect_right(self._ends, end_s - self.horizon_s)
        if cut > 0 and cut * 2 >= len(self._ends):
            self._base_t, self._base_b = self._ct[cut - 1], self._cb[cut - 1]
            del self._ends[:cut], self._ct[:cut], self._cb[:cut]

    def to_dict(self) -> dict[str, Any]:
        return {
            "horizon_s": self.horizon_s,
            "first_end": self.first_end,
            "ends": self._ends,
            "ct": self._ct,
            "cb": self._cb,
            "base": [self._base_t, self._base_b],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BurnRateTracker:
        t = cls(int(d["horizon_s"]))
        t.first_end = d["first_end"]
        t._ends = [int(x) for x in d["ends"]]
        t._ct = [float(x) for x in d["ct"]]
        t._cb = [float(x) for x in d["cb"]]
        t._base_t, t._base_b = (float(x) for x in d["base"])
        return t

    def observed_s(self, window_s: int) -> int:
        """Seconds of the series seen so far (first window start to last window end)."""
        if self.first_end is None or not self._ends:
            return 0
        return self._ends[-1] - self.first_end + window_s

    def sums(self, span_s: int) -> tuple[float, float]:
        """(total, bad) over the windows ending in ``(last_end - span_s, last_end]``."""
        if not self._ends:
            return 0.0, 0.0
        i = bisect_right(self._ends, self._ends[-1] - span_s)
        t0 = self._ct[i - 1] if i > 0 else self._base_t
        b0 = self._cb[i - 1] if i > 0 else self._base_b
        return self._ct[-1] - t0, self._cb[-1] - b0


# --- rule compilation ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Needs:
    """What the rules read from windows of one length and grouping: each signal with
    the fewest requests any rule on it counts, the signals of burn rates, and the
    latency thresholds of latency SLOs."""

    names: dict[str, int]
    burn_names: frozenset[str]
    thresholds: tuple[float, ...]

    @property
    def empty(self) -> bool:
        return not self.names and not self.burn_names and not self.thresholds


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What one window says about one series: breach, clear, or neither."""

    breach: bool
    clear: bool
    value: float
    threshold: float
    extra: Mapping[str, float]


class _Compiled:
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


# --- the engine --------------------------------------------------------------------------


class AlertEngine:
    """Evaluates rules over signals; keeps one :class:`SeriesState` per (rule, series).

    ``state`` (dedup key -> SeriesState, for instance from :meth:`from_snapshot`)
    seeds the engine after a restart. ``dashboard_base_url`` fills
    ``{dashboard_base_url}`` in rule URLs and is the dashboard link of rules
    without one.
    """

    def __init__(
        self,
        rules: RuleSet | Iterable[Rule],
        *,
        state: Mapping[str, SeriesState] | None = None,
        dashboard_base_url: str | None = None,
    ) -> None:
        self.rules = rules if isinstance(rules, RuleSet) else RuleSet(rules)
        self.dashboard_base_url = dashboard_base_url.rstrip("/") if dashboard_base_url else None
        self._compiled = {r.name: _Compiled(r) for r in self.rules}
        self._by_signal: dict[str, list[_Compiled]] = {}
        for c in self._compiled.values():
            if isinstance(c.rule, NoDataRule):
                continue  # silence has no signal: llmpulse.alerts.nodata runs these
            self._by_signal.setdefault(c.rule.signal_name, []).append(c)
        self._window_names = self.rules.window_signal_names
        self._needs_cache: dict[tuple[int, str], _Needs] = {}
        self._series: dict[tuple[str, Series], SeriesState] = {}
        self._baselines: dict[tuple[str, Series], TrailingBaseline] = {}
        self._burns: dict[tuple[str, Series], BurnRateTracker] = {}
        self._active: dict[str, SeriesState] = {}
        self._restored: dict[str, SeriesState] = {}
        # Restored states start their staleness timer when data flows again, not at
        # the event time stored before the restart (hours may have passed): None
        # until the first clock, then that clock, until a window of theirs counts.
        self._stale_base: dict[str, datetime | None] = {}
        # incident key -> dedup keys of the series firing in it
        self._incidents: dict[str, set[str]] = {}
        self._clock: datetime | None = None
        self._last_gc: datetime | None = None
        for key, st in (state or {}).items():
            if st.active:
                self._restored[key] = st
                self._active[key] = st
                self._stale_base[key] = None
                if st.state is AlertState.FIRING:
                    self._incidents.setdefault(st.incident_key or key, set()).add(key)

    # -- construction from persisted state ------------------------------------------------

    @classmethod
    def from_snapshot(
        cls,
        rules: RuleSet | Iterable[Rule],
        rows: Iterable[Mapping[str, Any]],
        *,
        dashboard_base_url: str | None = None,
    ) -> AlertEngine:
        """An engine resuming from :meth:`snapshot` rows or ``state_rows_from_alerts`` rows.

        Firing series stay firing without a second notification and resolve when
        their data clears; firing series of rules that no longer exist resolve on
        the first :meth:`evaluate`.
        """
        states = {}
        for row in rows:
            st = SeriesState.from_row(row)
            states[st.dedup_key] = st
        return cls(rules, state=states, dashboard_base_url=dashboard_base_url)

    def snapshot(self) -> list[dict[str, Any]]:
        """The pending and firing states as JSON-ready rows (see ``from_snapshot``)."""
        return [st.to_row() for st in self._active.values()]

    # -- checkpoints --------------------------------------------------------------------------

    def export_state(self) -> bytes:
        """Everything the engine has learnt (states, baselines, burn sums, incidents), as
        JSON, for a checkpoint; :meth:`import_state` reads it back."""

        def pairs(key: tuple[str, Series]) -> list[Any]:
            return [key[0], [list(kv) for kv in key[1]]]

        doc = {
            "series": [[*pairs(k), _state_row(st)] for k, st in self._series.items()],
            "restored": [_state_row(st) for st in self._restored.values()],
            "active": sorted(self._active),
            "baselines": [[*pairs(k), b.to_dict()] for k, b in self._baselines.items()],
            "burns": [[*pairs(k), b.to_dict()] for k, b in self._burns.items()],
            "stale_base": {k: _iso_or_none(v) for k, v in self._stale_base.items()},
            "incidents": {k: sorted(v) for k, v in self._incidents.items()},
            "clock": _iso_or_none(self._clock),
            "last_gc": _iso_or_none(self._last_gc),
        }
        return orjson.dumps(doc)

    def import_state(self, blob: bytes) -> None:
        """Resume from :meth:`export_state`. States of rules that no longer exist are
        closed on the next evaluation (as after a restore from the ``alerts`` table)."""
        doc = orjson.loads(blob)

        def key(rule: str, series: list[list[str]]) -> tuple[str, Series]:
            return rule, tuple((str(k), str(v)) for k, v in series)

        by_dk: dict[str, SeriesState] = {}
        self._series = {}
        for rule, series, row in doc["series"]:
            st = SeriesState.from_row(_numbers(row))
            by_dk[st.dedup_key] = st
            if rule in self._compiled:
                self._series[key(rule, series)] = st
        self._restored = {}
        for row in doc["restored"]:
            st = SeriesState.from_row(_numbers(row))
            by_dk[st.dedup_key] = st
            self._restored[st.dedup_key] = st
        self._active = {dk: by_dk[dk] for dk in doc["active"] if dk in by_dk}
        for dk, st in self._active.items():
            if st.rule not in self._compiled:
                self._restored[dk] = st
        self._baselines = {
            key(r, s): TrailingBaseline.from_dict(d)
            for r, s, d in doc["baselines"]
            if r in self._compiled
        }
        self._burns = {
            key(r, s): BurnRateTracker.from_dict(d)
            for r, s, d in doc["burns"]
            if r in self._compiled
        }
        self._stale_base = {k: _parse_iso(v) for k, v in doc["stale_base"].items()}
        self._incidents = {k: set(v) for k, v in doc["incidents"].items()}
        self._clock = _parse_iso(doc["clock"])
        self._last_gc = _parse_iso(doc["last_gc"])

    # -- properties -----------------------------------------------------------------------

    @property
    def clock(self) -> datetime | None:
        """Latest event time seen (None before the first signal)."""
        return self._clock

    @property
    def has_orphans(self) -> bool:
        """Restored states of rules that no longer exist (closed by the next evaluation)."""
        return any(st.rule not in self._compiled for st in self._restored.values())

    @property
    def firing(self) -> list[SeriesState]:
        return [st for st in self._active.values() if st.state is AlertState.FIRING]

    @property
    def pending(self) -> list[SeriesState]:
        return [st for st in self._active.values() if st.state is AlertState.PENDING]

    @property
    def series_count(self) -> int:
        return len(self._series)

    # -- feeding ----------------------------------------------------------------------------

    def signals_for(self, result: WindowResult) -> list[Signal]:
        """The signals of a window result that some rule reads (none for a window
        length or grouping no rule looks at, nor those every rule would ignore: a
        window below their ``min_requests``, a hopping window for a burn rate)."""
        needs = self._needs(result.window_seconds, result.grouping)
        if needs.empty:
            return []
        n = result.requests
        names = {name for name, least in needs.names.items() if n >= least}
        thresholds: tuple[float, ...] = ()
        if needs.burn_names or needs.thresholds:
            length_ms = result.window_seconds * 1000
            if result.window_start_ms % length_ms == 0:  # burn rates read tiles only
                names |= needs.burn_names
                thresholds = needs.thresholds
        if not names and not thresholds:
            return []
        return signals_from_window(result, names=names, latency_thresholds_ms=thresholds)

    def _needs(self, window_seconds: int, grouping: str) -> _Needs:
        key = (window_seconds, grouping)
        found = self._needs_cache.get(key)
        if found is None:
            names: dict[str, int] = {}
            burn: set[str] = set()
            thresholds: set[float] = set()
            for c in self._compiled.values():
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
            found = self._needs_cache[key] = _Needs(
                names, frozenset(burn), tuple(sorted(thresholds))
            )
        return found

    def evaluate_windows(
        self, results: Iterable[WindowResult], wall_now: datetime
    ) -> list[Transition]:
        """``evaluate`` over the signals of closed windows."""
        return self.evaluate(
            [s for r in results for s in self.signals_for(r)],
            wall_now,
        )

    def warm(self, signals: Iterable[Signal]) -> None:
        """Feed history (baselines, burn-rate sums) without changing any alert state.

        For a restart: replaying the stored windows of the last hours rebuilds
        what the baselines and SLO spans need before live evaluation resumes.
        """
        for sig in sorted(signals, key=_event_time):
            for c in self._by_signal.get(sig.name, ()):
                if c.matches(sig) and not isinstance(c.rule, ThresholdRule):
                    self._verdict(c, (c.name, sig.series), sig)

    def evaluate(self, signals: Iterable[Signal], wall_now: datetime) -> list[Transition]:
        """Run the rules over ``signals`` (any order); return the transitions, oldest first.

        ``wall_now`` (timezone-aware) is only stamped on the transitions.
        """
        if wall_now.tzinfo is None:
            raise ValueError("wall_now must be timezone-aware")
        out: list[Transition] = []
        if self._restored:
            self._resolve_orphans(out, wall_now)
        for sig in sorted(signals, key=_event_time):
            if self._clock is None or sig.event_time > self._clock:
                self._clock = sig.event_time
            rules = self._by_signal.get(sig.name)
            if not rules:
                continue
            series: Series | None = None
            for c in rules:
                if not c.matches(sig):
                    continue
                if sig.requests < c.min_requests and not isinstance(c.rule, BurnRateRule):
                    # Ignored by the rule (neither breach nor clear, baselines learn
                    # nothing): no state for it, which on thousands of quiet series
                    # is most of the work and of the memory.
                    continue
                if series is None:
                    series = sig.series
                self._feed(c, series, sig, wall_now, out)
        if self._clock is not None:
            self._expire_stale(out, wall_now, self._clock)
            if self._last_gc is None or self._clock - self._last_gc >= _GC_EVERY:
                self._gc(self._clock)
        return out

    # -- internals --------------------------------------------------------------------------

    def _state_for(self, c: _Compiled, key: tuple[str, Series], sig: Signal) -> SeriesState:
        st = self._series.get(key)
        if st is None:
            dk = dedup_key(c.name, sig.labels)
            st = self._restored.pop(dk, None)
            if st is None:
                st = SeriesState(rule=c.name, dedup_key=dk, labels=dict(sig.labels))
            else:
                st.labels = dict(sig.labels)
            old = st.incident_key or dk
            st.incident_key = (
                dk if c.rule.incident is None else dedup_key(c.rule.incident, sig.labels)
            )
            if st.state is AlertState.FIRING and old != st.incident_key:  # restored, re-keyed
                self._incidents.get(old, set()).discard(dk)
                self._incidents.setdefault(st.incident_key, set()).add(dk)
            st.window_seconds = sig.window_seconds
            self._series[key] = st
        return st

    def _feed(
        self,
        c: _Compiled,
        series: Series,
        sig: Signal,
        wall_now: datetime,
        out: list[Transition],
    ) -> None:
        key = (c.name, series)
        st = self._state_for(c, key, sig)
        if st.last_seen is not None and sig.event_time <= st.last_seen:
            return  # a window already counted (replayed after a restart) or out of order
        verdict = self._verdict(c, key, sig)
        if verdict is None:
            return
        st.last_seen = sig.event_time
        if self._stale_base:
            self._stale_base.pop(st.dedup_key, None)
        st.value, st.threshold = verdict.value, verdict.threshold
        rule = c.rule
        before = st.state
        if verdict.breach:
            st.clears = 0
            if before is AlertState.FIRING:
                return
            st.breaches = st.breaches + 1 if before is AlertState.PENDING else 1
            to = AlertState.FIRING if st.breaches >= rule.for_ else AlertState.PENDING
            if to is not before:
                if before not in (AlertState.PENDING, AlertState.FIRING):
                    st.since = sig.event_time
                self._move(
                    c,
                    st,
                    to,
                    out,
                    at=sig.event_time,
                    wall=wall_now,
                    reason="breach",
                    verdict=verdict,
                    sig=sig,
                )
            return
        st.breaches = 0
        if before is AlertState.PENDING:
            self._move(
                c,
                st,
                AlertState.INACTIVE,
                out,
                at=sig.event_time,
                wall=wall_now,
                reason="clear",
                verdict=verdict,
                sig=sig,
            )
        elif before is AlertState.FIRING:
            st.clears = st.clears + 1 if verdict.clear else 0
            if st.clears >= rule.resolve_after:
                self._move(
                    c,
                    st,
                    AlertState.RESOLVED,
                    out,
                    at=sig.event_time,
                    wall=wall_now,
                    reason="clear",
                    verdict=verdict,
                    sig=sig,
                )

    def _verdict(self, c: _Compiled, key: tuple[str, Series], sig: Signal) -> _Verdict | None:
        rule = c.rule
        if isinstance(rule, ThresholdRule):
            if sig.requests < c.min_requests:
                return None
            v = sig.value
            return _Verdict(
                c.cmp(v, rule.threshold),
                not c.cmp(v, rule.effective_resolve_threshold),
                v,
                rule.threshold,
                {},
            )
        if isinstance(rule, BaselineRule):
            return self._baseline_verdict(c, rule, key, sig)
        if isinstance(rule, NoDataRule):
            return None  # never fed here (see __init__)
        return self._burn_verdict(c, rule, key, sig)

    def _baseline_verdict(
        self, c: _Compiled, rule: BaselineRule, key: tuple[str, Series], sig: Signal
    ) -> _Verdict | None:
        if sig.requests < c.min_requests:
            return None
        hist = self._baselines.get(key)
        if hist is None:
            hist = self._baselines[key] = TrailingBaseline(
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
        return _Verdict(
            c.cmp(v, limit) and big_enough,
            not c.cmp(v, rule.effective_resolve_multiple * base),
            v,
            limit,
            {"baseline": base, "ratio": ratio},
        )

    def _burn_verdict(
        self, c: _Compiled, rule: BurnRateRule, key: tuple[str, Series], sig: Signal
    ) -> _Verdict | None:
        if not sig.window_aligned:
            return None  # overlapping windows would count each request several times
        tr = self._burns.get(key)
        if tr is None:
            tr = self._burns[key] = BurnRateTracker(rule.horizon_s)
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
        return _Verdict(
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

    def _move(
        self,
        c: _Compiled | None,
        st: SeriesState,
        to: AlertState,
        out: list[Transition],
        *,
        at: datetime,
        wall: datetime,
        reason: str,
        verdict: _Verdict | None = None,
        sig: Signal | None = None,
    ) -> None:
        """Change ``st`` to ``to`` and append the transition (``at``: its event time)."""
        before = st.state
        st.state = to
        if to in (AlertState.PENDING, AlertState.FIRING):
            self._active[st.dedup_key] = st
        else:
            self._active.pop(st.dedup_key, None)
            st.breaches = st.clears = 0
        if to is AlertState.FIRING:
            st.clears = 0
        suppressed = self._track_incident(st, before, to)
        value = verdict.value if verdict else st.value
        threshold = verdict.threshold if verdict else st.threshold
        extra = dict(verdict.extra) if verdict else {}
        details: dict[str, Any] = {}
        if c is None:  # the rule is gone: all we have is what was stored
            name, labels, severity = st.rule, dict(st.labels), st.severity or "warning"
            summary = f"[resolved: rule removed] {st.summary}".strip()
        else:
            rule = c.rule
            name, labels, severity = rule.name, {**rule.labels, **st.labels}, rule.severity
            ctx = template_context(
                rule,
                st.labels,
                value=value,
                threshold=threshold,
                state=str(to),
                requests=sig.requests if sig else 0,
                extra=extra,
            )
            try:
                summary = render_summary(rule, ctx)
            except (KeyError, IndexError, AttributeError, ValueError, TypeError):
                # validated at load time; a value of an odd type must not stop alerting
                summary = f"{rule.name}: {rule.signal_name} = {value:.4g} on {ctx['series']}"
            if to is AlertState.RESOLVED:
                summary = f"[resolved{': no data' if reason == 'stale' else ''}] {summary}"
            st.severity, st.summary = rule.severity, summary
            st.runbook_url = _render_url(rule.runbook_url, st.labels, self.dashboard_base_url)
            details = {
                "dashboard_url": _render_url(
                    rule.dashboard_url, st.labels, self.dashboard_base_url, dashboard=True
                ),
                "actions": tuple(rule.actions),
                "signal": rule.signal_name,
                "kind": rule.kind,
                "extra": extra,
            }
        out.append(
            Transition(
                rule=name,
                labels=labels,
                from_state=before,
                to_state=to,
                value=value,
                threshold=threshold,
                window_seconds=st.window_seconds,
                event_time=at,
                wall_time=wall,
                dedup_key=st.dedup_key,
                severity=severity,
                summary=summary,
                runbook_url=st.runbook_url,
                reason=reason,
                incident_key=st.incident_key,
                suppressed=suppressed,
                **details,
            )
        )

    def _track_incident(self, st: SeriesState, before: AlertState, to: AlertState) -> bool:
        """Keep the incident's firing members; True when the change must not page."""
        key = st.incident_key or st.dedup_key
        if to is AlertState.FIRING:
            members = self._incidents.setdefault(key, set())
            others = bool(members - {st.dedup_key})
            members.add(st.dedup_key)
            return others
        if before is AlertState.FIRING:
            members = self._incidents.get(key, set())
            members.discard(st.dedup_key)
            if members:
                return True
            self._incidents.pop(key, None)
        return False

    def _resolve_orphans(self, out: list[Transition], wall_now: datetime) -> None:
        for key, st in list(self._restored.items()):
            if st.rule in self._compiled:
                continue
            del self._restored[key]
            t = st.last_seen or self._clock or wall_now
            to = AlertState.RESOLVED if st.state is AlertState.FIRING else AlertState.INACTIVE
            log.info("alert %s: rule %s removed, closing its %s state", key, st.rule, st.state)
            self._move(None, st, to, out, at=t, wall=wall_now, reason="rule_removed")

    def _expire_stale(self, out: list[Transition], wall_now: datetime, clock: datetime) -> None:
        for key, st in list(self._active.items()):
            c = self._compiled.get(st.rule)
            if c is None or c.stale_after is None:
                continue
            if key in self._stale_base:
                base = self._stale_base[key]
                if base is None:
                    self._stale_base[key] = clock
                    continue
            elif st.last_seen is None:
                continue
            else:
                base = st.last_seen
            if clock - base <= c.stale_after:
                continue
            to = AlertState.RESOLVED if st.state is AlertState.FIRING else AlertState.INACTIVE
            # Later windows of this series, older than the clock, are late: skip them,
            # which also keeps (wall_time, event_time) increasing per dedup key.
            st.last_seen = clock
            self._restored.pop(key, None)
            self._stale_base.pop(key, None)
            self._move(c, st, to, out, at=clock, wall=wall_now, reason="stale")

    def _gc(self, clock: datetime) -> None:
        """Forget quiet inactive series whose history no rule can use any more."""
        self._last_gc = clock
        for key, st in list(self._series.items()):
            if st.active or st.last_seen is None:
                continue
            c = self._compiled[key[0]]
            if clock - st.last_seen > max(c.horizon, _GC_EVERY):
                del self._series[key]
                self._baselines.pop(key, None)
                self._burns.pop(key, None)


class _QuotedLabels(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def _render_url(
    template: str | None,
    labels: Mapping[str, str],
    base: str | None,
    *,
    dashboard: bool = False,
) -> str | None:
    """A rule URL with ``{labels[x]}`` (URL-quoted) and ``{dashboard_base_url}`` filled.

    >>> _render_url("{dashboard_base_url}/d/x?var-model={labels[model]}", {"model": "a b"},
    ...             "http://g")
    'http://g/d/x?var-model=a%20b'
    >>> _render_url(None, {}, "http://g", dashboard=True), _render_url(None, {}, "http://g")
    ('http://g', None)
    """
    if template is None:
        return base if dashboard else None
    if "{" not in template:
        return template
    if "{dashboard_base_url}" in template and base is None:
        return None
    quoted = _QuotedLabels({k: quote(v, safe="") for k, v in labels.items()})
    try:
        return template.format_map({"labels": quoted, "dashboard_base_url": base or ""})
    except (KeyError, IndexError, AttributeError, ValueError):
        return None


def _event_time(sig: Signal) -> datetime:
    return sig.event_time


def synthetic_transition(
    rule: Rule,
    wall_now: datetime,
    *,
    labels: Mapping[str, str] | None = None,
    to_state: AlertState = AlertState.FIRING,
    dashboard_base_url: str | None = None,
) -> Transition:
    """A made-up transition of ``rule`` for ``llmpulse alerts test``.

    Its dedup key is distinct from any real series (the label ``test=true`` is in
    it), so a test never resolves a real incident.

    >>> from datetime import UTC, datetime
    >>> from llmpulse.alerts.rules import ThresholdRule
    >>> r = ThresholdRule(name="p99", signal="latency_p99_ms", threshold=800)
    >>> t = synthetic_transition(r, datetime(2026, 1, 1, tzinfo=UTC))
    >>> t.to_state.value, t.value, t.labels["test"]
    ('firing', 1200.0, 'true')
    >>> t.summary
    '[test] p99: latency_p99_ms = 1200 (threshold > 800) over 60s on service=llmpulse-test'
    """
    series = dict(labels or {"service": "llmpulse-test"})
    series["test"] = "true"
    if isinstance(rule, ThresholdRule):
        threshold = rule.threshold
        value = threshold * 1.5 if rule.comparison in (">", ">=") else threshold * 0.5
        if value == threshold:
            value = threshold + 1.0
        extra: dict[str, float] = {}
    elif isinstance(rule, BaselineRule):
        extra = {"baseline": 1.0, "ratio": rule.multiple * 1.5}
        threshold, value = rule.multiple, rule.multiple * 1.5
    elif isinstance(rule, NoDataRule):
        threshold, value, extra = float(rule.silent_for), float(rule.silent_for), {}
    else:
        w = rule.burn_windows[0]
        threshold, value = w.burn, w.burn * 1.5
        extra = {"burn_long": value, "burn_short": value, "long_s": w.long, "short_s": w.short}
    ctx = template_context(
        rule,
        {k: v for k, v in series.items() if k != "test"},
        value=value,
        threshold=threshold,
        extra=extra,
    )
    base = dashboard_base_url.rstrip("/") if dashboard_base_url else None
    resolved = to_state is AlertState.RESOLVED
    return Transition(
        rule=rule.name,
        labels={**rule.labels, **series},
        from_state=AlertState.FIRING if resolved else AlertState.PENDING,
        to_state=to_state,
        value=value,
        threshold=threshold,
        window_seconds=rule.effective_window or 0,
        event_time=wall_now,
        wall_time=wall_now,
        dedup_key=dedup_key(rule.name, series),
        severity=rule.severity,
        summary=f"[test{' resolved' if resolved else ''}] {render_summary(rule, ctx)}",
        runbook_url=_render_url(rule.runbook_url, series, base),
        dashboard_url=_render_url(rule.dashboard_url, series, base, dashboard=True),
        actions=tuple(rule.actions),
        signal=rule.signal_name,
        kind=rule.kind,
        reason="test",
        extra=extra,
        incident_key=dedup_key(rule.incident_name, series),
    )


def _iso_or_none(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _parse_iso(v: str | None) -> datetime | None:
    return None if v is None else datetime.fromisoformat(v)


def _state_row(st: SeriesState) -> dict[str, Any]:
    # JSON has no NaN: a missing number travels as null.
    row = st.to_row()
    for k in ("value", "threshold"):
        if isinstance(row[k], float) and math.isnan(row[k]):
            row[k] = None
    return row


def _numbers(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, **{k: math.nan for k in ("value", "threshold") if row.get(k) is None}}
