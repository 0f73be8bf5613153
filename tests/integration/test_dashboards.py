"""The Grafana dashboards: checked-in files fresh, and every panel's SQL run on real data.

Each panel's SQL goes through what Grafana and grafana-clickhouse-datasource do
to it (llmpulse.dashboards.macros: $__conditionalAll and the variables, then the
backend's time macros) and runs on the migrated schema in chDB, seeded with the
showcase hour through the worker's own processing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from llmpulse.dashboards import DASHBOARDS, VARIABLE_QUERIES, render_files
from llmpulse.dashboards.common import PLUGIN_VERSION, DashboardSpec, PanelSpec
from llmpulse.dashboards.macros import QueryContext, Selection, render
from llmpulse.store.readonly import run_readonly
from tests.seed import opened

STORED_PERCENTILE = re.compile(r"(?<!AS )\b(latency|ttft)_p\d+_ms\b")
REPO = Path(__file__).resolve().parents[2]
PANELS = [(d, p) for d in DASHBOARDS for p in d.panels]
IDS = [f"{d.uid}:{p.title}" for d, p in PANELS]
EVERYTHING = {
    name: Selection.all([]) for name in ("service", "endpoint", "model", "tenant", "team")
}


@pytest.fixture(scope="module")
def seeded(showcase: tuple[Any, int]) -> Iterator[tuple[Any, int]]:
    settings, end_ms = showcase
    with opened(settings) as client:
        yield client, end_ms


def context(end_ms: int, interval_s: float, hours: float = 2.0) -> QueryContext:
    end = datetime.fromtimestamp(end_ms / 1000, UTC) + timedelta(minutes=5)
    return QueryContext(end - timedelta(hours=hours), end, interval_s)


def run(client: Any, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    return run_readonly(client, sql)


def columns_of(client: Any, sql: str) -> tuple[str, ...]:
    """The result's column names, also for an empty result (which carries none here)."""
    _, rows = client.query(f"DESCRIBE ({sql})", readonly=1)
    return tuple(r[0] for r in rows)


def test_checked_in_files_are_fresh() -> None:
    stale = []
    for rel, text in render_files().items():
        path = REPO / "dashboards" / rel
        if not path.exists() or path.read_text() != text:
            stale.append(rel)
    extra = {
        str(p.relative_to(REPO / "dashboards"))
        for p in (REPO / "dashboards").rglob("*")
        if p.is_file() and p.suffix in (".json", ".yaml")
    } - set(render_files())
    assert not stale and not extra, (
        f"dashboards/ is stale ({stale}, unexpected {sorted(extra)}): "
        "run `llmpulse dashboards export dashboards`"
    )


@pytest.mark.parametrize("spec", DASHBOARDS, ids=[d.uid for d in DASHBOARDS])
def test_dashboard_model(spec: DashboardSpec) -> None:
    data = json.loads(render_files()[f"json/{spec.uid}.json"])
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "grafana-clickhouse-datasource"
    for name in ("service", "endpoint", "model", "tenant", "team"):
        v = variables[name]
        assert v["type"] == "query" and v["multi"] and v["includeAll"]
        assert v["datasource"] == {"type": "grafana-clickhouse-datasource", "uid": "${datasource}"}
    panels = [p for p in data["panels"] if p["type"] != "row"]
    assert [p["title"] for p in panels] == [p.title for p in spec.panels]
    assert len({p["id"] for p in data["panels"]}) == len(data["panels"])
    for p in panels:
        assert p["pluginVersion"] and p["datasource"]["uid"] == "${datasource}"
        [target] = p["targets"]
        assert target["editorType"] == "sql" and target["pluginVersion"] == PLUGIN_VERSION
        assert target["datasource"] == {
            "type": "grafana-clickhouse-datasource",
            "uid": "${datasource}",
        }
        assert target["format"] == (0 if p["type"] == "timeseries" else 1)
        sql = target["rawSql"]
        # percentiles come from merged sketches, never from the stored window percentiles
        assert not STORED_PERCENTILE.search(sql), sql
        # bounded by the dashboard's range, or "now" by nature (current alerts, budgets)
        assert any(t in sql for t in ("$__timeFilter(", "$__fromTime", "LIMIT 1 BY", "today()"))


@pytest.mark.parametrize(("spec", "panel"), PANELS, ids=IDS)
@pytest.mark.parametrize("interval_s", [30, 300])
def test_panel_sql_runs_on_seeded_data(
    seeded: tuple[Any, int], spec: DashboardSpec, panel: PanelSpec, interval_s: int
) -> None:
    client, end_ms = seeded
    sql = render(panel.sql, context(end_ms, interval_s), EVERYTHING)
    assert "$" not in sql.replace("'$", ""), sql  # nothing left unexpanded
    columns, rows = run(client, sql)
    assert tuple(columns) == panel.columns
    assert rows, f"{spec.uid} / {panel.title} returned nothing:\n{sql}"
    if panel.format == 0:
        times = [r[0] for r in rows]
        assert times == sorted(times)


@pytest.mark.parametrize(("spec", "panel"), PANELS, ids=IDS)
def test_panel_sql_with_selected_values(
    seeded: tuple[Any, int], spec: DashboardSpec, panel: PanelSpec
) -> None:
    client, end_ms = seeded
    chosen = {
        "service": Selection(["chat-api", "search"]),
        "endpoint": Selection(["/v1/chat"]),
        "model": Selection(["gpt-4o-mini"]),
        "tenant": Selection(["acme"]),
        "team": Selection(["platform"]),
    }
    sql = render(panel.sql, context(end_ms, 60), chosen)
    assert "IN ('chat-api','search')" in sql or "$service" not in panel.sql
    run(client, sql)
    assert columns_of(client, sql) == panel.columns


def test_variable_queries(seeded: tuple[Any, int]) -> None:
    client, end_ms = seeded
    found = {}
    for name, sql in VARIABLE_QUERIES.items():
        _, rows = run(client, render(sql, context(end_ms, 60), EVERYTHING))
        found[name] = [r[0] for r in rows]
    assert found["service"] == ["chat-api", "search", "support-bot"]
    assert "/v1/chat" in found["endpoint"] and "gpt-4o" in found["model"]
    assert "acme" in found["tenant"] and "platform" in found["team"]


def panel(uid: str, title: str) -> PanelSpec:
    return next(p for d in DASHBOARDS if d.uid == uid for p in d.panels if p.title == title)


def test_p99_over_a_range_is_a_true_percentile(seeded: tuple[Any, int]) -> None:
    """The stat's p99 merges sketches: within 1 % of the exact p99 of the raw calls."""
    client, end_ms = seeded
    # whole minutes, so the 60 s tiles cover exactly the calls of the range
    end = datetime.fromtimestamp(end_ms // 60_000 * 60, UTC) - timedelta(minutes=1)
    ctx = QueryContext(end - timedelta(minutes=40), end - timedelta(seconds=1), 60)
    for selection in (EVERYTHING, {**EVERYTHING, "service": Selection(["chat-api"])}):
        _, [(p99,)] = run(
            client, render(panel("llmpulse-overview", "p99 latency").sql, ctx, selection)
        )
        service = "" if selection is EVERYTHING else "AND service = 'chat-api'"
        _, [(exact, n)] = run(
            client,
            "SELECT arraySort(groupArray(latency_ms))[toUInt64(floor(0.99 * (count() - 1))) + 1],"
            f" count() FROM traces WHERE timestamp >= {ctx.time_from.timestamp()}"
            f" AND timestamp < {end.timestamp()} {service}",
        )
        assert n > 1000
        assert abs(p99 - exact) / exact <= 0.01, (p99, exact)


def test_firing_and_resolved_alerts_show(seeded: tuple[Any, int]) -> None:
    client, end_ms = seeded
    ctx = context(end_ms, 60)
    _, firing = run(
        client, render(panel("llmpulse-alerts", "Alerts firing now").sql, ctx, EVERYTHING)
    )
    # the error burst on search is still going on at the end of the showcase
    error_rules = ("error-rate-high", "slo-error-burn")
    assert any(r[1] in error_rules and "service=search" in r[3] for r in firing), firing
    _, resolved = run(
        client, render(panel("llmpulse-alerts", "Resolved incidents").sql, ctx, EVERYTHING)
    )
    assert resolved and all(r[5] >= 0 and r[4] >= r[3] for r in resolved)


def test_every_panel_is_documented() -> None:
    doc = (REPO / "docs" / "dashboards.md").read_text()
    missing = [f"{d.uid}: {p.title}" for d, p in PANELS if f"| {p.title} |" not in doc]
    assert not missing, missing


def test_comparisons_panel_shows_the_latest_verdict_per_origin_and_metric(
    seeded: tuple[Any, int],
) -> None:
    """The seeded canary pair and CLI comparison (tests.seed.SEEDED_COMPARISONS)
    each show once per metric, with the verdict and statistics of that run."""
    client, end_ms = seeded
    sql = render(panel("llmpulse-drift", "Canary comparisons").sql, context(end_ms, 60), EVERYTHING)
    names, rows = run(client, sql)
    got = [dict(zip(names, r, strict=True)) for r in rows]
    assert {g["origin"] for g in got} == {"canary:prompt-v2", "cli"}
    keys = [(g["origin"], g["metric"]) for g in got]
    assert len(keys) == len(set(keys)) and keys == sorted(keys)
    assert {"latency", "ttft", "error_rate"} <= {m for o, m in keys if o == "cli"}
    assert {g["verdict"] for g in got} <= {"pass", "fail", "inconclusive"}
    cli_latency = next(g for g in got if (g["origin"], g["metric"]) == ("cli", "latency"))
    assert cli_latency["candidate"] == "model=gpt-4o-mini" and cli_latency["n_candidate"] > 0
    assert cli_latency["ci_low"] <= cli_latency["effect"] <= cli_latency["ci_high"]
