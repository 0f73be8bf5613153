"""Alert sinks against local receivers: PagerDuty Events API v2 payloads, retries,
the non-blocking dispatcher, control events, Slack and webhook bodies."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from llmpulse.alerts.config import AlertSinkSettings
from llmpulse.alerts.engine import AlertEngine
from llmpulse.alerts.rules import BaselineRule, RuleSet, ThresholdRule, load_rules
from llmpulse.alerts.sinks import (
    ControlSink,
    Dispatcher,
    MemorySink,
    PagerDutySink,
    SinkError,
    SlackSink,
    WebhookSink,
    build_sinks,
    pagerduty_event,
)
from llmpulse.alerts.state import AlertState, Transition
from llmpulse.alerts.synthetic import synthetic_transition
from llmpulse.alerts.testing import PagerDutyReceiver, RecordingReceiver, validate_event
from llmpulse.errors import ConfigError
from llmpulse.processors.windows import EventBatch, GroupingSet, WindowAggregator, WindowSpec

KEY = "0123456789abcdef0123456789abcdef"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
WALL = datetime(2026, 6, 1, tzinfo=UTC)


def no_sleep(_: float) -> None:
    pass


def transitions_of(rule_name: str = "latency-p99-high") -> tuple[Transition, Transition]:
    rule = load_rules()[rule_name]
    fired = synthetic_transition(
        rule,
        WALL,
        labels={"service": "chat", "model": "gpt-4o"},
        dashboard_base_url="https://grafana.example",
    )
    resolved = synthetic_transition(
        rule, WALL, labels={"service": "chat", "model": "gpt-4o"}, to_state=AlertState.RESOLVED
    )
    return fired, resolved


def metric(registry: CollectorRegistry, what: str, sink: str) -> float:
    v = registry.get_sample_value(f"llmpulse_alert_notifications_{what}_total", {"sink": sink})
    return v or 0.0


# --- PagerDuty payloads --------------------------------------------------------------------


def test_trigger_and_resolve_payloads_are_valid() -> None:
    fired, resolved = transitions_of()
    trigger = pagerduty_event(fired, KEY)
    assert trigger is not None and validate_event(trigger) == []
    p = trigger["payload"]
    # the shipped p99 rule shares the "latency" incident with the latency SLO
    assert trigger["event_action"] == "trigger" and trigger["dedup_key"] == fired.page_key
    assert fired.page_key.startswith("llmpulse:latency:")
    assert trigger["payload"]["custom_details"]["alert_key"] == fired.dedup_key
    assert (p["source"], p["severity"], p["component"], p["group"], p["class"]) == (
        "chat",
        "error",
        "gpt-4o",
        "chat",
        "latency_p99_ms",
    )
    assert datetime.fromisoformat(p["timestamp"]) == fired.event_time
    details = p["custom_details"]
    assert details["value"] == 1200.0 and details["threshold"] == 800.0
    assert details["window_seconds"] == 60 and details["labels"]["model"] == "gpt-4o"
    assert details["rule"] == "latency-p99-high"
    assert trigger["links"] == [
        {"href": fired.runbook_url, "text": "Runbook"},
        {"href": "https://grafana.example", "text": "Dashboard"},
    ]
    assert trigger["client"] == "llmpulse"
    resolve = pagerduty_event(resolved, KEY)
    assert resolve == {"routing_key": KEY, "event_action": "resolve", "dedup_key": fired.page_key}
    assert validate_event(resolve) == []


def test_payload_edges() -> None:
    rule = ThresholdRule(name="x", signal="error_rate", threshold=0.1, summary="{labels[long]}")
    t = synthetic_transition(rule, WALL, labels={"long": "é" * 3000})
    body = pagerduty_event(t, KEY)
    assert body is not None and validate_event(body) == []
    assert len(body["payload"]["summary"]) == 1024
    assert body["payload"]["source"] == "llmpulse"  # no service label
    assert "links" not in body and "component" not in body["payload"]
    pending = Transition(
        "x", {}, AlertState.INACTIVE, AlertState.PENDING, 1.0, 0.5, 60, T0, T0, "k", "warning", "s"
    )
    assert pagerduty_event(pending, KEY) is None
    nan = Transition(
        "x",
        {},
        AlertState.PENDING,
        AlertState.FIRING,
        float("nan"),
        0.5,
        60,
        T0,
        T0,
        "k",
        "info",
        "s",
    )
    assert json.dumps(pagerduty_event(nan, KEY), allow_nan=False)


def test_receiver_rejects_bad_events() -> None:
    bad = {
        "routing_key": "x",
        "event_action": "trigger",
        "dedup_key": "k" * 256,
        "payload": {"summary": "", "severity": "fatal", "timestamp": "yesterday"},
        "links": [{"href": "not a url"}],
        "extra": 1,
    }
    errors = "\n".join(validate_event(bad))
    for expected in (
        "routing_key",
        "dedup_key",
        "payload.summary",
        "payload.source",
        "payload.severity",
        "payload.timestamp",
        "links[0].href",
        "extra: unknown",
    ):
        assert expected in errors
    assert "dedup_key: is required to resolve" in validate_event(
        {"routing_key": KEY, "event_action": "resolve"}
    )


def test_sink_delivers_to_receiver() -> None:
    fired, resolved = transitions_of()
    with PagerDutyReceiver() as pd:
        sink = PagerDutySink(KEY, pd.url, timeout=5)
        sink.send(fired)
        sink.send(resolved)
        assert [e["event_action"] for e in pd.events] == ["trigger", "resolve"]
        assert pd.incidents == {fired.page_key: "resolved"}
        assert pd.requests[0].headers["Content-Type"] == "application/json"


def test_routing_key_is_checked() -> None:
    with pytest.raises(ConfigError, match="32 characters"):
        PagerDutySink("short")


# --- dispatcher: retries, errors, never blocking ---------------------------------------------


def test_429_then_202_delivers_exactly_once() -> None:
    fired, _ = transitions_of()
    registry = CollectorRegistry()
    delays: list[float] = []
    with PagerDutyReceiver() as pd:
        pd.fail_next(1, 429, retry_after=2)
        d = Dispatcher(
            [PagerDutySink(KEY, pd.url, timeout=5)],
            registry=registry,
            sleep=delays.append,
            rng=lambda: 0.0,
        )
        assert d.submit(fired)
        assert d.flush(timeout=10)
        d.close()
        assert [r.status for r in pd.requests] == [429, 202]
        assert len(pd.triggers) == 1
    assert d.stats["pagerduty"] == {"sent": 1, "failed": 0, "dropped": 0, "retried": 1}
    assert metric(registry, "sent", "pagerduty") == 1
    assert metric(registry, "retried", "pagerduty") == 1
    assert delays == [2.0]  # Retry-After beats the 0.5 s first back-off


def test_5xx_backs_off_exponentially_then_gives_up(caplog: pytest.LogCaptureFixture) -> None:
    fired, _ = transitions_of()
    delays: list[float] = []
    with PagerDutyReceiver() as pd:
        pd.fail_next(10, 503)
        d = Dispatcher(
            [PagerDutySink(KEY, pd.url, timeout=5)],
            max_attempts=4,
            backoff_s=1.0,
            jitter=0.5,
            sleep=delays.append,
            rng=lambda: 1.0,
        )
        d.submit(fired)
        assert d.flush(timeout=10)
        assert len(pd.requests) == 4
    assert delays == [1.5, 3.0, 6.0]
    assert d.stats["pagerduty"]["failed"] == 1
    assert "not delivered to pagerduty after 4 attempt(s)" in caplog.text


def test_400_is_not_retried() -> None:
    fired, _ = transitions_of()
    registry = CollectorRegistry()
    with PagerDutyReceiver() as pd:
        pd.fail_next(1, 400)
        d = Dispatcher([PagerDutySink(KEY, pd.url, timeout=5)], registry=registry, sleep=no_sleep)
        d.submit(fired)
        assert d.flush(timeout=10)
        assert len(pd.requests) == 1 and pd.events == []
    assert metric(registry, "failed", "pagerduty") == 1
    assert metric(registry, "retried", "pagerduty") == 0


def test_invalid_payload_gets_400_from_the_receiver() -> None:
    fired, _ = transitions_of()
    bad = Transition(**{**fired.__dict__, "severity": "page"})
    with PagerDutyReceiver() as pd:
        with pytest.raises(SinkError) as info:
            PagerDutySink(KEY, pd.url, timeout=5).send(bad)
        assert info.value.status == 400 and not info.value.retryable
        assert "payload.severity" in pd.rejected[0].errors[0]


def test_connection_refused_is_retryable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fired, _ = transitions_of()
    with pytest.raises(SinkError) as info:
        WebhookSink(f"http://127.0.0.1:{port}/hook", timeout=2).send(fired)
    assert info.value.retryable and info.value.status is None


def test_dispatcher_never_blocks_on_a_hanging_receiver() -> None:
    fired, _ = transitions_of()
    registry = CollectorRegistry()
    with PagerDutyReceiver(delay=10.0) as pd:
        d = Dispatcher(
            [PagerDutySink(KEY, pd.url, timeout=0.3)],
            registry=registry,
            queue_size=2,
            max_attempts=3,
        )
        start = time.monotonic()
        results = [d.submit(fired) for _ in range(50)]
        submitted = time.monotonic() - start
        assert submitted < 0.25, submitted
        assert results.count(True) <= 3  # one in flight, two queued
        assert metric(registry, "dropped", "pagerduty") >= 47
        start = time.monotonic()
        assert d.close(timeout=0.3) is False
        assert time.monotonic() - start < 1.0
        assert d.submit(fired) is False  # closed


def test_per_sink_order_and_independence() -> None:
    fired, resolved = transitions_of()
    slow = MemorySink("slow")
    slow.fail_with(*[SinkError("slow", "HTTP 503", retryable=True)] * 3)
    fast = MemorySink("fast")
    with PagerDutyReceiver() as pd:
        pd.fail_next(2, 500)
        d = Dispatcher([PagerDutySink(KEY, pd.url, timeout=5), slow, fast], sleep=no_sleep)
        d.submit(fired)
        d.submit(resolved)
        assert d.flush(timeout=10)
        # a resolve never overtakes its trigger, even when the trigger needed retries
        assert [e["event_action"] for e in pd.events] == ["trigger", "resolve"]
    assert [t.to_state for t in slow.transitions] == [AlertState.FIRING, AlertState.RESOLVED]
    assert slow.attempts == 5 and len(fast.transitions) == 2
    d.close()


def test_a_broken_sink_does_not_stop_its_queue(caplog: pytest.LogCaptureFixture) -> None:
    fired, resolved = transitions_of()
    sink = MemorySink()
    sink.fail_with(RuntimeError("bug"))
    d = Dispatcher([sink], sleep=no_sleep)
    d.submit(fired)
    d.submit(resolved)
    assert d.flush(timeout=5)
    assert [t.to_state for t in sink.transitions] == [AlertState.RESOLVED]
    assert d.stats["memory"]["failed"] == 1 and "raised unexpectedly" in caplog.text
    d.close()


def test_only_notified_transitions_are_sent_and_dry_run() -> None:
    fired, _ = transitions_of()
    pending = Transition(
        **{**fired.__dict__, "to_state": AlertState.PENDING, "from_state": AlertState.INACTIVE}
    )
    sink = MemorySink()
    d = Dispatcher([sink], dry_run=True)
    assert d.submit(pending) is False
    assert d.submit(fired) is True
    assert d.flush(1) and d.close()
    assert sink.transitions == [] and d.recorded == [("memory", fired)]


# --- the scenario: windows -> engine -> PagerDuty ----------------------------------------


def window_results(slow_minutes: range, minutes: int = 70) -> list[Any]:
    agg = WindowAggregator(
        [WindowSpec(60, 10)], [GroupingSet(("service", "endpoint", "model"))], allowed_lateness_s=0
    )
    rng = np.random.default_rng(11)
    out = []
    for minute in range(minutes):
        n = 120
        lat = rng.lognormal(5.3, 0.3, n)  # ~200 ms
        if minute in slow_minutes:
            lat = lat * 6  # ~1.2 s p50: a real regression
        ts = T0.timestamp() * 1000 + minute * 60_000 + np.sort(rng.uniform(0, 60_000, n))
        healthy = [
            {
                "ts_ms": int(t),
                "latency_ms": float(v),
                "service": "chat",
                "endpoint": "/v1/chat",
                "model": "gpt-4o",
            }
            for t, v in zip(ts, lat, strict=True)
        ]
        other = [
            {
                "ts_ms": int(t),
                "latency_ms": 150.0,
                "service": "search",
                "endpoint": "/v1/q",
                "model": "small",
            }
            for t in ts
        ]
        out += agg.add(EventBatch.from_records(healthy + other))
    return out


def test_latency_regression_pages_once_and_resolves_once() -> None:
    results = window_results(range(15, 25))
    with PagerDutyReceiver() as pd:
        d = Dispatcher([PagerDutySink(KEY, pd.url, timeout=5)])
        engine = AlertEngine(load_rules())
        for r in results:  # as the worker does: window by window
            for t in engine.evaluate_windows([r], WALL):
                d.submit(t)
        assert d.flush(timeout=10)
        d.close()
        assert pd.rejected == []
        assert [(e["event_action"]) for e in pd.events] == ["trigger", "resolve"]
        trigger = pd.triggers[0]
        assert trigger["payload"]["source"] == "chat"
        assert trigger["payload"]["class"] == "latency_p99_ms"
        assert trigger["dedup_key"] == pd.resolves[0]["dedup_key"]
        assert all(e["dedup_key"] != "" for e in pd.events)


def test_healthy_stream_pages_nobody() -> None:
    results = window_results(range(0))
    with PagerDutyReceiver() as pd:
        d = Dispatcher([PagerDutySink(KEY, pd.url, timeout=5)])
        engine = AlertEngine(load_rules())
        for t in engine.evaluate_windows(results, WALL):
            d.submit(t)
        assert d.flush(timeout=5)
        d.close()
        assert pd.requests == []


def test_restart_while_firing_sends_no_second_trigger() -> None:
    results = window_results(range(15, 30))
    end_first = T0 + timedelta(minutes=28)
    rules = load_rules()
    with PagerDutyReceiver() as pd:
        d = Dispatcher([PagerDutySink(KEY, pd.url, timeout=5)])
        first = AlertEngine(rules)
        log: list[Transition] = []
        for r in [r for r in results if r.window_end <= end_first]:
            for t in first.evaluate_windows([r], WALL):
                log.append(t)
                d.submit(t)
        # p99 and the latency SLO both fire, in one incident
        assert sorted(s.rule for s in first.firing) == ["latency-p99-high", "slo-latency-burn"]
        assert len({s.incident_key for s in first.firing}) == 1
        # restart: rebuild from the alerts table rows, then re-emit a few windows
        from llmpulse.alerts.state import state_rows_from_alerts, transition_row

        second = AlertEngine.from_snapshot(
            rules, state_rows_from_alerts(transition_row(t) for t in log)
        )
        for r in [r for r in results if r.window_end > end_first - timedelta(minutes=1)]:
            for t in second.evaluate_windows([r], WALL):
                d.submit(t)
        assert d.flush(timeout=10)
        d.close()
        assert [e["event_action"] for e in pd.events] == ["trigger", "resolve"]


# --- control, Slack, webhook ---------------------------------------------------------------------


def test_control_events() -> None:
    published: list[tuple[str, bytes, bytes]] = []
    sink = ControlSink(lambda topic, key, value: published.append((topic, key, value)))
    spike = BaselineRule(
        name="cost-spike-per-minute", kind="baseline", signal="cost_per_minute", multiple=3
    )
    fired = synthetic_transition(spike, WALL, labels={"service": "chat", "tenant": "acme"})
    sink.send(fired)
    [(topic, key, value)] = published
    event = json.loads(value)
    assert topic == "llm.control" and key == fired.dedup_key.encode()
    assert (event["action"], event["state"], event["rule"]) == (
        "throttle",
        "firing",
        "cost-spike-per-minute",
    )
    assert event["labels"]["tenant"] == "acme" and event["dedup_key"] == fired.dedup_key
    assert datetime.fromisoformat(event["event_time"]) == fired.event_time
    assert isinstance(event["value"], float)

    # mapped from the category label of the shipped rules
    drift, drift_resolved = transitions_of("drift-detected")
    quality, _ = transitions_of("hallucination-rate-high")
    latency, _ = transitions_of("latency-p99-high")
    published.clear()
    for t in (drift, drift_resolved, quality, latency):
        sink.send(t)
    assert [json.loads(v)["action"] for _, _, v in published] == ["retrain", "rollback"]

    # the rule's own actions win; resolved only on request
    own = ThresholdRule(name="x", signal="error_rate", threshold=0.1, actions=("failover",))
    sink2 = ControlSink(lambda *m: published.append(m), "ctl", emit_resolved=True)
    published.clear()
    sink2.send(synthetic_transition(own, WALL))
    sink2.send(synthetic_transition(own, WALL, to_state=AlertState.RESOLVED))
    assert [(t, json.loads(v)["action"], json.loads(v)["state"]) for t, _, v in published] == [
        ("ctl", "failover", "firing"),
        ("ctl", "failover", "resolved"),
    ]


def test_control_publish_failure_is_retryable() -> None:
    def broken(topic: str, key: bytes, value: bytes) -> None:
        raise OSError("broker down")

    fired, _ = transitions_of("drift-detected")
    with pytest.raises(SinkError) as info:
        ControlSink(broken).send(fired)
    assert info.value.retryable


def test_slack_and_webhook_bodies() -> None:
    fired, resolved = transitions_of()
    with RecordingReceiver(path="/slack") as slack, RecordingReceiver(path="/hook") as hook:
        d = Dispatcher(
            [
                SlackSink(slack.url, timeout=5),
                WebhookSink(hook.url, timeout=5, headers={"X-Token": "t"}),
            ]
        )
        d.submit(fired)
        d.submit(resolved)
        assert d.flush(timeout=10)
        d.close()
        s1, s2 = slack.accepted
        assert s1["text"].startswith(":large_orange_circle: FIRING: [test] p99 latency 1200 ms")
        assert s1["blocks"][0] == {
            "type": "header",
            "text": {"type": "plain_text", "text": "[FIRING] latency-p99-high (error)"},
        }
        assert {b["type"] for b in s1["blocks"]} == {"header", "section", "context"}
        assert "<https://github.com/llmpulse" in s1["blocks"][-1]["elements"][0]["text"]
        assert s2["text"].startswith(":white_check_mark: RESOLVED")
        h1, h2 = hook.accepted
        assert (h1["version"], h1["state"], h1["rule"], h1["value"]) == (
            1,
            "firing",
            "latency-p99-high",
            1200.0,
        )
        assert h1["labels"]["model"] == "gpt-4o" and h2["state"] == "resolved"
        assert h1["dedup_key"] == h2["dedup_key"]
        assert hook.requests[0].headers["X-Token"] == "t"
    assert "hooks" not in repr(SlackSink("https://hooks.slack.com/services/SECRET"))


# --- settings -----------------------------------------------------------------------------------


def test_build_sinks_from_settings() -> None:
    conf = AlertSinkSettings(
        pagerduty_routing_key="a" * 32,
        webhook_url="http://127.0.0.1:1/hook",
        slack_webhook_url="https://hooks.slack.example/x",
        control_enabled=True,
    )
    sinks = build_sinks(conf, publish=lambda *m: None)
    assert [s.name for s in sinks] == ["pagerduty", "webhook", "slack", "control"]
    pd = sinks[0]
    assert isinstance(pd, PagerDutySink) and pd.url == "https://events.pagerduty.com/v2/enqueue"
    # the pagerduty section (LLMPULSE_PAGERDUTY_URL / _ROUTING_KEY) wins
    [pd2] = build_sinks(
        AlertSinkSettings(control_enabled=False), "http://pd.local/v2/enqueue", "b" * 32
    )
    assert isinstance(pd2, PagerDutySink) and pd2.url == "http://pd.local/v2/enqueue"
    assert pd2.event(transitions_of()[0])["routing_key"] == "b" * 32  # type: ignore[index]
    assert build_sinks(AlertSinkSettings()) == []  # control needs a producer
    with pytest.raises(ConfigError):
        build_sinks(AlertSinkSettings(), None, "short")


def test_rules_and_engine_do_not_import_adapters() -> None:
    import subprocess
    import sys

    code = (
        "import sys, llmpulse.alerts.engine, llmpulse.alerts.rules, llmpulse.alerts.signals, "
        "llmpulse.alerts.state\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('aiokafka', 'faust', 'clickhouse_connect', 'chdb', 'prometheus_client', 'http')]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_rule_set_from_engine_is_reused() -> None:
    rules = RuleSet([ThresholdRule(name="x", signal="error_rate", threshold=0.1)])
    assert AlertEngine(rules).rules is rules
