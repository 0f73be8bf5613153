"""Read-only SQL and tenant scoping against a real chDB engine.

Every write, DDL, settings change or file/URL access answers ReadOnlyQueryError
(403 on /sql) and leaves the store as it was; a tenant sees only its rows in
every table, view, join, subquery and sketch function."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from llmpulse.errors import ReadOnlyQueryError, StoreError
from llmpulse.processors.sketch import LogHistogram
from llmpulse.processors.sketch_sql import merged_quantile_sql
from llmpulse.store.client import SerialClient, connect
from llmpulse.store.migrations import migrate
from llmpulse.store.readonly import run_readonly

ACME, OTHER, QUIRKY = "acme", "other", "o'brien\\ \" -- x"
TENANTS = (ACME, OTHER, QUIRKY)
# Each tenant's latencies sit in a band of their own, so a leak shows in any sum.
LATENCY = {ACME: 100.0, OTHER: 5000.0, QUIRKY: 40.0}
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _sketch(value: float, n: int) -> tuple[list[int], list[int]]:
    h = LogHistogram()
    for _ in range(n):
        h.update(value)
    keys, counts = h.to_arrays()
    return [int(k) for k in keys], [int(c) for c in counts]


@pytest.fixture(scope="module")
def client(chdb_dir: Path) -> Iterator[SerialClient]:
    dsn = f"chdb://{chdb_dir}"
    c = SerialClient(connect(dsn, "t_sql_access"), dsn)
    migrate(c)
    for i, t in enumerate(TENANTS):
        rows = [
            (f"{t}-{k}", T0, "svc", "gpt-4o", t, f"team-{t}", LATENCY[t] + k, 0.5, f"secret of {t}")
            for k in range(3)
        ]
        c.insert(
            "traces",
            rows,
            ["event_id", "timestamp", "service", "model", "tenant", "team", "latency_ms",
             "cost_usd", "prompt"],
        )  # fmt: skip
        keys, counts = _sketch(LATENCY[t], 10)
        c.insert(
            "window_stats",
            [(f"w-{t}", T0, 60, 60, "tenant", t, 10, keys, counts, 0, LATENCY[t], LATENCY[t])],
            ["window_id", "window_start", "window_seconds", "hop_seconds", "grouping", "tenant",
             "requests", "latency_sketch_keys", "latency_sketch_counts", "latency_sketch_zeros",
             "latency_max_ms", "latency_p99_ms"],
        )  # fmt: skip
        c.insert(
            "budgets",
            [("tenant", t, "day", 10.0 * (i + 1), T0)],
            ["scope", "name", "period", "limit_usd", "updated_at"],
        )
        c.insert(
            "rejected_events",
            [(f"r-{t}", T0, "src", "bad", "x", "y", "", f"raw of {t}")],
            ["rejection_id", "received_at", "source", "reason", "category", "field", "event_id",
             "raw"],
        )  # fmt: skip
    yield c
    c.close()


def _snapshot(c: SerialClient) -> list[tuple[Any, ...]]:
    """What a write would change: every table's name, definition and row count."""
    tables = c.rows(
        "SELECT name, create_table_query, total_rows FROM system.tables"
        " WHERE database = currentDatabase() ORDER BY name"
    )
    return [*tables, *c.rows("SELECT count(), sum(latency_ms) FROM traces")]


HOSTILE = [
    "DROP TABLE traces",
    "DROP TABLE IF EXISTS traces",
    "TRUNCATE TABLE traces",
    "INSERT INTO traces (event_id) VALUES ('x')",
    "INSERT INTO traces SELECT * FROM traces",
    "ALTER TABLE traces DELETE WHERE 1",
    "ALTER TABLE traces DROP COLUMN prompt",
    "ALTER TABLE traces UPDATE tenant = 'x' WHERE 1",
    "DELETE FROM traces WHERE 1",
    "OPTIMIZE TABLE traces FINAL",
    "RENAME TABLE traces TO traces_old",
    "CREATE TABLE evil (x Int8) ENGINE = Memory",
    "CREATE VIEW evil AS SELECT 1",
    "CREATE FUNCTION evil AS x -> x",
    "SYSTEM DROP DNS CACHE",
    "SYSTEM STOP MERGES",
    "SYSTEM FLUSH LOGS",
    "KILL QUERY WHERE 1",
    "GRANT ALL ON *.* TO default",
    "SET readonly = 0",
    "SET max_threads = 1",
    "SET additional_table_filters = {'traces': '1'}",
    "SELECT 1 SETTINGS readonly = 0",
    "SELECT * FROM traces SETTINGS additional_table_filters = {'traces': '1'}",
    "SELECT * FROM (SELECT * FROM traces SETTINGS readonly = 0)",
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT file('/etc/passwd')",
    "SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')",
    "SELECT * FROM s3('http://127.0.0.1:9/bucket/x.csv')",
    "SELECT * FROM remote('127.0.0.1:9', system.one)",
    "SELECT * FROM mysql('127.0.0.1:9', 'db', 't', 'u', 'p')",
    "SELECT * FROM postgresql('127.0.0.1:9', 'db', 't', 'u', 'p')",
    "SELECT * FROM executable('id', 'LineAsString', 'x String')",
    "SELECT * FROM python('x')",
    "SELECT * FROM hdfs('hdfs://127.0.0.1:9/x', 'CSV')",
    "SELECT * FROM input('x String')",
    "SELECT * FROM filesystem('/etc')",
    "SELECT dictGet('d', 'x', 1)",
    "SELECT joinGet('j', 'x', 1)",
    "SELECT 1 INTO OUTFILE '/tmp/llmpulse-evil.txt'",
    "SELECT * FROM traces INTO OUTFILE '/tmp/llmpulse-evil.txt' FORMAT CSV",
    "SELECT 1; DROP TABLE traces",
    "SELECT 1;DROP TABLE traces;",
    "SELECT 1 /* ; */; DROP TABLE traces",
    "SELECT ';'; INSERT INTO traces (event_id) VALUES ('x')",
    "DROP TABLE traces; SELECT 1",
    "SELECT 1 FORMAT JSON",
    "DESCRIBE TABLE traces",
]


@pytest.mark.parametrize("sql", HOSTILE)
def test_writes_ddl_settings_and_outside_reads_are_refused(client: SerialClient, sql: str) -> None:
    before = _snapshot(client)
    with pytest.raises(ReadOnlyQueryError):
        run_readonly(client, sql)
    assert _snapshot(client) == before
    assert not Path("/tmp/llmpulse-evil.txt").exists()


@pytest.mark.parametrize(
    "sql",
    ["DROP TABLE traces", "INSERT INTO traces (event_id) VALUES ('x')",
     "ALTER TABLE traces DELETE WHERE 1",
     "SELECT * FROM file('/etc/passwd', 'LineAsString')",
     "SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')",
     "SELECT * FROM executable('id', 'LineAsString', 'x String')"],
)  # fmt: skip
def test_the_engine_refuses_writes_even_without_the_guard(
    client: SerialClient, chdb_dir: Path, sql: str
) -> None:
    # The last layer on its own: readonly=1 in the engine. A client of its own,
    # as a statement run this way can leave its session readonly.
    dsn = f"chdb://{chdb_dir}"
    raw = SerialClient(connect(dsn, "t_sql_access"), dsn)
    try:
        before = _snapshot(client)
        with pytest.raises(Exception, match=r"READONLY|readonly"):
            raw.query(sql, readonly=1)
        assert _snapshot(client) == before
    finally:
        raw.close()


def test_statements_readonly_lets_through_in_chdb_are_refused_by_the_guard(
    client: SerialClient,
) -> None:
    # readonly=1 alone allows these in chDB: file() reads a local file, INTO
    # OUTFILE writes one, SYSTEM STOP MERGES stops the store's merges.
    for sql in ("SELECT file('/etc/hostname')", "SYSTEM STOP MERGES"):
        with pytest.raises(ReadOnlyQueryError):
            run_readonly(client, sql)


def test_refused_queries_leave_the_shared_client_writable(client: SerialClient) -> None:
    # A SET that reached a shared chDB session used to leave it readonly for good,
    # breaking the worker's next insert.
    for sql in ("SET readonly = 1", "SET max_threads = 1", "SELECT 1 SETTINGS readonly = 1"):
        with pytest.raises(ReadOnlyQueryError):
            run_readonly(client, sql)
    client.command("CREATE TABLE IF NOT EXISTS still_writable (x Int8) ENGINE = Memory")
    client.command("DROP TABLE still_writable")


def test_reads_work_and_limits_apply(client: SerialClient) -> None:
    cols, rows = run_readonly(
        client, "SELECT tenant, count() AS n FROM traces GROUP BY tenant ORDER BY tenant;"
    )
    assert cols == ["tenant", "n"] and len(rows) == 3
    assert run_readonly(client, "SELECT count() FROM system.one -- a comment")[1] == [(1,)]
    assert run_readonly(client, "SELECT sum(number) FROM numbers(10)")[1] == [(45,)]
    assert ("traces",) in run_readonly(client, "SHOW TABLES")[1]
    assert run_readonly(client, "SELECT ';' AS semicolon")[1] == [(";",)]
    with pytest.raises(StoreError, match=r"TIMEOUT|Timeout"):
        run_readonly(
            client,
            "SELECT sum(cityHash64(number)) FROM numbers(100000000000)",
            settings={"max_execution_time": 0.5},
        )


# ------------------------------------------------------------- tenant scoping

SCOPED = {
    "plain": "SELECT tenant, latency_ms FROM traces",
    "qualified": "SELECT tenant FROM t_sql_access.traces",
    "self join": "SELECT a.tenant, b.tenant FROM traces AS a CROSS JOIN traces AS b",
    "join on team": "SELECT a.tenant FROM traces a JOIN traces b ON a.team != b.team",
    "subquery": "SELECT * FROM (SELECT tenant, latency_ms FROM traces)",
    "in subquery": "SELECT tenant FROM traces WHERE tenant IN (SELECT tenant FROM traces)",
    "scalar subquery": "SELECT (SELECT groupArray(tenant) FROM traces)",
    "cte": "WITH x AS (SELECT * FROM traces) SELECT tenant FROM x",
    "union": "SELECT tenant FROM traces UNION ALL SELECT tenant FROM window_stats",
    "except": "SELECT tenant FROM window_stats EXCEPT SELECT 'nobody'",
    "exists": "SELECT tenant FROM traces t WHERE EXISTS (SELECT 1 FROM traces u WHERE u.tenant != t.tenant)",
    "window_tiles view": "SELECT tenant, latency_max_ms FROM window_tiles",
    "cost_daily view": "SELECT tenant, requests FROM cost_daily",
    "budget_usage view": "SELECT name FROM budget_usage",
    "budgets": "SELECT name, limit_usd FROM budgets",
    "drift": "SELECT tenant FROM drift_events",
    "final": "SELECT tenant FROM traces FINAL",
    "array join": "SELECT t FROM traces ARRAY JOIN [tenant] AS t",
    "having": "SELECT tenant FROM traces GROUP BY tenant HAVING count() > 0",
    "prompt": "SELECT prompt FROM traces",
}


@pytest.mark.parametrize("tenant", TENANTS)
@pytest.mark.parametrize("name", sorted(SCOPED))
def test_a_tenant_sees_only_its_rows(client: SerialClient, tenant: str, name: str) -> None:
    _, rows = run_readonly(client, SCOPED[name], tenant=tenant)
    others = [t for t in TENANTS if t != tenant]
    for row in rows:
        for value in row:
            text = str(value)
            assert not any(o in text for o in others if o != ""), (name, row)
            if isinstance(value, float):
                assert value < 1000 or tenant == OTHER, (name, row)
    full, _ = run_readonly(client, SCOPED[name])  # the same query unscoped sees more
    assert full is not None


@pytest.mark.parametrize("tenant", TENANTS)
def test_sums_and_sketch_quantiles_count_only_the_tenant(client: SerialClient, tenant: str) -> None:
    rows = run_readonly(
        client,
        f"SELECT count(), sum(requests), max(latency_max_ms),"
        f" {merged_quantile_sql('latency', 0.99)} FROM window_tiles",
        tenant=tenant,
    )[1]
    n, requests, worst, p99 = rows[0]
    assert (n, requests, worst) == (1, 10, LATENCY[tenant])
    assert abs(p99 - LATENCY[tenant]) / LATENCY[tenant] < 0.011
    traces = run_readonly(client, "SELECT count(), sum(latency_ms) FROM traces", tenant=tenant)[1]
    assert traces == [(3, 3 * LATENCY[tenant] + 3)]
    spent = run_readonly(
        client, "SELECT sum(spent_usd), any(name) FROM budget_usage", tenant=tenant
    )[1]
    assert spent == [(1.5, tenant)]


@pytest.mark.parametrize(
    "sql",
    ["SELECT * FROM merge('t_sql_access', '^traces$')",
     "SELECT * FROM merge(currentDatabase(), 'traces')",
     "SELECT * FROM numbers(3)",
     "SELECT * FROM view(SELECT * FROM traces)",
     "SELECT * FROM rejected_events",
     "SELECT raw FROM rejected_events",
     "SELECT * FROM system.tables",
     "SELECT * FROM system.query_log",
     "SELECT * FROM information_schema.tables",
     "SELECT * FROM other_db.traces",
     "SHOW TABLES",
     "EXPLAIN SELECT * FROM traces",
     "SELECT * FROM traces SETTINGS additional_table_filters = {'traces': '1'}"],
)  # fmt: skip
def test_a_tenant_cannot_step_around_the_filters(client: SerialClient, sql: str) -> None:
    with pytest.raises(ReadOnlyQueryError):
        run_readonly(client, sql, tenant=ACME)


def test_merge_would_bypass_the_filters_which_is_why_it_is_refused(client: SerialClient) -> None:
    # The field-notes fact this guard exists for, checked on this engine.
    leaked = client.query(
        "SELECT DISTINCT tenant FROM merge(currentDatabase(), '^traces$') ORDER BY tenant",
        additional_table_filters={"traces": "tenant = 'acme'"},
        readonly=1,
    )[1]
    assert len(leaked) == 3


def test_tables_without_a_tenant_column_are_closed_to_tenants_by_default(
    client: SerialClient,
) -> None:
    client.command("CREATE TABLE IF NOT EXISTS new_table (x String) ENGINE = Memory")
    client.command("INSERT INTO new_table VALUES ('everyone')")
    try:
        with pytest.raises(ReadOnlyQueryError, match="no tenant column"):
            run_readonly(client, "SELECT * FROM new_table", tenant=ACME)
        client.command("CREATE VIEW IF NOT EXISTS new_view AS SELECT * FROM new_table")
        # through a view the engine's filter ('0') still applies
        assert run_readonly(client, "SELECT * FROM new_view", tenant=ACME)[1] == []
        assert run_readonly(client, "SELECT * FROM new_view")[1] == [("everyone",)]
        # shared reference data stays readable
        assert run_readonly(client, "SELECT count() > 0 FROM schema_migrations", tenant=ACME)[
            1
        ] == [(1,)]
    finally:
        client.command("DROP VIEW IF EXISTS new_view")
        client.command("DROP TABLE IF EXISTS new_table")


def test_llmpulse_sql_tenant_flag(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "LLMPULSE_DATA_DIR": str(tmp_path)}
    store = f"chdb://{tmp_path / 'store'}"
    seed = (
        "import sys; from llmpulse.store.client import SerialClient, connect;"
        "from llmpulse.store.migrations import migrate;"
        "c = SerialClient(connect(sys.argv[1]), sys.argv[1]); migrate(c);"
        "c.insert('traces', [('a', 'acme'), ('b', 'other')], ['event_id', 'tenant'])"
    )
    subprocess.run([sys.executable, "-c", seed, store], check=True, env=env, cwd=tmp_path)

    def sql(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "llmpulse.cli.main", "sql", "-f", "json",
             "--clickhouse", store, *args],
            env=env, capture_output=True, text=True, cwd=tmp_path,
        )  # fmt: skip

    scoped = sql("SELECT tenant FROM traces ORDER BY tenant", "--tenant", "acme")
    assert scoped.returncode == 0, scoped.stderr
    assert json.loads(scoped.stdout) == [{"tenant": "acme"}]
    refused = sql("SELECT * FROM merge(currentDatabase(), 'traces')", "--tenant", "acme")
    assert refused.returncode == 1
    assert "table functions are not allowed" in " ".join(refused.stderr.split())
