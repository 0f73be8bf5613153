"""The alerts table in a real chDB store: the engine's transitions written, the latest
rows read back into a restored engine and listed by ``llmpulse alerts`` (the engine
itself is tested in tests/unit/alerts/test_engine.py)."""

from __future__ import annotations

from typing import Any

from llmpulse.alerts.engine import AlertEngine
from llmpulse.alerts.rules import (
    RuleSet,
)
from llmpulse.alerts.state import (
    ALERT_COLUMNS,
    ALERTS_DDL,
    LATEST_ALERTS_SQL,
    state_rows_from_alerts,
    transition_row,
)
from tests.unit.alerts.test_engine import (
    FIRING,
    OTHER,
    PENDING,
    WALL,
    notified,
    p99_rule,
    sig,
)


def test_alerts_table_round_trip(settings: Any) -> None:
    """The DDL is valid ClickHouse; rows insert; the latest-row query rebuilds state."""
    from llmpulse.runtime import open_store

    client = open_store(settings)
    try:
        client.command(ALERTS_DDL)
        rules = RuleSet([p99_rule(**{"for": 2})])
        engine = AlertEngine(rules)
        ts = engine.evaluate([sig(0, 900.0), sig(1, 900.0), sig(0, 900.0, labels=OTHER)], WALL)
        assert [t.to_state for t in ts] == [PENDING, PENDING, FIRING]
        client.insert("alerts", [transition_row(t) for t in ts], ALERT_COLUMNS)
        cols, rows = client.query(LATEST_ALERTS_SQL)
        assert cols == list(ALERT_COLUMNS) and len(rows) == 2
        restored = AlertEngine.from_snapshot(rules, state_rows_from_alerts(rows))
        assert sorted(s.state.value for s in restored.firing + restored.pending) == [
            "firing",
            "pending",
        ]
        # the firing one stays quiet, then resolves
        more = restored.evaluate([sig(2, 950.0), sig(3, 100.0)], WALL)
        assert notified(more) == ["resolved"]

        from typer.testing import CliRunner

        from llmpulse.cli.alerts_cmd import app
        from llmpulse.cli.context import CliState

        client.insert("alerts", [transition_row(t) for t in more], ALERT_COLUMNS)
        client.close()
        res = CliRunner().invoke(app, ["list", "--json"], obj=CliState(_settings=settings))
        assert res.exit_code == 0, res.output
        import json

        listing = json.loads(res.output)
        assert listing["firing"] == [] and len(listing["recent"]) == 4
        res = CliRunner().invoke(
            app, ["list", "--state", "resolved"], obj=CliState(_settings=settings)
        )
        assert res.exit_code == 0 and "alerts resolved now (1)" in res.output
    finally:
        client.close()


# --- properties ------------------------------------------------------------------------------
