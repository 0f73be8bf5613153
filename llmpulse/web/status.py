"""The live status document: what the status page shows, from a few read-only queries.

Per series of the ``service+endpoint+model`` grouping:

* requests/s and error rate over the last 60 s of calls (``traces``);
* p50/p99 latency of the newest closed 60 s window, and the last hour of them
  as sparklines (the 60 s tiles of ``window_stats``: one window's own
  percentiles, never an average of several);
* cost over the last hour of calls (USD per hour);
* drift state of its endpoint and model (firing drift alerts, recent drift
  events, or no baseline yet);
* firing alerts on it.

Plus the alerts firing now. Every query goes through ``run`` (the worker passes
``run_readonly`` on its store, the path of ``POST /sql``); ``now_ms`` is
injected, so the document is a pure function of the store and the time.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from llmpulse.store.readonly import QueryResult, jsonable

__all__ = ["SERIES_GROUPING", "StatusQueries", "status_document"]

SERIES_GROUPING = "service+endpoint+model"
SPARK_WINDOW_S = 60
SPARK_POINTS = 60

Run = Callable[[str], QueryResult]
SeriesKey = tuple[str, str, str]


@dataclass(frozen=True)
class StatusQueries:
    """The SQL of one refresh, at time ``now_ms`` (unix ms)."""

    now_ms: int

    @property
    def now(self) -> str:
        return f"fromUnixTimestamp64Milli({int(self.now_ms)})"

    def live(self) -> str:
        return f"""SELECT service, endpoint, model,
       countIf(timestamp >= {self.now} - INTERVAL 60 SECOND) AS calls_60s,
       countIf(timestamp >= {self.now} - INTERVAL 60 SECOND AND status = 'error') AS errors_60s,
       sum(cost_usd) AS cost_1h,
       count() AS calls_1h
FROM traces
WHERE timestamp >= {self.now} - INTERVAL 1 HOUR AND timestamp <= {self.now}
GROUP BY service, endpoint, model"""

    def latest(self) -> str:
        return f"""SELECT service, endpoint, model,
       argMax(latency_p50_ms, window_end) AS p50_ms,
       argMax(latency_p99_ms, window_end) AS p99_ms,
       max(window_end) AS last_window_end
FROM window_stats
WHERE grouping = '{SERIES_GROUPING}' AND window_seconds = {SPARK_WINDOW_S}
  AND window_end >= {self.now} - INTERVAL 1 HOUR AND window_end <= {self.now}
GROUP BY service, endpoint, model"""

    def sparklines(self) -> str:
        return f"""SELECT service, endpoint, model, toUnixTimestamp(window_start) AS t,
       latency_p50_ms, latency_p99_ms
FROM window_tiles
WHERE grouping = '{SERIES_GROUPING}' AND window_seconds = {SPARK_WINDOW_S}
  AND window_start >= {self.now} - INTERVAL 1 HOUR AND window_start <= {self.now}
ORDER BY service, endpoint, model, t"""

    def firing(self) -> str:
        return """SELECT rule, severity, labels, value, threshold, event_time, summary
FROM (SELECT * FROM alerts ORDER BY dedup_key, wall_time DESC, event_time DESC
      LIMIT 1 BY dedup_key)
WHERE state = 'firing'
ORDER BY severity = 'critical' DESC, event_time DESC"""

    def drift(self) -> str:
        return f"""SELECT endpoint, model, groupUniqArray(signal) AS signals,
       max(event_time) AS last_event
FROM drift_events
WHERE event_time >= {self.now} - INTERVAL 1 HOUR AND event_time <= {self.now}
GROUP BY endpoint, model"""

    def baselines(self) -> str:
        return """SELECT DISTINCT labels['endpoint'] AS endpoint, labels['model'] AS model
FROM drift_baselines"""


def _rows(result: QueryResult) -> list[dict[str, Any]]:
    columns, rows = result
    return [dict(zip(columns, r, strict=True)) for r in rows]


def _key(row: Mapping[str, Any]) -> SeriesKey:
    return (str(row["service"]), str(row["endpoint"]), str(row["model"]))


def _num(x: Any) -> float | None:
    if x is None:
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def _iso(x: Any) -> Any:
    """ISO text with its UTC offset (the store hands back naive UTC datetimes)."""
    if isinstance(x, datetime) and x.tzinfo is None:
        x = x.replace(tzinfo=UTC)
    return jsonable(x)


def _labels(x: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in dict(x or {}).items()}


def _series_text(labels: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in labels.items() if k not in ("grouping", "category"))


def _alert(row: Mapping[str, Any]) -> dict[str, Any]:
    labels = _labels(row["labels"])
    return {
        "rule": str(row["rule"]),
        "severity": str(row["severity"]),
        "series": _series_text(labels),
        "labels": labels,
        "value": _num(row["value"]),
        "threshold": _num(row["threshold"]),
        "since": _iso(row["event_time"]),
        "summary": str(row["summary"]),
    }


def _matches(labels: Mapping[str, str], key: SeriesKey) -> bool:
    """An alert belongs to a series when every series label it carries agrees."""
    service, endpoint, model = key
    own = {"service": service, "endpoint": endpoint, "model": model}
    shared = [d for d in own if d in labels]
    return bool(shared) and all(labels[d] == own[d] for d in shared)


def _drift_state(
    key: SeriesKey,
    alerts: list[dict[str, Any]],
    recent: Mapping[tuple[str, str], dict[str, Any]],
    baselined: set[tuple[str, str]],
) -> dict[str, Any]:
    _, endpoint, model = key
    signals = sorted(
        {
            a["labels"].get("signal", "")
            for a in alerts
            if a["rule"].startswith("drift")
            and a["labels"].get("endpoint") == endpoint
            and a["labels"].get("model") == model
        }
        - {""}
    )
    if signals:
        return {"state": "drifting", "signals": signals}
    seen = recent.get((endpoint, model))
    if seen is not None:
        return {
            "state": "recent",
            "signals": sorted(str(s) for s in seen["signals"]),
            "since": _iso(seen["last_event"]),
        }
    if (endpoint, model) not in baselined:
        return {"state": "learning", "signals": []}
    return {"state": "stable", "signals": []}


def status_document(run: Run, now_ms: int) -> dict[str, Any]:
    """The JSON document behind the status page."""
    q = StatusQueries(now_ms)
    live = {_key(r): r for r in _rows(run(q.live()))}
    latest = {_key(r): r for r in _rows(run(q.latest()))}
    spark: dict[SeriesKey, dict[int, tuple[float | None, float | None]]] = defaultdict(dict)
    for r in _rows(run(q.sparklines())):
        spark[_key(r)][int(r["t"])] = (_num(r["latency_p50_ms"]), _num(r["latency_p99_ms"]))
    alerts = [_alert(r) for r in _rows(run(q.firing()))]
    recent = {(str(r["endpoint"]), str(r["model"])): r for r in _rows(run(q.drift()))}
    baselined = {(str(r["endpoint"]), str(r["model"])) for r in _rows(run(q.baselines()))}

    # the sparkline's last point is the newest whole minute
    end_s = (now_ms // 1000) // SPARK_WINDOW_S * SPARK_WINDOW_S
    starts = [end_s - SPARK_WINDOW_S * (SPARK_POINTS - i) for i in range(SPARK_POINTS)]
    series = []
    for key in sorted(set(live) | set(latest) | set(spark)):
        lv, lt, points = live.get(key, {}), latest.get(key, {}), spark.get(key, {})
        calls = int(lv.get("calls_60s") or 0)
        errors = int(lv.get("errors_60s") or 0)
        mine = [a for a in alerts if _matches(a["labels"], key)]
        series.append(
            {
                "service": key[0],
                "endpoint": key[1],
                "model": key[2],
                "rps": calls / 60.0,
                "error_rate": errors / calls if calls else None,
                "p50_ms": _num(lt.get("p50_ms")),
                "p99_ms": _num(lt.get("p99_ms")),
                "window_end": _iso(lt.get("last_window_end")),
                "cost_per_hour": _num(lv.get("cost_1h")) or 0.0,
                "calls_last_hour": int(lv.get("calls_1h") or 0),
                "spark": {
                    "start": starts[0],
                    "step": SPARK_WINDOW_S,
                    "p50": [points.get(t, (None, None))[0] for t in starts],
                    "p99": [points.get(t, (None, None))[1] for t in starts],
                },
                "drift": _drift_state(key, alerts, recent, baselined),
                "alerts": len(mine),
                "severity": mine[0]["severity"] if mine else None,
            }
        )
    calls_60s = sum(int(r.get("calls_60s") or 0) for r in live.values())
    errors_60s = sum(int(r.get("errors_60s") or 0) for r in live.values())
    return {
        "generated_at": datetime.fromtimestamp(now_ms / 1000, UTC).isoformat(),
        "totals": {
            "rps": calls_60s / 60.0,
            "error_rate": errors_60s / calls_60s if calls_60s else None,
            "cost_per_hour": sum(s["cost_per_hour"] for s in series),
            "series": len(series),
            "firing": len(alerts),
            "drifting": sum(1 for s in series if s["drift"]["state"] == "drifting"),
        },
        "alerts": alerts,
        "series": series,
    }
