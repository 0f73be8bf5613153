"""Drift detection through the real pipeline and store: one series drifts at a known time."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from llmpulse.processors.traces import RawMessage
from llmpulse.replay import replay_messages
from llmpulse.runtime import build_pipeline, prepare_store
from llmpulse.settings import Settings
from llmpulse.synth.traffic import Incident, TrafficConfig, TrafficGenerator

START_MS = 1_767_225_600_000
CHANGE_S = 600


def drifting_stream() -> list[dict]:
    config = TrafficConfig(
        services=["chat-api"],
        endpoints=["/v1/chat", "/v1/search"],
        models=["gpt-4o"],
        tenants=["acme"],
        teams=["platform"],
        prompt_versions=["v1"],
        embeddings=True,
        include_text=False,
    )
    gen = TrafficGenerator(
        config,
        seed=5,
        start_ms=START_MS,
        rate_per_s=10.0,
        incidents=[Incident("prompt_drift", CHANGE_S, 600, endpoint="/v1/chat", magnitude=0.3)],
    )
    return list(gen.events_between(START_MS, START_MS + 1200_000))


def test_only_the_drifting_series_gets_a_drift_event_soon_after_the_change(
    settings: Settings,
) -> None:
    events = drifting_stream()
    msgs = [RawMessage(orjson.dumps(e), f"replay:drift:{i}") for i, e in enumerate(events)]
    client = prepare_store(settings)
    pipeline = build_pipeline(
        settings, client, clock=lambda: datetime(2026, 3, 1, tzinfo=UTC), send_alerts=False
    )
    replay_messages(pipeline, msgs, batch_size=500)
    rows = client.rows(
        "SELECT endpoint, signal, toUnixTimestamp64Milli(event_time) FROM drift_events "
        "WHERE signal = 'prompt_embedding' ORDER BY event_time"
    )
    assert rows, "no prompt drift detected"
    assert {r[0] for r in rows} == {"/v1/chat"}, rows  # the stationary series stays quiet
    first_ms = rows[0][2]
    change_ms = START_MS + CHANGE_S * 1000
    assert first_ms >= change_ms, rows[0]
    delay = sum(
        1 for e in events if e["endpoint"] == "/v1/chat" and change_ms <= e["timestamp"] <= first_ms
    )
    print(f"prompt drift detected after {delay} events of the drifting series")
    assert delay <= 150, delay
    stationary = client.rows("SELECT count() FROM drift_events WHERE endpoint = '/v1/search'")
    assert stationary == [(0,)]
    # Baselines were stored, so a restart keeps detecting against them.
    assert client.rows("SELECT count() FROM drift_baselines")[0][0] >= 2
    alerts = client.rows("SELECT count() FROM alerts WHERE rule = 'drift-detected'")
    assert alerts[0][0] >= 1
    client.close()


def test_a_drift_incident_pages_once_and_resolves_when_traffic_returns(
    settings: Settings,
) -> None:
    from pydantic import SecretStr

    from llmpulse.alerts.config import PagerDutySettings
    from llmpulse.alerts.testing import PagerDutyReceiver

    config = TrafficConfig(
        services=["chat-api"], endpoints=["/v1/chat", "/v1/search"], models=["gpt-4o"],
        tenants=["acme"], teams=["platform"], prompt_versions=["v1"], embeddings=True,
        include_text=False, scores=False,
    )  # fmt: skip
    gen = TrafficGenerator(
        config, seed=9, start_ms=START_MS, rate_per_s=10.0,
        incidents=[Incident("prompt_drift", CHANGE_S, 300, endpoint="/v1/chat", magnitude=0.3)],
    )  # fmt: skip
    events = list(gen.events_between(START_MS, START_MS + 1800_000))
    for e in events:  # a fast endpoint, so only the drift incident pages
        e["latency_ms"] /= 60
    msgs = [RawMessage(orjson.dumps(e), f"replay:d2:{i}") for i, e in enumerate(events)]
    with PagerDutyReceiver() as pd:
        s = settings.model_copy(
            update={
                "pagerduty": PagerDutySettings(url=pd.url, routing_key=SecretStr("D" * 32)),
                "alerts": settings.alerts.model_copy(update={"control_enabled": False}),
            }
        )
        client = prepare_store(s)
        pipeline = build_pipeline(s, client, send_alerts=True)
        replay_messages(pipeline, msgs, batch_size=500)
        pipeline.close(timeout=30)
        client.close()
        drift_pages = [e for e in pd.triggers if "drift" in e["dedup_key"] or "drift" in str(e)]
        assert len(pd.triggers) == 1 and drift_pages, [
            (t["dedup_key"], t["payload"]["summary"]) for t in pd.triggers
        ]
        assert "/v1/chat" in str(pd.triggers[0]) and "/v1/search" not in str(pd.triggers[0])
        assert len(pd.resolves) == 1 and pd.resolves[0]["dedup_key"] == pd.triggers[0]["dedup_key"]
