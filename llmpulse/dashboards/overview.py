"""Overview: traffic, errors, latency and TTFT percentiles, cost rate, firing alerts.

Everything but the alerts comes from ``window_tiles`` of the default grouping
``service+endpoint+model``; percentiles merge the stored sketches of the rows in
each bucket (``llmpulse_quantile``), so a coarse bucket or a whole range gets a
true percentile, never an average of percentiles.
"""

from __future__ import annotations

from typing import Final

from llmpulse.dashboards.common import (
    ALERT_LABEL_FILTERS,
    LATEST_ALERTS,
    SEM,
    SERIES_GROUPING,
    TILE_SECONDS,
    DashboardSpec,
    PanelSpec,
    RowSpec,
    labels_text,
    quantile,
    stat_tile,
)

TILES: Final = (
    f"FROM window_tiles WHERE {SERIES_GROUPING} AND window_seconds = {TILE_SECONDS}"
    f" AND $__timeFilter(window_start) AND {SEM}"
)
# A bucket narrower than a tile holds at most one tile: divide by the tile then.
PER_SECOND: Final = f"greatest($__interval_s, {TILE_SECONDS})"
BUCKET: Final = "$__timeInterval(window_start) AS time"

FIRING_NOW: Final = f"""SELECT event_time AS since, rule, severity, {labels_text()} AS series,
       value, threshold, summary
FROM ({LATEST_ALERTS})
WHERE state = 'firing' AND {ALERT_LABEL_FILTERS}
ORDER BY severity = 'critical' DESC, since DESC"""

VARIABLE_NOTE: Final = "Filters: service, endpoint, model."


def firing_now(description: str, width: int = 12) -> PanelSpec:
    """The alerts whose latest transition is to firing, most severe and newest first."""
    return PanelSpec(
        "Alerts firing now",
        FIRING_NOW,
        ("since", "rule", "severity", "series", "value", "threshold", "summary"),
        kind="table",
        width=width,
        description=description,
    )


def _by(
    title: str, column: str, value: str, name: str, *, unit: str, stacked: bool = False
) -> PanelSpec:
    """``value`` over time, one series per ``column``."""
    return PanelSpec(
        title,
        f"SELECT {BUCKET}, {column}, {value} AS {name} {TILES}"
        f" GROUP BY time, {column} ORDER BY time",
        ("time", column, name),
        unit=unit,
        stacked=stacked,
        description=VARIABLE_NOTE,
    )


OVERVIEW: Final = DashboardSpec(
    uid="llmpulse-overview",
    title="llmpulse / Overview",
    description="Requests, errors, latency and TTFT percentiles, cost rate and firing alerts.",
    rows=(
        RowSpec(
            "Now, over the selected range",
            (
                stat_tile(
                    "Requests",
                    f"SELECT sum(requests) AS requests {TILES}",
                    "requests",
                    VARIABLE_NOTE,
                    width=4,
                ),
                stat_tile(
                    "Error rate",
                    f"SELECT sum(errors) / sum(requests) AS error_rate {TILES}",
                    "error_rate",
                    VARIABLE_NOTE,
                    unit="percentunit",
                    decimals=2,
                    thresholds=((0.01, "orange"), (0.05, "red")),
                    width=4,
                ),
                stat_tile(
                    "p99 latency",
                    f"SELECT {quantile(0.99)} AS p99_ms {TILES}",
                    "p99_ms",
                    "Merged sketches of every window in the range: a true p99. " + VARIABLE_NOTE,
                    unit="ms",
                    thresholds=((800, "red"),),
                    width=4,
                ),
                stat_tile(
                    "p99 time to first token",
                    f"SELECT {quantile(0.99, 'ttft')} AS ttft_p99_ms {TILES}",
                    "ttft_p99_ms",
                    VARIABLE_NOTE,
                    unit="ms",
                    width=4,
                ),
                stat_tile(
                    "Cost",
                    f"SELECT sum(cost_usd) AS cost_usd {TILES}",
                    "cost_usd",
                    "Priced calls only (unpriced calls have no cost). " + VARIABLE_NOTE,
                    unit="currencyUSD",
                    decimals=2,
                    width=4,
                ),
                stat_tile(
                    "Alerts firing",
                    f"SELECT count() AS firing FROM ({LATEST_ALERTS}) WHERE state = 'firing'"
                    f" AND {ALERT_LABEL_FILTERS}",
                    "firing",
                    "Now, whatever the range. Filters: service, endpoint, model, "
                    "tenant (alerts carrying that label).",
                    thresholds=((1, "red"),),
                    width=4,
                ),
            ),
        ),
        RowSpec(
            "Traffic and errors",
            (
                _by(
                    "Requests per second by service",
                    "service",
                    f"sum(requests) / {PER_SECOND}",
                    "rps",
                    unit="reqps",
                    stacked=True,
                ),
                _by(
                    "Error rate by service",
                    "service",
                    "sum(errors) / sum(requests)",
                    "error_rate",
                    unit="percentunit",
                ),
            ),
        ),
        RowSpec(
            "Latency and time to first token",
            (
                PanelSpec(
                    "Latency p50 / p95 / p99",
                    f"SELECT {BUCKET}, {quantile(0.5)} AS p50, {quantile(0.95)} AS p95,"
                    f" {quantile(0.99)} AS p99 {TILES} GROUP BY time ORDER BY time",
                    ("time", "p50", "p95", "p99"),
                    unit="ms",
                    description="Each point merges the sketches of the windows in its bucket. "
                    + VARIABLE_NOTE,
                ),
                PanelSpec(
                    "Time to first token p50 / p95 / p99",
                    f"SELECT {BUCKET}, {quantile(0.5, 'ttft')} AS p50,"
                    f" {quantile(0.95, 'ttft')} AS p95, {quantile(0.99, 'ttft')} AS p99"
                    f" {TILES} AND length(ttft_sketch_keys) + ttft_sketch_zeros > 0"
                    " GROUP BY time ORDER BY time",
                    ("time", "p50", "p95", "p99"),
                    unit="ms",
                    description="Streaming calls only. " + VARIABLE_NOTE,
                ),
                PanelSpec(
                    "p99 latency by model and endpoint",
                    f"SELECT {BUCKET}, concat(model, ' ', endpoint) AS series,"
                    f" {quantile(0.99)} AS p99 {TILES} GROUP BY time, series ORDER BY time",
                    ("time", "series", "p99"),
                    unit="ms",
                    width=24,
                    description=VARIABLE_NOTE,
                ),
                PanelSpec(
                    "Latency and TTFT per model and endpoint, over the range",
                    f"""SELECT model, endpoint, sum(requests) AS requests,
       sum(errors) / requests AS error_rate,
       {quantile(0.5)} AS p50_ms, {quantile(0.95)} AS p95_ms, {quantile(0.99)} AS p99_ms,
       {quantile(0.5, "ttft")} AS ttft_p50_ms, {quantile(0.95, "ttft")} AS ttft_p95_ms,
       {quantile(0.99, "ttft")} AS ttft_p99_ms,
       sum(cost_usd) AS cost_usd
{TILES}
GROUP BY model, endpoint ORDER BY requests DESC""",
                    (
                        "model",
                        "endpoint",
                        "requests",
                        "error_rate",
                        "p50_ms",
                        "p95_ms",
                        "p99_ms",
                        "ttft_p50_ms",
                        "ttft_p95_ms",
                        "ttft_p99_ms",
                        "cost_usd",
                    ),
                    kind="table",
                    width=24,
                    height=9,
                    decimals=1,
                    overrides={
                        "error_rate": "percentunit",
                        "p50_ms": "ms",
                        "p95_ms": "ms",
                        "p99_ms": "ms",
                        "ttft_p50_ms": "ms",
                        "ttft_p95_ms": "ms",
                        "ttft_p99_ms": "ms",
                        "cost_usd": "currencyUSD",
                    },
                    description="Percentiles of the whole range from merged sketches. "
                    + VARIABLE_NOTE,
                ),
            ),
        ),
        RowSpec(
            "Cost and alerts",
            (
                _by(
                    "Cost rate by model (USD per hour)",
                    "model",
                    f"sum(cost_usd) * 3600 / {PER_SECOND}",
                    "usd_per_hour",
                    unit="currencyUSD",
                    stacked=True,
                ),
                firing_now("The latest transition of each alert is 'firing'."),
            ),
        ),
    ),
)
