"""Cost and budgets: spend per tenant, team, model and provider; budget burn; cost per 1k tokens.

Cost panels read ``traces`` (team and provider are not window dimensions by
default), budget panels the ``budget_usage`` view.
"""

from __future__ import annotations

from typing import Final

from llmpulse.dashboards.common import TRACE_FILTERS, DashboardSpec, PanelSpec, RowSpec, stat_tile

CALLS: Final = f"FROM traces WHERE $__timeFilter(timestamp) AND {TRACE_FILTERS}"
NOTE: Final = "Filters: service, endpoint, model, tenant, team."
PER_1K: Final = "sum(cost_usd) / (sum(input_tokens) + sum(output_tokens)) * 1000"


def _spend_by(column: str, title: str) -> PanelSpec:
    return PanelSpec(
        f"Cost per hour by {title}",
        f"SELECT $__timeInterval(timestamp) AS time, {column},"
        f" sum(cost_usd) * 3600 / $__interval_s AS usd_per_hour {CALLS}"
        f" GROUP BY time, {column} ORDER BY time",
        ("time", column, "usd_per_hour"),
        unit="currencyUSD",
        stacked=True,
        description=NOTE,
    )


def _breakdown(column: str, title: str) -> PanelSpec:
    return PanelSpec(
        f"Cost by {title}",
        f"SELECT {column}, sum(cost_usd) AS cost_usd {CALLS} GROUP BY {column}"
        " ORDER BY cost_usd DESC LIMIT 20",
        (column, "cost_usd"),
        kind="bargauge",
        unit="currencyUSD",
        width=6,
        description=NOTE,
    )


BUDGET_FILTER: Final = (
    "(scope != 'tenant' OR $__conditionalAll(name IN (${tenant:singlequote}), $tenant))"
    " AND (scope != 'team' OR $__conditionalAll(name IN (${team:singlequote}), $team))"
)

COST: Final = DashboardSpec(
    uid="llmpulse-cost",
    title="llmpulse / Cost and budgets",
    description="Spend per tenant, team, model and provider; budget burn; cost per 1k tokens.",
    time_from="now-24h",
    rows=(
        RowSpec(
            "Spend over the selected range",
            (
                stat_tile(
                    "Cost",
                    f"SELECT sum(cost_usd) AS cost_usd {CALLS}",
                    "cost_usd",
                    NOTE,
                    unit="currencyUSD",
                    decimals=2,
                ),
                stat_tile(
                    "Cost per 1k tokens",
                    f"SELECT {PER_1K} AS usd_per_1k_tokens {CALLS} AND cost_usd IS NOT NULL",
                    "usd_per_1k_tokens",
                    "Input and output tokens of priced calls. " + NOTE,
                    unit="currencyUSD",
                    decimals=4,
                ),
                stat_tile(
                    "Tokens",
                    f"SELECT sum(input_tokens) + sum(output_tokens) AS tokens {CALLS}",
                    "tokens",
                    NOTE,
                ),
                stat_tile(
                    "Unpriced calls",
                    f"SELECT countIf(cost_source = 'unpriced') AS unpriced_calls {CALLS}",
                    "unpriced_calls",
                    "Models missing from the price table: their cost is unknown, "
                    "not zero (llmpulse prices import). " + NOTE,
                    thresholds=((1, "orange"),),
                ),
            ),
        ),
        RowSpec(
            "Spend over time",
            (
                _spend_by("tenant", "tenant"),
                _spend_by("team", "team"),
                _spend_by("model", "model"),
                _spend_by("provider", "provider"),
            ),
        ),
        RowSpec(
            "Where the money goes",
            (
                _breakdown("tenant", "tenant"),
                _breakdown("team", "team"),
                _breakdown("model", "model"),
                _breakdown("provider", "provider"),
                PanelSpec(
                    "Cost per 1k tokens by provider and model",
                    f"""SELECT provider, model, count() AS calls,
       sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
       sum(cost_usd) AS cost_usd,
       cost_usd / (input_tokens + output_tokens) * 1000 AS usd_per_1k_tokens
{CALLS} AND cost_source != 'unpriced'
GROUP BY provider, model ORDER BY cost_usd DESC""",
                    (
                        "provider",
                        "model",
                        "calls",
                        "input_tokens",
                        "output_tokens",
                        "cost_usd",
                        "usd_per_1k_tokens",
                    ),
                    kind="table",
                    width=24,
                    overrides={"cost_usd": "currencyUSD", "usd_per_1k_tokens": "currencyUSD"},
                    description=NOTE,
                ),
            ),
        ),
        RowSpec(
            "Budgets",
            (
                PanelSpec(
                    "Budget burn, current period",
                    f"""SELECT concat(scope, ' ', name, ' (', period, ')') AS budget,
       usage_ratio
FROM budget_usage
WHERE period_start = if(period = 'day', today(), toStartOfMonth(today())) AND {BUDGET_FILTER}
ORDER BY usage_ratio DESC""",
                    ("budget", "usage_ratio"),
                    kind="bargauge",
                    unit="percentunit",
                    max_value=1.0,
                    thresholds=((0.8, "orange"), (1.0, "red")),
                    description="Spend / limit of each configured budget in the period running "
                    "now (UTC days and months). Filters: tenant, team.",
                ),
                PanelSpec(
                    "Budgets: spend and limit per period",
                    f"""SELECT scope, name, period, period_start, limit_usd, spent_usd, usage_ratio,
       requests
FROM budget_usage
WHERE period_start >= toDate($__fromTime) AND period_start <= toDate($__toTime)
  AND {BUDGET_FILTER}
ORDER BY period_start DESC, usage_ratio DESC""",
                    (
                        "scope",
                        "name",
                        "period",
                        "period_start",
                        "limit_usd",
                        "spent_usd",
                        "usage_ratio",
                        "requests",
                    ),
                    kind="table",
                    overrides={
                        "limit_usd": "currencyUSD",
                        "spent_usd": "currencyUSD",
                        "usage_ratio": "percentunit",
                    },
                    description="Filters: tenant, team.",
                ),
                PanelSpec(
                    "Daily cost per tenant",
                    """SELECT toDateTime(day) AS time, tenant, sum(cost_usd) AS cost_usd
FROM cost_daily
WHERE day >= toDate($__fromTime) AND day <= toDate($__toTime)
  AND $__conditionalAll(tenant IN (${tenant:singlequote}), $tenant)
  AND $__conditionalAll(team IN (${team:singlequote}), $team)
GROUP BY time, tenant ORDER BY time""",
                    ("time", "tenant", "cost_usd"),
                    kind="bars",
                    unit="currencyUSD",
                    width=24,
                    description="From the cost_daily view (UTC days). Filters: tenant, team.",
                ),
            ),
        ),
    ),
)
