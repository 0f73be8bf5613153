"""Alerts: what fires now, every transition, and how long incidents took to resolve.

Times are event times (the end of the window that decided a transition), so a
replayed stream shows its incidents where they happened.
"""

from __future__ import annotations

from typing import Final

from llmpulse.dashboards.common import (
    ALERT_LABEL_FILTERS,
    DashboardSpec,
    PanelSpec,
    RowSpec,
    labels_text,
    stat_tile,
)
from llmpulse.dashboards.overview import firing_now

NOTE: Final = "Filters: service, endpoint, model, tenant (alerts carrying that label)."

# Each firing transition with the transition that followed it on the same key.
RESOLUTIONS: Final = f"""SELECT rule, severity, series, fired_at, resolved_at,
       dateDiff('second', fired_at, resolved_at) AS seconds_to_resolve
FROM (
    SELECT rule, severity, {labels_text()} AS series, state, event_time AS fired_at,
           leadInFrame(state) OVER w AS next_state,
           leadInFrame(event_time) OVER w AS resolved_at
    FROM alerts
    WHERE {ALERT_LABEL_FILTERS}
    WINDOW w AS (PARTITION BY dedup_key ORDER BY wall_time, event_time
                 ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING)
)
WHERE state = 'firing' AND next_state = 'resolved' AND $__timeFilter(resolved_at)"""

ALERTS: Final = DashboardSpec(
    uid="llmpulse-alerts",
    title="llmpulse / Alerts",
    description="Alert history and time to resolve.",
    time_from="now-7d",
    rows=(
        RowSpec(
            "Now",
            (
                stat_tile(
                    "Transitions in range",
                    "SELECT count() AS transitions FROM alerts"
                    f" WHERE $__timeFilter(event_time) AND {ALERT_LABEL_FILTERS}",
                    "transitions",
                    NOTE,
                ),
                stat_tile(
                    "Incidents resolved in range",
                    f"SELECT count() AS resolved FROM ({RESOLUTIONS})",
                    "resolved",
                    NOTE,
                ),
                stat_tile(
                    "Median time to resolve",
                    f"SELECT median(seconds_to_resolve) AS median_seconds FROM ({RESOLUTIONS})",
                    "median_seconds",
                    "From firing to resolved, for incidents resolved in the range. " + NOTE,
                    unit="s",
                ),
                PanelSpec(
                    "Transitions by state",
                    "SELECT $__timeInterval(event_time) AS time, state, count() AS transitions"
                    f" FROM alerts WHERE $__timeFilter(event_time) AND {ALERT_LABEL_FILTERS}"
                    " GROUP BY time, state ORDER BY time",
                    ("time", "state", "transitions"),
                    kind="bars",
                    unit="short",
                    width=6,
                    height=4,
                    description=NOTE,
                ),
                firing_now(NOTE, width=24),
            ),
        ),
        RowSpec(
            "History",
            (
                PanelSpec(
                    "Time to resolve per rule",
                    f"""SELECT rule, count() AS incidents,
       median(seconds_to_resolve) AS median_seconds,
       quantileExact(0.9)(seconds_to_resolve) AS p90_seconds,
       max(seconds_to_resolve) AS max_seconds
FROM ({RESOLUTIONS})
GROUP BY rule ORDER BY incidents DESC""",
                    ("rule", "incidents", "median_seconds", "p90_seconds", "max_seconds"),
                    kind="table",
                    overrides={"median_seconds": "s", "p90_seconds": "s", "max_seconds": "s"},
                    description=NOTE,
                ),
                PanelSpec(
                    "Resolved incidents",
                    f"{RESOLUTIONS}\nORDER BY resolved_at DESC LIMIT 500",
                    (
                        "rule",
                        "severity",
                        "series",
                        "fired_at",
                        "resolved_at",
                        "seconds_to_resolve",
                    ),
                    kind="table",
                    overrides={"seconds_to_resolve": "s"},
                    description=NOTE,
                ),
                PanelSpec(
                    "Alert history",
                    f"""SELECT event_time, wall_time, rule, severity,
       concat(from_state, ' -> ', state) AS change, {labels_text()} AS series,
       value, threshold, notified, summary
FROM alerts
WHERE $__timeFilter(event_time) AND {ALERT_LABEL_FILTERS}
ORDER BY event_time DESC, wall_time DESC LIMIT 1000""",
                    (
                        "event_time",
                        "wall_time",
                        "rule",
                        "severity",
                        "change",
                        "series",
                        "value",
                        "threshold",
                        "notified",
                        "summary",
                    ),
                    kind="table",
                    width=24,
                    height=12,
                    description="Every transition (pending, firing, resolved...). " + NOTE,
                ),
            ),
        ),
    ),
)
