"""`llmpulse replay --send-alerts` against a local receiver of the PagerDuty Events API v2."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from pydantic import SecretStr

from llmpulse.alerts.config import PagerDutySettings
from llmpulse.alerts.testing import PagerDutyReceiver
from llmpulse.ingest.files import read_jsonl
from llmpulse.runtime import build_pipeline, prepare_store
from llmpulse.settings import Settings
from llmpulse.synth.scenarios import INCIDENT_START_MS as START_MS
from llmpulse.synth.scenarios import incident_events
from llmpulse.synth.traffic import write_jsonl
from tests.helpers import llmpulse

ROUTING_KEY = "R" * 32


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return llmpulse(args, env)


def incident_stream(path: Path) -> None:
    write_jsonl(path, incident_events())


def test_one_trigger_and_one_resolve_per_incident(tmp_path: Path) -> None:
    path = tmp_path / "incidents.jsonl"
    incident_stream(path)
    with PagerDutyReceiver() as pd:
        env = {
            "LLMPULSE_DATA_DIR": str(tmp_path / "data"),
            "LLMPULSE_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'store'}",
            "LLMPULSE_PAGERDUTY_URL": pd.url,
            "LLMPULSE_PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
            "LLMPULSE_ALERTS_CONTROL_ENABLED": "false",
        }
        proc = cli(["replay", str(path), "--send-alerts", "--json"], env)
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
        assert summary["alert_transitions"] > 0
        assert not pd.rejected, pd.rejected
        triggers, resolves = pd.triggers, pd.resolves

    service_of = {e["dedup_key"]: e["payload"]["group"] for e in triggers}
    assert sorted(service_of.values()) == ["chat-api", "search"], triggers  # summarizer is quiet
    assert len(triggers) == 2 and len(resolves) == 2, (triggers, resolves)
    assert sorted(e["dedup_key"] for e in resolves) == sorted(service_of)
    for t in triggers:
        assert t["routing_key"] == ROUTING_KEY and t["payload"]["severity"] in ("critical", "error")
        assert any("Runbook" in link.get("text", "") for link in t.get("links", []))

    history = json.loads(
        cli(
            [
                "sql",
                "SELECT rule, state, labels['service'] AS service FROM alerts ORDER BY wall_time",
                "-f",
                "json",
            ],
            env,
        ).stdout
    )
    states = {(h["service"], h["state"]) for h in history}
    assert ("chat-api", "firing") in states and ("chat-api", "resolved") in states
    assert ("search", "firing") in states and ("search", "resolved") in states

    # A second replay of the same file changes nothing and pages nobody.
    with PagerDutyReceiver() as pd2:
        env2 = {**env, "LLMPULSE_PAGERDUTY_URL": pd2.url}
        again = json.loads(cli(["replay", str(path), "--send-alerts", "--json"], env2).stdout)
        assert again["accepted"] == 0 and again["alert_transitions"] == 0
        assert pd2.events == []


def test_restart_while_firing_neither_pages_again_nor_forgets_to_resolve(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "incidents.jsonl"
    incident_stream(path)
    messages = list(read_jsonl(path))
    # A point in the middle of the latency regression (600 s to 900 s).
    cut = next(
        i for i, m in enumerate(messages) if json.loads(m.value)["timestamp"] >= START_MS + 750_000
    )
    with PagerDutyReceiver() as pd:
        s = settings.model_copy(
            update={
                "pagerduty": PagerDutySettings(url=pd.url, routing_key=SecretStr(ROUTING_KEY)),
                "alerts": settings.alerts.model_copy(update={"control_enabled": False}),
            }
        )
        client = prepare_store(s)
        first = build_pipeline(s, client, wall=lambda: 0.0, send_alerts=True)
        for i in range(0, cut, 500):
            first.handle(messages[i : min(i + 500, cut)])
        first.close(timeout=30)
        assert len(pd.triggers) == 1 and not pd.resolves  # firing when the worker "dies"
        # A new pipeline on the same store: windows and alert state come back from it.
        second = build_pipeline(s, client, wall=lambda: 0.0, send_alerts=True)
        for i in range(cut, len(messages), 500):
            second.handle(messages[i : i + 500])
        second.flush()
        second.close(timeout=30)
        client.close()
        assert len(pd.triggers) == 2 and len(pd.resolves) == 2, (pd.triggers, pd.resolves)
        assert len({t["dedup_key"] for t in pd.triggers}) == 2
