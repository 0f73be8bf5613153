"""Drift and quality: drift events and window scores per series, the running canary
comparisons, quality score trends.

Drift series are ``endpoint+model+prompt_version`` by default, so the endpoint
and model variables filter the drift panels; the quality panel reads the
``scores`` of ``traces`` and takes every filter.
"""

from __future__ import annotations

from typing import Final

from llmpulse.dashboards.common import (
    LATEST_ALERTS,
    TRACE_FILTERS,
    DashboardSpec,
    PanelSpec,
    RowSpec,
    conds,
    stat_tile,
)

DRIFT_FILTERS: Final = conds(endpoint="endpoint", model="model")
SERIES: Final = "concat(endpoint, ' ', model, ' ', prompt_version)"
NOTE: Final = "Filters: endpoint, model."
EVENTS: Final = f"FROM drift_events WHERE $__timeFilter(event_time) AND {DRIFT_FILTERS}"
SCORES: Final = f"FROM drift_scores WHERE $__timeFilter(window_end) AND {DRIFT_FILTERS}"
EMBEDDINGS: Final = "signal IN ('prompt_embedding', 'response_embedding')"

DRIFT: Final = DashboardSpec(
    uid="llmpulse-drift",
    title="llmpulse / Drift and quality",
    description="Drift scores and events per series, canary comparisons, and quality score trends.",
    time_from="now-24h",
    rows=(
        RowSpec(
            "Drift now",
            (
                stat_tile(
                    "Drift events",
                    f"SELECT count() AS drift_events {EVENTS}",
                    "drift_events",
                    "In the selected range. " + NOTE,
                    thresholds=((1, "orange"),),
                ),
                stat_tile(
                    "Series drifting now",
                    f"""SELECT count() AS drifting
FROM ({LATEST_ALERTS})
WHERE rule = 'drift-detected' AND state = 'firing'
  AND $__conditionalAll(labels['endpoint'] IN (${{endpoint:singlequote}}), $endpoint)
  AND $__conditionalAll(labels['model'] IN (${{model:singlequote}}), $model)""",
                    "drifting",
                    "Series and signals whose drift alert fires now. " + NOTE,
                    thresholds=((1, "red"),),
                ),
                PanelSpec(
                    "Drift events by signal",
                    f"SELECT $__timeInterval(event_time) AS time, signal, count() AS events"
                    f" {EVENTS} GROUP BY time, signal ORDER BY time",
                    ("time", "signal", "events"),
                    kind="bars",
                    unit="short",
                    description=NOTE,
                ),
            ),
        ),
        RowSpec(
            "Scores per series",
            (
                PanelSpec(
                    "Embedding distance to the baseline",
                    f"SELECT $__timeInterval(window_end) AS time,"
                    f" concat(signal, ' ', {SERIES}) AS series, avg(value) AS distance"
                    f" {SCORES} AND {EMBEDDINGS} GROUP BY time, series ORDER BY time",
                    ("time", "series", "distance"),
                    description="Mean cosine distance of each window's embeddings to the "
                    "baseline centroid. " + NOTE,
                ),
                PanelSpec(
                    "Windowed test statistic",
                    f"SELECT $__timeInterval(window_end) AS time,"
                    f" concat(signal, ' ', {SERIES}) AS series, max(statistic) AS statistic"
                    f" {SCORES} GROUP BY time, series ORDER BY time",
                    ("time", "series", "statistic"),
                    description="The two-sample test of each window against the baseline "
                    "(a drift needs it and the online detector to agree). " + NOTE,
                ),
                PanelSpec(
                    "Lowest p-value by signal",
                    "SELECT $__timeInterval(window_end) AS time, signal,"
                    f" min(p_value) AS min_p_value {SCORES} AND isFinite(p_value)"
                    " GROUP BY time, signal ORDER BY time",
                    ("time", "signal", "min_p_value"),
                    unit="none",
                    description=NOTE,
                ),
                PanelSpec(
                    "Drift events",
                    f"""SELECT event_time, {SERIES} AS series, signal, detector, score, threshold,
       p_value
{EVENTS}
ORDER BY event_time DESC LIMIT 500""",
                    (
                        "event_time",
                        "series",
                        "signal",
                        "detector",
                        "score",
                        "threshold",
                        "p_value",
                    ),
                    kind="table",
                    description=NOTE,
                ),
            ),
        ),
        RowSpec(
            "Canary comparisons",
            (
                PanelSpec(
                    "Canary comparisons",
                    """SELECT origin, metric, verdict, effect, ci_low, ci_high, p_adjusted,
       baseline, candidate, n_baseline, n_candidate, created_at
FROM (
    SELECT * FROM comparisons
    WHERE $__timeFilter(created_at)
    ORDER BY created_at DESC
    LIMIT 1 BY origin, metric
)
ORDER BY origin, metric""",
                    (
                        "origin",
                        "metric",
                        "verdict",
                        "effect",
                        "ci_low",
                        "ci_high",
                        "p_adjusted",
                        "baseline",
                        "candidate",
                        "n_baseline",
                        "n_candidate",
                        "created_at",
                    ),
                    kind="table",
                    width=24,
                    description="The latest verdict per origin and metric in the range: "
                    "'canary:<pair>' from the worker's continuous comparisons, 'cli' from "
                    "`llmpulse compare`. The effect is oriented so that positive is worse for "
                    "the candidate (relative for latency, TTFT and costs, absolute for rates), "
                    "with its confidence interval and the Holm-adjusted p-value. Not filtered "
                    "by the variables (each comparison selects its own arms).",
                ),
            ),
        ),
        RowSpec(
            "Quality",
            (
                PanelSpec(
                    "Mean quality scores",
                    f"""SELECT $__timeInterval(timestamp) AS time, score, avg(value) AS mean
FROM traces ARRAY JOIN mapKeys(scores) AS score, mapValues(scores) AS value
WHERE $__timeFilter(timestamp) AND {TRACE_FILTERS}
GROUP BY time, score ORDER BY time""",
                    ("time", "score", "mean"),
                    width=24,
                    description="Scores attached to the calls (evaluators, user feedback). "
                    "Filters: service, endpoint, model, tenant, team.",
                ),
            ),
        ),
    ),
)
