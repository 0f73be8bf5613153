"""Alert states, transitions, and their rows in the ClickHouse table ``alerts``.

Each (rule, series) pair runs the machine ``inactive -> pending -> firing ->
resolved``; ``resolved`` behaves like ``inactive`` afterwards. Every change is a
:class:`Transition`; only the ones reaching ``firing`` or ``resolved`` are
notified. The table ``alerts`` keeps every transition, so the latest row of a
dedup key is the state a restarting worker must resume from
(:func:`state_rows_from_alerts`).

>>> key = dedup_key("latency-p99-high", {"model": "m1", "grouping": "model"})
>>> key, key == dedup_key("latency-p99-high", {"grouping": "model", "model": "m1"})
('llmpulse:latency-p99-high:3de0eb79d0b6', True)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "ALERTS_DDL",
    "ALERT_COLUMNS",
    "LATEST_ALERTS_SQL",
    "AlertState",
    "SeriesState",
    "Transition",
    "dedup_key",
    "series_dedup_key",
    "state_rows_from_alerts",
    "transition_row",
]


class AlertState(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


# States in which a series is "in an incident or about to be": those must survive
# a restart; the others carry nothing worth restoring.
ACTIVE_STATES: Final = frozenset({AlertState.PENDING, AlertState.FIRING})


def dedup_key(rule: str, labels: Mapping[str, str]) -> str:
    """Stable key of one rule on one series (PagerDuty ``dedup_key``, <= 255 chars).

    Rule names are limited to 100 characters, so the key always fits.
    """
    return series_dedup_key(rule, tuple(sorted(labels.items())))


def series_dedup_key(rule: str, series: Sequence[tuple[str, str]]) -> str:
    """``dedup_key`` of labels already sorted (a ``Signal.series``): the hot path of
    the engine, which has the series at hand for every new state.

    >>> series_dedup_key("r", (("grouping", "model"), ("model", "m1"))) == dedup_key(
    ...     "r", {"model": "m1", "grouping": "model"})
    True
    """
    text = "\x1f".join([rule, *[f"{k}={v}" for k, v in series]])
    return f"llmpulse:{rule}:{hashlib.sha1(text.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Transition:
    """One state change of one rule on one series.

    ``value``/``threshold`` are the numbers that decided it (for baseline rules
    the threshold is ``multiple`` x the baseline at the time; for burn-rate rules
    the value is a burn rate). ``event_time`` is the end of the window that
    caused it, ``wall_time`` when the engine saw it. ``reason`` says why:
    ``breach``, ``clear``, ``stale`` (no data for ``stale_after``), ``rule_removed``
    or ``test``.

    ``incident_key`` is the key sinks page with (PagerDuty's ``dedup_key``): the
    rule's own key, or one shared by the rules of an ``incident`` on the series.
    ``suppressed`` marks a change absorbed by an incident another rule keeps open
    (a second rule firing, or the first resolving while another still fires): it is
    recorded but not notified.
    """

    rule: str
    labels: Mapping[str, str]
    from_state: AlertState
    to_state: AlertState
    value: float
    threshold: float
    window_seconds: int
    event_time: datetime
    wall_time: datetime
    dedup_key: str
    severity: str
    summary: str
    runbook_url: str | None = None
    dashboard_url: str | None = None
    actions: tuple[str, ...] = ()
    signal: str = ""
    kind: str = "threshold"
    reason: str = "breach"
    extra: Mapping[str, float] = field(default_factory=dict)
    incident_key: str = ""
    suppressed: bool = False

    @property
    def notify(self) -> bool:
        """True for the transitions sinks hear about: to firing, and firing to resolved,
        unless an open incident absorbs them."""
        return not self.suppressed and (
            self.to_state is AlertState.FIRING
            or (self.to_state is AlertState.RESOLVED and self.from_state is AlertState.FIRING)
        )

    @property
    def page_key(self) -> str:
        """The key sinks dedup on: the incident key, else the rule's dedup key."""
        return self.incident_key or self.dedup_key

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (ISO timestamps, NaN as None), used by the webhook sink."""
        return {
            "rule": self.rule,
            "kind": self.kind,
            "signal": self.signal,
            "labels": dict(self.labels),
            "from_state": str(self.from_state),
            "state": str(self.to_state),
            "value": _finite_or_none(self.value),
            "threshold": _finite_or_none(self.threshold),
            "window_seconds": self.window_seconds,
            "event_time": self.event_time.isoformat(timespec="milliseconds"),
            "wall_time": self.wall_time.isoformat(timespec="milliseconds"),
            "dedup_key": self.dedup_key,
            "severity": self.severity,
            "summary": self.summary,
            "runbook_url": self.runbook_url,
            "dashboard_url": self.dashboard_url,
            "actions": list(self.actions),
            "reason": self.reason,
            "incident_key": self.page_key,
            "extra": {k: _finite_or_none(v) for k, v in self.extra.items()},
        }


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass(slots=True)
class SeriesState:
    """The mutable state of one rule on one series.

    ``breaches``/``clears`` count consecutive breaching/clear windows (``for`` and
    ``resolve_after``); ``last_seen`` is the end of the last window that counted,
    used to ignore replayed windows and to resolve series that stopped reporting.
    """

    rule: str
    dedup_key: str
    labels: dict[str, str]
    state: AlertState = AlertState.INACTIVE
    breaches: int = 0
    clears: int = 0
    value: float = math.nan
    threshold: float = math.nan
    window_seconds: int = 0
    since: datetime | None = None
    last_seen: datetime | None = None
    severity: str = ""
    summary: str = ""
    runbook_url: str | None = None
    incident_key: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def to_row(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "dedup_key": self.dedup_key,
            "labels": dict(self.labels),
            "state": str(self.state),
            "breaches": self.breaches,
            "clears": self.clears,
            "value": self.value,
            "threshold": self.threshold,
            "window_seconds": self.window_seconds,
            "since": _iso(self.since),
            "last_seen": _iso(self.last_seen),
            "severity": self.severity,
            "summary": self.summary,
            "runbook_url": self.runbook_url,
            "incident_key": self.incident_key,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SeriesState:
        return cls(
            rule=str(row["rule"]),
            dedup_key=str(row["dedup_key"]),
            labels={str(k): str(v) for k, v in dict(row.get("labels") or {}).items()},
            state=AlertState(str(row["state"])),
            breaches=int(row.get("breaches", 0)),
            clears=int(row.get("clears", 0)),
            value=float(row.get("value", math.nan)),
            threshold=float(row.get("threshold", math.nan)),
            window_seconds=int(row.get("window_seconds", 0)),
            since=_parse_time(row.get("since")),
            last_seen=_parse_time(row.get("last_seen")),
            severity=str(row.get("severity") or ""),
            summary=str(row.get("summary") or ""),
            runbook_url=row.get("runbook_url") or None,
            incident_key=str(row.get("incident_key") or ""),
        )


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _parse_time(v: Any) -> datetime | None:
    if v is None or v == "":
        return None
    t = v if isinstance(v, datetime) else datetime.fromisoformat(str(v))
    # ClickHouse hands DateTime64(3, 'UTC') back aware or naive depending on the client
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


# --- the ClickHouse table --------------------------------------------------------------

ALERT_COLUMNS: Final = (
    "rule",
    "severity",
    "state",
    "from_state",
    "dedup_key",
    "labels",
    "value",
    "threshold",
    "window_seconds",
    "event_time",
    "wall_time",
    "summary",
    "runbook_url",
    "notified",
    "incident_key",
)

ALERTS_DDL: Final = """\
CREATE TABLE IF NOT EXISTS alerts (
    rule LowCardinality(String),
    severity LowCardinality(String),
    state LowCardinality(String),
    from_state LowCardinality(String),
    dedup_key String,
    labels Map(String, String),
    value Float64,
    threshold Float64,
    window_seconds UInt32,
    event_time DateTime64(3, 'UTC'),
    wall_time DateTime64(3, 'UTC'),
    summary String,
    runbook_url String,
    notified UInt8,
    incident_key String
) ENGINE = MergeTree ORDER BY (dedup_key, wall_time)"""

# The latest transition of every dedup key. A key's transitions from one
# evaluation share wall_time but never event_time (the engine drops windows not
# newer than the last one it counted), so (wall_time, event_time) orders them.
LATEST_ALERTS_SQL: Final = (
    f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts"
    " ORDER BY dedup_key, wall_time DESC, event_time DESC LIMIT 1 BY dedup_key"
)


def transition_row(t: Transition, notified: bool | None = None) -> tuple[Any, ...]:
    """One ``alerts`` row, in ``ALERT_COLUMNS`` order.

    ``notified`` defaults to ``t.notify``; pass False when sinks were dry-run.
    """
    return (
        t.rule,
        t.severity,
        str(t.to_state),
        str(t.from_state),
        t.dedup_key,
        dict(t.labels),
        float(t.value),
        float(t.threshold),
        int(t.window_seconds),
        t.event_time,
        t.wall_time,
        t.summary,
        t.runbook_url or "",
        int(t.notify if notified is None else notified),
        t.page_key,
    )


def state_rows_from_alerts(
    rows: Iterable[Sequence[Any] | Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Snapshot rows (for ``AlertEngine.from_snapshot``) from ``alerts`` rows.

    Rows may be tuples in ``ALERT_COLUMNS`` order or mappings by column name, any
    number per dedup key in any order: the latest one (by wall_time, then
    event_time) of each key wins, and only pending or firing keys are kept. What
    the table does not hold is approximated: a pending key counts one breach, a
    firing key no clear window yet.

    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> t1 = t0.replace(minute=1)
    >>> def row(state, wall):
    ...     return ("r", "error", state, "", "k", {}, 9.0, 8.0, 60, wall, wall, "", "", 1)
    >>> [(r["dedup_key"], r["state"])
    ...  for r in state_rows_from_alerts([row("firing", t1), row("pending", t0)])]
    [('k', 'firing')]
    >>> state_rows_from_alerts([row("firing", t0), row("resolved", t1)])
    []
    """
    latest: dict[str, dict[str, Any]] = {}
    for raw in rows:
        # tuples may predate the incident_key column: zip without strict
        row = dict(raw) if isinstance(raw, Mapping) else dict(zip(ALERT_COLUMNS, raw, strict=False))
        row["event_time"] = _parse_time(row["event_time"])
        row["wall_time"] = _parse_time(row["wall_time"])
        key = str(row["dedup_key"])
        seen = latest.get(key)
        if seen is None or (row["wall_time"], row["event_time"]) > (
            seen["wall_time"],
            seen["event_time"],
        ):
            latest[key] = row
    out = []
    for key, row in latest.items():
        st = AlertState(str(row["state"]))
        if st not in ACTIVE_STATES:
            continue
        out.append(
            SeriesState(
                rule=str(row["rule"]),
                dedup_key=key,
                labels={str(k): str(v) for k, v in dict(row.get("labels") or {}).items()},
                state=st,
                breaches=1,
                clears=0,
                value=float(row["value"]),
                threshold=float(row["threshold"]),
                window_seconds=int(row["window_seconds"]),
                since=row["event_time"],
                last_seen=row["event_time"],
                severity=str(row.get("severity") or ""),
                summary=str(row.get("summary") or ""),
                runbook_url=str(row.get("runbook_url") or "") or None,
                incident_key=str(row.get("incident_key") or ""),
            ).to_row()
        )
    return out
