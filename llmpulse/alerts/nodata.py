"""``no_data`` rules: a series with regular traffic that goes quiet.

A quiet series produces no window and so no signal: no threshold rule can see
it. This monitor watches the ``requests`` signal of each series of a rule's
grouping, remembers when the series last had traffic, and compares that with an
event-time clock that moves even when the series does not.

The clock (documented choice): event time, never the host's clock. It is the
window watermark: the event-time frontier of the task's input
(``Context.source_time_ms``, the newest event time every upstream partition
has reached) less the allowed lateness, the point up to which every window is
closed; and, at least, the newest window end seen on any series (the closed
windows of other series). Both come from the data, so a replay of the same
file gives the same alerts at the same event times, whatever the batch size or
the machine. In the worker the frontier keeps moving with the injected wall
clock once every input partition is idle (see ``llmpulse.topology.watermarks``),
so a total outage, where no series sends anything, fires too.

Per (rule, series) the machine is ``inactive -> firing -> resolved``, with no
pending step (the wait is ``silent_for`` itself):

* fire once the watermark is more than ``silent_for`` seconds past the end of
  the series' last window with traffic (proof: every later window of the series
  that ends by the watermark is closed, and none had a request), if the series
  had regular traffic before (``min_history`` seconds seen, at least
  ``min_requests_per_minute`` over the ``history`` before the silence). The
  transition's event time is when the silence crossed the limit, dated from the
  *start* of that last window (within one hop of the last request) plus
  ``silent_for``, not the clock that noticed it: it does not depend on batch
  boundaries;
* resolve when a window with traffic starts after the silence began (reason
  ``traffic_returned``, at that window's end), or after ``stale_after`` seconds
  of silence when set (reason ``stale``).

A healthy series' last closed window ends within one hop of the watermark, so
any ``silent_for`` longer than the window works; the check waits one window
length more than the silence it reports. Rates count epoch-aligned windows
only: hopping windows overlap and would count each request several times.

>>> from datetime import UTC, datetime, timedelta
>>> from llmpulse.alerts.rules import NoDataRule
>>> from llmpulse.alerts.signals import Signal
>>> rule = NoDataRule(kind="no_data", name="quiet", silent_for=120, min_history=120)
>>> mon = NoDataMonitor([rule])
>>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
>>> def window(minute, n=60):
...     return Signal("requests", {"grouping": "model", "model": "m"}, 60,
...                   t0 + timedelta(minutes=minute), float(n), n)
>>> mon.evaluate([window(i) for i in range(1, 5)], None, t0)
[]
>>> [(t.to_state.value, t.event_time.minute) for t in mon.evaluate([], _ms(t0, 9), t0)]
[('firing', 5)]
>>> # (last window with traffic: [3, 4) min; proven at watermark > 4 + 2, dated 3 + 2)
>>> [(t.to_state.value, t.reason) for t in mon.evaluate([window(10)], None, t0)]
[('resolved', 'traffic_returned')]
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from llmpulse.alerts.rules import NoDataRule, render_summary, template_context
from llmpulse.alerts.signals import Signal
from llmpulse.alerts.state import AlertState, SeriesState, Transition, dedup_key
from llmpulse.alerts.urls import render_url

__all__ = ["NoDataMonitor"]

Series = tuple[tuple[str, str], ...]
_SIGNAL: Final = "requests"


def _ms(t: datetime, minutes: int = 0) -> int:
    """Milliseconds since the epoch of ``t + minutes`` (doctest helper)."""
    return int((t + timedelta(minutes=minutes)).timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass
class _Track:
    """What one rule knows about one series: when it had traffic, and how much."""

    labels: dict[str, str]
    first_start_s: int  # start of the first window seen
    last_active_s: int  # start of the last window with traffic
    tiles: deque[tuple[int, int]] = field(default_factory=deque)  # aligned (end_s, requests)
    firing_since_s: int | None = None  # silence limit crossed at (event time)
    state: SeriesState | None = None
    queued_at: int | None = None  # its live deadline in the monitor's heap

    def rate_per_minute(self, history_s: int) -> float:
        """Mean requests per minute over the ``history_s`` before the last traffic."""
        lo = self.last_active_s - history_s
        total = sum(n for end, n in self.tiles if end > lo)
        # Tiles may end up to one window after last_active_s: a slight overestimate
        # of the rate at the edge, never an underestimate.
        span = min(history_s, self.last_active_s - self.first_start_s)
        return total * 60.0 / span if span > 0 else 0.0


class _Compiled:
    def __init__(self, rule: NoDataRule) -> None:
        self.rule = rule
        self.window = rule.effective_window
        self.match = rule.match_sets

    def matches(self, sig: Signal) -> bool:
        if sig.name != _SIGNAL or sig.window_seconds != self.window:
            return False
        if self.rule.grouping is not None and sig.labels.get("grouping") != self.rule.grouping:
            return False
        return all(sig.labels.get(k) in allowed for k, allowed in self.match.items())


class NoDataMonitor:
    """Runs the ``no_data`` rules; ``evaluate`` returns transitions like the engine's."""

    def __init__(
        self, rules: Iterable[NoDataRule], *, dashboard_base_url: str | None = None
    ) -> None:
        self._rules = {r.name: _Compiled(r) for r in rules}
        self.dashboard_base_url = dashboard_base_url.rstrip("/") if dashboard_base_url else None
        self._tracks: dict[tuple[str, Series], _Track] = {}
        self._clock_s: int | None = None
        # (deadline s, track key): the next event time each track must be looked at.
        self._heap: list[tuple[int, tuple[str, Series]]] = []
        # Firing states restored from the alerts table, by dedup key, until their
        # series is seen again.
        self._restored: dict[str, SeriesState] = {}

    def __bool__(self) -> bool:
        return bool(self._rules)

    @property
    def clock(self) -> datetime | None:
        return None if self._clock_s is None else _dt(self._clock_s * 1000)

    @property
    def firing(self) -> list[SeriesState]:
        out = [t.state for t in self._tracks.values() if t.state is not None]
        return [*out, *self._restored.values()]

    # -- evaluation ------------------------------------------------------------------------

    def evaluate(
        self, signals: Sequence[Signal], watermark_ms: int | None, wall_now: datetime
    ) -> list[Transition]:
        """Feed the closed windows of this call and the window watermark (the input
        frontier less the allowed lateness: every window ending by it is closed);
        return the changes.

        The clock is checked at every window end on the way, before the windows
        ending there are observed: a gap inside one call is seen exactly as a gap
        spread over many calls (replays do not depend on batch sizes).
        """
        if not self._rules:
            return []
        out: list[Transition] = []
        # The windows closing together share few end times: each is converted once.
        ends: dict[datetime, int] = {}
        for sig in sorted(signals, key=lambda s: s.event_time):
            end_s = ends.get(sig.event_time)
            if end_s is None:
                end_s = ends[sig.event_time] = round(sig.event_time.timestamp())
            if self._clock_s is None or end_s > self._clock_s:
                self._advance(end_s, wall_now, out)
            if sig.name != _SIGNAL:
                continue
            for c in self._rules.values():
                if c.matches(sig):
                    self._observe(c, sig, end_s, wall_now, out)
        if watermark_ms is not None:
            self._advance(watermark_ms // 1000, wall_now, out)
        return out

    def _advance(self, t_s: int, wall: datetime, out: list[Transition]) -> None:
        if self._clock_s is None or t_s > self._clock_s:
            self._clock_s = t_s
            self._check(t_s, wall, out)

    def _observe(
        self, c: _Compiled, sig: Signal, end_s: int, wall: datetime, out: list[Transition]
    ) -> None:
        if sig.requests <= 0:
            return
        # Traffic is dated by the start of its window: the last window holding a
        # request starts at most one hop before it, so silence is measured to
        # within a hop (the end would add up to a whole window length).
        start_s = end_s - sig.window_seconds
        key = (c.rule.name, sig.series)
        tr = self._tracks.get(key)
        if tr is None:
            tr = self._tracks[key] = _Track(dict(sig.labels), start_s, start_s)
            # (Most new series were never restored: no key to hash for them.)
            restored = (
                self._restored.pop(dedup_key(c.rule.name, sig.labels), None)
                if self._restored
                else None
            )
            if restored is not None:
                # Firing before a restart and now back: resolve what was left open.
                tr.state = restored
                tr.firing_since_s = round(restored.since.timestamp()) if restored.since else 0
        if start_s <= tr.last_active_s and tr.state is None:
            # An old or repeated window: rates count each tile once.
            if sig.window_aligned and all(e != end_s for e, _ in tr.tiles):
                tr.tiles.append((end_s, sig.requests))
            self._queue(key, tr)
            return
        quiet_from = None if tr.firing_since_s is None else tr.firing_since_s - c.rule.silent_for
        if tr.state is not None and quiet_from is not None and start_s > quiet_from:
            self._resolve(c, tr, end_s, wall, "traffic_returned", out)
        tr.last_active_s = max(tr.last_active_s, start_s)
        if sig.window_aligned and (not tr.tiles or end_s > tr.tiles[-1][0]):
            tr.tiles.append((end_s, sig.requests))
        lo = tr.last_active_s - c.rule.history
        while tr.tiles and tr.tiles[0][0] <= lo:
            tr.tiles.popleft()
        self._queue(key, tr)

    def _due(self, name: str, tr: _Track) -> int | None:
        """When the track must be looked at next (watermark, s); None: never.

        Decisions wait for proof: at watermark W every window ending by W is
        closed, so a window that starts after the last one with traffic and ends
        by W would have shown any later request. The silence is proven once W is
        ``silent_for`` past the *end* of the last window with traffic; it is
        dated from that window's start (see ``_fire``).
        """
        c = self._rules[name]
        rule, last_end = c.rule, tr.last_active_s + (c.window or 0)
        if tr.state is not None:
            return None if rule.stale_after is None else last_end + rule.stale_after
        if self._qualifies(rule, tr):
            return last_end + rule.silent_for
        # Never regular enough: forget it once quiet for longer than the history it
        # would be judged on (memory stays bounded).
        return last_end + max(rule.history, rule.silent_for)

    @staticmethod
    def _qualifies(rule: NoDataRule, tr: _Track) -> bool:
        observed = tr.last_active_s - tr.first_start_s
        return (
            observed >= rule.min_history
            and tr.rate_per_minute(rule.history) >= rule.min_requests_per_minute
        )

    def _queue(self, key: tuple[str, Series], tr: _Track) -> None:
        # A later deadline waits for the queued one to come up (then the track is
        # looked at again); an earlier one (the track just became regular) is
        # pushed now and the old entry is skipped when popped. A track has one or
        # two entries, not one per window.
        due = self._due(key[0], tr)
        if due is not None and (tr.queued_at is None or due < tr.queued_at):
            tr.queued_at = due
            heapq.heappush(self._heap, (due, key))

    def _check(self, now_s: int, wall: datetime, out: list[Transition]) -> None:
        while self._heap and self._heap[0][0] < now_s:
            at, key = heapq.heappop(self._heap)
            tr = self._tracks.get(key)
            if tr is None or (tr.queued_at is not None and at != tr.queued_at):
                continue  # forgotten, or superseded by an earlier deadline
            tr.queued_at = None
            due = self._due(key[0], tr)
            if due is None:
                continue
            if due >= now_s:
                self._queue(key, tr)
                continue
            c = self._rules[key[0]]
            rule = c.rule
            if tr.state is not None:  # firing for stale_after: give up
                self._resolve(c, tr, tr.last_active_s + (rule.stale_after or 0), wall, "stale", out)
                del self._tracks[key]
            elif self._qualifies(rule, tr):
                self._fire(c, tr, tr.rate_per_minute(rule.history), wall, out)
                self._queue(key, tr)
            else:
                del self._tracks[key]

    # -- transitions -------------------------------------------------------------------------

    def _fire(
        self, c: _Compiled, tr: _Track, rate: float, wall: datetime, out: list[Transition]
    ) -> None:
        rule = c.rule
        at_s = tr.last_active_s + rule.silent_for
        dk = dedup_key(rule.name, tr.labels)
        st = SeriesState(
            rule=rule.name,
            dedup_key=dk,
            labels=dict(tr.labels),
            state=AlertState.FIRING,
            breaches=1,
            value=float(rule.silent_for),
            threshold=float(rule.silent_for),
            window_seconds=c.window or 0,
            since=_dt(at_s * 1000),
            last_seen=_dt(tr.last_active_s * 1000),
            incident_key=dedup_key(rule.incident_name, tr.labels),
        )
        tr.state, tr.firing_since_s = st, at_s
        out.append(
            self._transition(
                c, st, AlertState.INACTIVE, AlertState.FIRING, at_s, wall, "no_data", rate
            )
        )

    def _resolve(
        self,
        c: _Compiled,
        tr: _Track,
        at_s: int,
        wall: datetime,
        reason: str,
        out: list[Transition],
    ) -> None:
        st = tr.state
        assert st is not None and tr.firing_since_s is not None
        silent = float(max(0, at_s - (tr.firing_since_s - c.rule.silent_for)))
        st.value = silent
        out.append(
            self._transition(c, st, AlertState.FIRING, AlertState.RESOLVED, at_s, wall, reason)
        )
        tr.state, tr.firing_since_s = None, None

    def _transition(
        self,
        c: _Compiled,
        st: SeriesState,
        before: AlertState,
        to: AlertState,
        at_s: int,
        wall: datetime,
        reason: str,
        rate: float = math.nan,
    ) -> Transition:
        rule = c.rule
        extra = {} if math.isnan(rate) else {"prior_rate_per_minute": rate}
        ctx = template_context(
            rule, st.labels, value=st.value, threshold=st.threshold, state=str(to), extra=extra
        )
        try:
            summary = render_summary(rule, ctx)
        except (KeyError, IndexError, AttributeError, ValueError, TypeError):
            summary = f"{rule.name}: no requests on {ctx['series']}"
        summary = f"[{'resolved: traffic back' if to is AlertState.RESOLVED else 'no data'}] " + (
            summary
        )
        st.summary, st.severity = summary, rule.severity
        st.runbook_url = render_url(rule.runbook_url, st.labels, self.dashboard_base_url)
        return Transition(
            rule=rule.name,
            labels={**rule.labels, **st.labels},
            from_state=before,
            to_state=to,
            value=st.value,
            threshold=st.threshold,
            window_seconds=st.window_seconds,
            event_time=_dt(at_s * 1000),
            wall_time=wall,
            dedup_key=st.dedup_key,
            severity=rule.severity,
            summary=summary,
            runbook_url=st.runbook_url,
            dashboard_url=render_url(rule.dashboard_url, st.labels, self.dashboard_base_url)
            or self.dashboard_base_url,
            actions=tuple(rule.actions),
            signal=rule.signal_name,
            kind=rule.kind,
            reason=reason,
            extra=extra,
            incident_key=st.incident_key,
        )

    # -- persistence -------------------------------------------------------------------------

    def restore_firing(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Firing states from the ``alerts`` table (``state_rows_from_alerts``): they
        resolve when their series sends traffic again, and are not paged twice."""
        for row in rows:
            st = SeriesState.from_row(row)
            if st.rule in self._rules and st.state is AlertState.FIRING:
                self._restored[st.dedup_key] = st

    def export_state(self) -> dict[str, Any]:
        return {
            "clock": self._clock_s,
            "tracks": [
                {
                    "rule": name,
                    "labels": tr.labels,
                    "first": tr.first_start_s,
                    "last": tr.last_active_s,
                    "tiles": list(tr.tiles),
                    "since": tr.firing_since_s,
                    "state": None if tr.state is None else _jsonable(tr.state.to_row()),
                }
                for (name, _), tr in self._tracks.items()
            ],
            "restored": [_jsonable(st.to_row()) for st in self._restored.values()],
        }

    def import_state(self, doc: Mapping[str, Any]) -> None:
        self._clock_s = doc.get("clock")
        self._tracks = {}
        for t in doc.get("tracks", []):
            if t["rule"] not in self._rules:
                continue  # the rule is gone: its silence no longer matters
            labels = {str(k): str(v) for k, v in t["labels"].items()}
            tr = _Track(labels, int(t["first"]), int(t["last"]))
            tr.tiles.extend((int(e), int(n)) for e, n in t["tiles"])
            tr.firing_since_s = t["since"]
            if t["state"] is not None:
                tr.state = SeriesState.from_row(_numbers(t["state"]))
            key = (t["rule"], tuple(sorted(labels.items())))
            self._tracks[key] = tr
        self._heap = []
        for key, tr in self._tracks.items():
            self._queue(key, tr)
        self._restored = {}
        self.restore_firing(_numbers(r) for r in doc.get("restored", []))


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def _numbers(row: Mapping[str, Any]) -> dict[str, Any]:
    return {**row, **{k: math.nan for k in ("value", "threshold") if row.get(k) is None}}
