"""Ready-made streams with known incidents, shared by the benchmarks and tests."""

from __future__ import annotations

from typing import Any

from llmpulse.synth.traffic import Incident, TrafficConfig, TrafficGenerator

INCIDENT_START_MS = 1_767_225_600_000


def incident_events(
    *, minutes: int = 40, rate_per_s: float = 12.0, seed: int = 21
) -> list[dict[str, Any]]:
    """Three services on one endpoint and model: chat-api has a 6x latency
    regression from 600 s to 900 s, search a 35 % error burst from 1500 s to
    1740 s, summarizer stays healthy. Latencies are scaled to a fast endpoint
    (p99 a few hundred ms) so the shipped 800 ms p99 rule applies as in prod."""
    config = TrafficConfig(
        services=["chat-api", "search", "summarizer"],
        endpoints=["/v1/chat"],
        models=["gpt-4o"],
        tenants=["acme"],
        teams=["platform"],
        prompt_versions=["v1"],
        variants=["control"],
        include_text=False,
    )
    gen = TrafficGenerator(
        config,
        seed=seed,
        start_ms=INCIDENT_START_MS,
        rate_per_s=rate_per_s,
        incidents=[
            Incident("latency_regression", 600, 300, service="chat-api", magnitude=6.0),
            Incident("error_burst", 1500, 240, service="search", magnitude=0.35),
        ],
    )
    events = list(gen.events_between(INCIDENT_START_MS, INCIDENT_START_MS + minutes * 60_000))
    for e in events:
        e["latency_ms"] = e["latency_ms"] / 60
        e.pop("ttft_ms", None)
    return events


# The showcase: what the dashboards, the status page and the SQL cookbook are
# tested on. A small catalogue keeps drift series few, so their baselines fill
# within minutes.
SHOWCASE_CONFIG = TrafficConfig(
    services=["chat-api", "search", "support-bot"],
    endpoints=["/v1/chat", "/v1/answer", "/v1/reply"],
    models=["gpt-4o-mini", "claude-haiku-4-5", "gpt-4o"],
    tenants=["acme", "globex", "initech", "umbrella"],
    teams=["platform", "search-quality", "support"],
    prompt_versions=["v1", "v2"],
    variants=["control"],
)


def showcase_events(
    end_ms: int, *, minutes: int = 60, rate_per_s: float = 5.0, seed: int = 5
) -> list[dict[str, Any]]:
    """``minutes`` of traffic ending at ``end_ms`` with one of each incident: a 6x
    latency regression of chat-api (a third of the way in, for a sixth of the
    span, so its alerts fire and resolve), prompt drift on every series from
    the middle on, and an error burst on search over the last sixth, still
    firing at the end."""
    span_s = minutes * 60
    start_ms = end_ms - span_s * 1000
    gen = TrafficGenerator(
        SHOWCASE_CONFIG,
        seed=seed,
        start_ms=start_ms,
        rate_per_s=rate_per_s,
        incidents=[
            Incident(
                "latency_regression", span_s / 3, span_s / 6, service="chat-api", magnitude=6.0
            ),
            Incident("prompt_drift", span_s / 2, span_s / 2, magnitude=0.7),
            Incident("error_burst", span_s * 5 / 6, span_s / 6, service="search", magnitude=0.4),
        ],
    )
    return list(gen.events_between(start_ms, end_ms))
