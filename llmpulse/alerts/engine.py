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

import copy
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import orjson

from llmpulse.alerts.estimators import BurnRateTracker, TrailingBaseline
from llmpulse.alerts.rules import (
    BurnRateRule,
    NoDataRule,
    Rule,
    RuleSet,
    ThresholdRule,
    render_summary,
    template_context,
)
from llmpulse.alerts.signals import Signal
from llmpulse.alerts.state import (
    AlertState,
    SeriesState,
    Transition,
    series_dedup_key,
)
from llmpulse.alerts.urls import render_url
from llmpulse.alerts.verdicts import CompiledRule, Judge, Series, SeriesKey, Verdict
from llmpulse.alerts.window_reads import WindowReads

if TYPE_CHECKING:
    from llmpulse.processors.windows import WindowResult

__all__ = [
    "AlertEngine",
    "SavePoint",
]

log = logging.getLogger("llmpulse.alerts")

_GC_EVERY: Final = timedelta(minutes=5)
# The states a series is watched in (kept in the snapshot, expired when stale).
_ACTIVE: Final = (AlertState.PENDING, AlertState.FIRING)


# --- the state machine ------------------------------------------------------------------


def next_state(st: SeriesState, verdict: Verdict, rule: Rule) -> AlertState | None:
    """The state one counted window moves a series to, or None when it stays put.

    Keeps the run counters of ``st`` (breaching windows in a row, clear windows in a
    row while firing); the engine applies the move. Staleness and removed rules are
    not window verdicts: :meth:`AlertEngine._expire_stale` and
    :meth:`AlertEngine._resolve_orphans` move those series.

    >>> from llmpulse.alerts.rules import ThresholdRule
    >>> rule = ThresholdRule(name="p99", signal="latency_p99_ms", threshold=800, for_=2)
    >>> st = SeriesState(rule="p99", dedup_key="k", labels={})
    >>> breach = Verdict(True, False, 900.0, 800.0, {})
    >>> next_state(st, breach, rule), st.breaches
    (<AlertState.PENDING: 'pending'>, 1)
    """
    before = st.state
    if verdict.breach:
        st.clears = 0
        if before is AlertState.FIRING:
            return None
        st.breaches = st.breaches + 1 if before is AlertState.PENDING else 1
        to = AlertState.FIRING if st.breaches >= rule.for_ else AlertState.PENDING
        return None if to is before else to
    st.breaches = 0
    if before is AlertState.PENDING:
        return AlertState.INACTIVE
    if before is AlertState.FIRING:
        st.clears = st.clears + 1 if verdict.clear else 0
        if st.clears >= rule.resolve_after:
            return AlertState.RESOLVED
    return None


# --- the engine --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SavePoint:
    """The engine's state at :meth:`AlertEngine.save_point`."""

    series: dict[SeriesKey, SeriesState]
    restored: dict[str, SeriesState]
    active: dict[str, SeriesState]
    baselines: dict[SeriesKey, TrailingBaseline]
    burns: dict[SeriesKey, BurnRateTracker]
    stale_base: dict[str, datetime | None]
    incidents: dict[str, set[str]]
    clock: datetime | None
    last_gc: datetime | None


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
        self._compiled = {r.name: CompiledRule(r) for r in self.rules}
        self._by_signal: dict[str, list[CompiledRule]] = {}
        for c in self._compiled.values():
            if isinstance(c.rule, NoDataRule):
                continue  # silence has no signal: llmpulse.alerts.nodata runs these
            self._by_signal.setdefault(c.rule.signal_name, []).append(c)
        self.reads = WindowReads(self.rules)
        self._series: dict[SeriesKey, SeriesState] = {}
        self._judge = Judge()
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

        def pairs(key: SeriesKey) -> list[Any]:
            return [key[0], [list(kv) for kv in key[1]]]

        doc = {
            "series": [[*pairs(k), _state_row(st)] for k, st in self._series.items()],
            "restored": [_state_row(st) for st in self._restored.values()],
            "active": sorted(self._active),
            "baselines": [[*pairs(k), b.to_dict()] for k, b in self._judge.baselines.items()],
            "burns": [[*pairs(k), b.to_dict()] for k, b in self._judge.burns.items()],
            "stale_base": {k: _iso_or_none(v) for k, v in self._stale_base.items()},
            "incidents": {k: sorted(v) for k, v in self._incidents.items()},
            "clock": _iso_or_none(self._clock),
            "last_gc": _iso_or_none(self._last_gc),
        }
        return orjson.dumps(doc)

    def save_point(self, signals: Iterable[Signal]) -> SavePoint:
        """What :meth:`evaluate` of ``signals`` may change, copied in memory, for
        :meth:`roll_back` when that evaluation raises half-way.

        Far cheaper than :meth:`export_state` with thousands of series, and a stage
        takes one before every evaluation: the dicts are copied, but of the
        objects in them only those an evaluation can change: the states and
        histories of the series of ``signals``, and the active and restored
        states (staleness and orphans move those). Every other state is left as
        it is by an evaluation, or dropped from a dict (which the copy keeps).
        """
        touched = {sig.series for sig in signals}
        clones: dict[int, SeriesState] = {}

        def clone(st: SeriesState) -> SeriesState:
            # One copy per state object: _active and _restored share the states
            # of _series, and must still share them after a roll back.
            found = clones.get(id(st))
            if found is None:
                found = clones[id(st)] = copy.copy(st)
            return found

        active = {k: clone(st) for k, st in self._active.items()}
        restored = {k: clone(st) for k, st in self._restored.items()}
        series = dict(self._series)
        for k, st in series.items():
            if k[1] in touched or id(st) in clones:
                series[k] = clone(st)
        baselines = dict(self._judge.baselines)
        for k in [k for k in baselines if k[1] in touched]:
            baselines[k] = baselines[k].copy()
        burns = dict(self._judge.burns)
        for k in [k for k in burns if k[1] in touched]:
            burns[k] = burns[k].copy()
        return SavePoint(
            series=series,
            restored=restored,
            active=active,
            baselines=baselines,
            burns=burns,
            stale_base=dict(self._stale_base),
            incidents={k: set(v) for k, v in self._incidents.items()},
            clock=self._clock,
            last_gc=self._last_gc,
        )

    def roll_back(self, point: SavePoint) -> None:
        """Back to ``point`` (taken by :meth:`save_point`; use it once)."""
        self._series, self._restored, self._active = point.series, point.restored, point.active
        self._judge.baselines, self._judge.burns = point.baselines, point.burns
        self._stale_base, self._incidents = point.stale_base, point.incidents
        self._clock, self._last_gc = point.clock, point.last_gc

    def import_state(self, blob: bytes) -> None:
        """Resume from :meth:`export_state`. States of rules that no longer exist are
        closed on the next evaluation (as after a restore from the ``alerts`` table)."""
        doc = orjson.loads(blob)

        def key(rule: str, series: list[list[str]]) -> SeriesKey:
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
        self._judge.baselines = {
            key(r, s): TrailingBaseline.from_dict(d)
            for r, s, d in doc["baselines"]
            if r in self._compiled
        }
        self._judge.burns = {
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
        """The signals of a window result that some rule reads (see :class:`WindowReads`)."""
        return self.reads.for_window(result)

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
                    self._judge.verdict(c, (c.name, sig.series), sig)

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

    def _state_for(self, c: CompiledRule, key: SeriesKey, sig: Signal) -> SeriesState:
        st = self._series.get(key)
        if st is None:
            dk = series_dedup_key(c.name, key[1])
            st = self._restored.pop(dk, None)
            if st is None:
                st = SeriesState(rule=c.name, dedup_key=dk, labels=dict(sig.labels))
            else:
                st.labels = dict(sig.labels)
            old = st.incident_key or dk
            st.incident_key = (
                dk if c.rule.incident is None else series_dedup_key(c.rule.incident, key[1])
            )
            if st.state is AlertState.FIRING and old != st.incident_key:  # restored, re-keyed
                self._incidents.get(old, set()).discard(dk)
                self._incidents.setdefault(st.incident_key, set()).add(dk)
            st.window_seconds = sig.window_seconds
            self._series[key] = st
        return st

    def _feed(
        self,
        c: CompiledRule,
        series: Series,
        sig: Signal,
        wall_now: datetime,
        out: list[Transition],
    ) -> None:
        key = (c.name, series)
        st = self._state_for(c, key, sig)
        if st.last_seen is not None and sig.event_time <= st.last_seen:
            return  # a window already counted (replayed after a restart) or out of order
        verdict = self._judge.verdict(c, key, sig)
        if verdict is None:
            return
        st.last_seen = sig.event_time
        if self._stale_base:
            self._stale_base.pop(st.dedup_key, None)
        st.value, st.threshold = verdict.value, verdict.threshold
        before = st.state
        to = next_state(st, verdict, c.rule)
        if to is None:
            return
        if to in _ACTIVE and before not in _ACTIVE:
            st.since = sig.event_time
        self._move(
            c,
            st,
            to,
            out,
            at=sig.event_time,
            wall=wall_now,
            reason="breach" if verdict.breach else "clear",
            verdict=verdict,
            sig=sig,
        )

    def _move(
        self,
        c: CompiledRule | None,
        st: SeriesState,
        to: AlertState,
        out: list[Transition],
        *,
        at: datetime,
        wall: datetime,
        reason: str,
        verdict: Verdict | None = None,
        sig: Signal | None = None,
    ) -> None:
        """Change ``st`` to ``to`` and append the transition (``at``: its event time)."""
        before = st.state
        st.state = to
        if to in _ACTIVE:
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
            st.runbook_url = render_url(rule.runbook_url, st.labels, self.dashboard_base_url)
            details = {
                "dashboard_url": render_url(
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
                self._judge.forget(key)


def _event_time(sig: Signal) -> datetime:
    return sig.event_time


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
