"""Schema migrations: versioned, idempotent, the same DDL on chDB and a server.

``migrate`` applies every version not yet recorded in ``schema_migrations`` and
then re-applies the settings that may change between runs (retention TTL).
Every statement is written to be safe to run twice, so a crash between a
statement and its record only repeats harmless work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from llmpulse.alerts.state import ALERTS_DDL
from llmpulse.detectors.storage import DRIFT_DDL
from llmpulse.processors.sketch_sql import CREATE_FUNCTIONS, CREATE_ROLLUP_FUNCTION
from llmpulse.schemas.event import DIMENSIONS
from llmpulse.schemas.rows import (
    COMPARISON_COLUMNS,
    DEDUP_SETTING,
    MODEL_PRICE_COLUMNS,
    REJECTED_COLUMNS,
    SCORE_COLUMNS,
    TRACE_COLUMNS,
    WINDOW_COLUMNS,
    WINDOW_SCORE_COLUMNS,
    ddl_columns,
)
from llmpulse.store.client import SerialClient
from llmpulse.store.writer import LINEAGE_TABLES


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "raw traces, rejected events, model prices",
        (
            f"""CREATE TABLE IF NOT EXISTS traces (
    {ddl_columns(TRACE_COLUMNS)},
    INDEX idx_event_id event_id TYPE bloom_filter(0.001) GRANULARITY 1
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (toStartOfHour(timestamp), service, model, event_id)
SETTINGS {DEDUP_SETTING}""",
            f"""CREATE TABLE IF NOT EXISTS rejected_events (
    {ddl_columns(REJECTED_COLUMNS)}
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY rejection_id
SETTINGS {DEDUP_SETTING}""",
            f"""CREATE TABLE IF NOT EXISTS model_prices (
    {ddl_columns(MODEL_PRICE_COLUMNS)},
    loaded_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY (table_version, provider, model, effective_from)""",
        ),
    ),
)

_SPEND = """SELECT '{scope}' AS scope, {scope} AS name, '{period}' AS period,
           {start}(timestamp) AS period_start, sum(cost_usd) AS spent_usd, count() AS requests
    FROM traces WHERE {scope} != '' GROUP BY name, period_start"""

MIGRATIONS += (
    Migration(
        2,
        "window statistics with sketches, cost per day, budgets",
        (
            f"""CREATE TABLE IF NOT EXISTS window_stats (
    {ddl_columns(WINDOW_COLUMNS)}
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (grouping, window_seconds, window_start, service, endpoint, model, provider,
          tenant, team, prompt_version, variant, environment)
SETTINGS {DEDUP_SETTING}""",
            # Hopping windows overlap; the windows starting on a multiple of their
            # own length tile time exactly once, so sums and merged sketches over
            # them count every event once.
            """CREATE VIEW IF NOT EXISTS window_tiles AS
SELECT * FROM window_stats WHERE toUnixTimestamp(window_start) % window_seconds = 0""",
            *CREATE_FUNCTIONS,
            """CREATE VIEW IF NOT EXISTS cost_daily AS
SELECT toDate(timestamp) AS day, tenant, team,
       count() AS requests, sum(cost_usd) AS cost_usd,
       countIf(cost_source = 'unpriced') AS unpriced_requests,
       sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens
FROM traces GROUP BY day, tenant, team""",
            """CREATE TABLE IF NOT EXISTS budgets (
    scope LowCardinality(String),
    name String,
    period LowCardinality(String),
    limit_usd Float64,
    updated_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(updated_at) ORDER BY (scope, name, period)""",
            f"""CREATE VIEW IF NOT EXISTS budget_usage AS
SELECT b.scope AS scope, b.name AS name, b.period AS period, s.period_start AS period_start,
       b.limit_usd AS limit_usd, s.spent_usd AS spent_usd,
       s.spent_usd / b.limit_usd AS usage_ratio, s.requests AS requests
FROM (SELECT scope, name, period, argMax(limit_usd, updated_at) AS limit_usd
      FROM budgets GROUP BY scope, name, period HAVING limit_usd > 0) AS b
INNER JOIN (
    {_SPEND.format(scope="tenant", period="day", start="toDate")}
    UNION ALL
    {_SPEND.format(scope="tenant", period="month", start="toStartOfMonth")}
    UNION ALL
    {_SPEND.format(scope="team", period="day", start="toDate")}
    UNION ALL
    {_SPEND.format(scope="team", period="month", start="toStartOfMonth")}
) AS s ON b.scope = s.scope AND b.name = s.name AND b.period = s.period""",
        ),
    ),
)

MIGRATIONS += (
    Migration(3, "alert transitions", (ALERTS_DDL,)),
    Migration(4, "drift events, window scores and baselines", DRIFT_DDL),
)

_DIMS_SQL = ", ".join(DIMENSIONS)

MIGRATIONS += (
    Migration(
        6,
        "late scores, window quality, comparisons",
        (
            # One row per score. A score stored before its call was known is
            # inserted again once the call is (version 1), and the engine keeps
            # the newest version: reads use FINAL.
            f"""CREATE TABLE IF NOT EXISTS scores (
    {ddl_columns(SCORE_COLUMNS)},
    INDEX idx_score_id score_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_score_event event_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_score_call call_event_id TYPE bloom_filter(0.001) GRANULARITY 1
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (name, toStartOfDay(timestamp), score_id)
SETTINGS {DEDUP_SETTING}""",
            # Partial aggregates of the scores of the calls of one window: a late
            # score adds a row, never rewrites one; score_ids makes a redelivered
            # score recognisable, so it is folded once.
            f"""CREATE TABLE IF NOT EXISTS window_scores (
    {ddl_columns(WINDOW_SCORE_COLUMNS)}
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_seconds, grouping, window_start, window_id, score_name, partial_id)
SETTINGS {DEDUP_SETTING}""",
            f"""CREATE VIEW IF NOT EXISTS window_quality AS
SELECT window_id, window_start, window_end, window_seconds, hop_seconds, grouping,
       {_DIMS_SQL}, score_name, threshold,
       sum(score_count) AS scores,
       sum(value_sum) / scores AS mean,
       sqrt(greatest(sum(value_sq_sum) / scores - mean * mean, 0)) AS std,
       sum(below_count) AS below,
       below / scores AS rate_below,
       count() AS partials,
       max(emitted_at) AS updated_at
FROM window_scores FINAL
GROUP BY window_id, window_start, window_end, window_seconds, hop_seconds, grouping,
         {_DIMS_SQL}, score_name, threshold""",
            f"""CREATE TABLE IF NOT EXISTS comparisons (
    {ddl_columns(COMPARISON_COLUMNS)}
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (created_at, run_id, metric)
SETTINGS {DEDUP_SETTING}""",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        7,
        "redaction counts per trace",
        (
            "ALTER TABLE traces ADD COLUMN IF NOT EXISTS redactions"
            " Map(LowCardinality(String), UInt32)",
        ),
    ),
)

# Lineage of every row a worker writes: the task that wrote it, the generation of
# that task's ownership and the checkpoint it belongs to. Rows past a task's last
# checkpoint are deleted when the task restarts from it (exactly-once effect).
MIGRATIONS += (
    Migration(
        9,
        "row lineage for exactly-once writes across workers",
        tuple(
            f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS _task LowCardinality(String) DEFAULT '', "
            "ADD COLUMN IF NOT EXISTS _gen UInt32 DEFAULT 0, "
            "ADD COLUMN IF NOT EXISTS _seq UInt64 DEFAULT 0"
            for t in LINEAGE_TABLES
        ),
    ),
)

MIGRATIONS += (
    Migration(
        8,
        "llmpulse_quantile(q, keys, counts, zeros): sketch roll-up for a GROUP BY",
        (CREATE_ROLLUP_FUNCTION,),
    ),
)

LATEST_VERSION = max(m.version for m in MIGRATIONS)

_MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree ORDER BY version"""


def applied_versions(client: SerialClient) -> set[int]:
    client.command(_MIGRATIONS_TABLE)
    return {int(r[0]) for r in client.rows("SELECT DISTINCT version FROM schema_migrations")}


def migrate(
    client: SerialClient,
    *,
    retention_days: int | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[Migration]:
    """Bring the schema to ``LATEST_VERSION``; returns the migrations applied now."""
    done = applied_versions(client)
    applied: list[Migration] = []
    for m in sorted(MIGRATIONS, key=lambda m: m.version):
        if m.version in done:
            continue
        for stmt in m.statements:
            client.command(stmt)
        client.insert(
            "schema_migrations", [(m.version, m.name, now())], ["version", "name", "applied_at"]
        )
        applied.append(m)
    apply_retention(client, retention_days)
    return applied


def apply_retention(client: SerialClient, retention_days: int | None) -> None:
    # Counted from ingestion, not event time: replaying last year's traffic
    # must not be deleted on arrival.
    for table, column in (("traces", "ingested_at"), ("rejected_events", "received_at")):
        if retention_days:
            client.command(
                f"ALTER TABLE {table} MODIFY TTL toDateTime({column}) "
                f"+ INTERVAL {int(retention_days)} DAY"
            )
        elif _has_ttl(client, table):
            client.command(f"ALTER TABLE {table} REMOVE TTL")


def _has_ttl(client: SerialClient, table: str) -> bool:
    rows = client.rows(
        "SELECT create_table_query FROM system.tables "
        "WHERE database = currentDatabase() AND name = {t:String}",
        {"t": table},
    )
    return bool(rows) and " TTL " in str(rows[0][0])
