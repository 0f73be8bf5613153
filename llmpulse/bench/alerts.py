"""How long an alert takes to leave: from the batch whose windows breach (the
transition's wall time, taken before the windows are written) to the moment a
local PagerDuty receiver has the request."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from pathlib import Path

import numpy as np
from pydantic import SecretStr

from llmpulse.alerts.config import PagerDutySettings
from llmpulse.alerts.testing import PagerDutyReceiver
from llmpulse.processors.traces import RawMessage
from llmpulse.runtime import build_pipeline, prepare_store
from llmpulse.settings import Settings
from llmpulse.synth.scenarios import incident_events

_KEY = "B" * 32


def run_alert_bench(
    work: Path, *, batch_size: int = 500, say: Callable[[str], None] = print
) -> list[tuple[str, str]]:
    import orjson

    events = incident_events()
    messages = [RawMessage(orjson.dumps(e), f"bench:{i}") for i, e in enumerate(events)]
    with PagerDutyReceiver() as pd:
        base = Settings(data_dir=work / "data", clickhouse={"dsn": f"chdb://{work / 'store'}"})
        settings = base.model_copy(
            update={
                "pagerduty": PagerDutySettings(url=pd.url, routing_key=SecretStr(_KEY)),
                "alerts": base.alerts.model_copy(update={"control_enabled": False}),
            }
        )
        client = prepare_store(settings)
        try:
            pipeline = build_pipeline(settings, client, send_alerts=True)
            say(f"streaming {len(messages):,} events with two incidents...")
            for i in range(0, len(messages), batch_size):
                pipeline.handle(messages[i : i + batch_size])
            pipeline.flush()
            pipeline.close(timeout=30)
            rows = client.rows(
                "SELECT if(incident_key = '', dedup_key, incident_key), state, wall_time "
                "FROM alerts WHERE notified = 1"
            )
        finally:
            client.close()
        sent = {(k, s): t.replace(tzinfo=UTC).timestamp() for k, s, t in rows}
        delays = []
        for req in pd.requests:
            body = req.json or {}
            state = "firing" if body.get("event_action") == "trigger" else "resolved"
            made = sent.get((body.get("dedup_key"), state))
            if made is not None:
                delays.append((req.received_at - made) * 1000)
    d = np.array(delays)
    return [
        (
            "notifications received",
            f"{len(d)} ({len(pd.triggers)} triggers, {len(pd.resolves)} resolves)",
        ),
        ("batch start -> PagerDuty receiver, p50", f"{np.median(d):,.1f} ms" if len(d) else "-"),
        ("batch start -> PagerDuty receiver, max", f"{d.max():,.1f} ms" if len(d) else "-"),
    ]
