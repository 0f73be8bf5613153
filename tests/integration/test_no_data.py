"""``no_data`` rules: the state machine of a series going quiet, and a replay end to end."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from llmpulse.alerts.engine import AlertEngine
from llmpulse.alerts.nodata import NoDataMonitor
from llmpulse.alerts.rules import NoDataRule, RuleError, RuleSet, load_rules, rules_from_data
from llmpulse.alerts.signals import Signal
from llmpulse.alerts.state import AlertState, Transition, state_rows_from_alerts, transition_row
from llmpulse.stages.alerts import AlertStage
from llmpulse.stages.base import Context
from tests.helpers import event, llmpulse, produce, worker_env, worker_process

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WALL = datetime(2030, 1, 1, tzinfo=UTC)  # wall time is only stamped, never decides
SERIES = {"grouping": "service", "service": "chat"}


def rule(**kw: Any) -> NoDataRule:
    base: dict[str, Any] = {
        "kind": "no_data",
        "name": "quiet",
        "silent_for": 300,
        "min_history": 600,
        "min_requests_per_minute": 1.0,
        "grouping": "service",
    }
    return NoDataRule.model_validate({**base, **kw})


def tile(minute: float, n: int = 60, labels: dict[str, str] = SERIES) -> Signal:
    """The ``requests`` signal of the 60 s window ending ``minute`` minutes after T0."""
    return Signal("requests", labels, 60, T0 + timedelta(minutes=minute), float(n), n)


def ms(minute: float) -> int:
    return int((T0 + timedelta(minutes=minute)).timestamp() * 1000)


def states(ts: Iterable[Transition]) -> list[tuple[str, str, float]]:
    return [(t.to_state.value, t.reason, (t.event_time - T0).total_seconds() / 60) for t in ts]


def test_quiet_series_fires_once_at_the_limit_and_resolves_when_traffic_returns() -> None:
    mon = NoDataMonitor([rule()])
    assert mon.evaluate([tile(m) for m in range(1, 16)], ms(15), WALL) == []
    # Under five minutes since the start of the last window with traffic (minute 14).
    assert mon.evaluate([], ms(18), WALL) == []
    fired = mon.evaluate([], ms(21), WALL)
    assert states(fired) == [("firing", "no_data", 19.0)]  # last traffic + 300 s
    t = fired[0]
    assert t.notify and t.from_state is AlertState.INACTIVE and t.kind == "no_data"
    assert t.labels["service"] == "chat" and t.summary.startswith("[no data]")
    assert t.extra["prior_rate_per_minute"] == pytest.approx(900 * 60 / 840)
    # Still quiet: no second page, however long it lasts.
    assert mon.evaluate([], ms(60), WALL) == []
    assert [st.dedup_key for st in mon.firing] == [t.dedup_key]
    back = mon.evaluate([tile(61)], ms(61), WALL)
    assert states(back) == [("resolved", "traffic_returned", 61.0)]
    assert back[0].notify and back[0].value == pytest.approx(47 * 60)  # quiet 14 -> 61
    assert mon.firing == []
    # Quiet again later: a new incident, same dedup key.
    again = mon.evaluate([tile(m) for m in range(62, 75)], ms(80), WALL)
    assert states(again) == [("firing", "no_data", 78.0)]
    assert again[0].dedup_key == t.dedup_key


def test_total_outage_fires_from_the_frontier_alone() -> None:
    """No window closes anywhere, yet the frontier (moved by the worker's idle clock)
    makes the silence visible."""
    mon = NoDataMonitor([rule(grouping="service")])
    other = {"grouping": "service", "service": "search"}
    mon.evaluate(
        [tile(m) for m in range(1, 12)] + [tile(m, labels=other) for m in range(1, 12)], None, WALL
    )
    fired = mon.evaluate([], ms(30), WALL)
    assert sorted(t.labels["service"] for t in fired) == ["chat", "search"]


def test_other_series_windows_advance_the_clock() -> None:
    """With no frontier at all, closed windows of other series are the clock."""
    mon = NoDataMonitor([rule()])
    other = {"grouping": "service", "service": "search"}
    mon.evaluate(
        [tile(m) for m in range(1, 12)] + [tile(m, labels=other) for m in range(1, 12)], None, WALL
    )
    out = mon.evaluate([tile(m, labels=other) for m in range(12, 18)], None, WALL)
    assert [(t.labels["service"], t.to_state.value) for t in out] == [("chat", "firing")]


@pytest.mark.parametrize(
    ("kw", "minutes", "per_window"),
    [
        ({}, 5, 60),  # seen for 5 minutes only: min_history is 10
        ({"min_requests_per_minute": 2.0}, 15, 1),  # 1/min is under the required rate
        ({}, 15, 0),  # windows without requests are not traffic
    ],
)
def test_irregular_series_never_fire(kw: dict[str, Any], minutes: int, per_window: int) -> None:
    mon = NoDataMonitor([rule(**kw)])
    mon.evaluate([tile(m, per_window) for m in range(1, minutes + 1)], None, WALL)
    assert mon.evaluate([], ms(minutes + 120), WALL) == []


def test_hopping_windows_do_not_inflate_the_rate() -> None:
    """Six overlapping 60 s windows per minute see each request six times; the rate
    counts the aligned ones only: 1 request/min stays 1/min, under a 2/min floor."""
    mon = NoDataMonitor([rule(min_requests_per_minute=2.0)])
    hops = [tile(m + k / 6, 1) for m in range(1, 16) for k in range(6)]
    mon.evaluate(hops, None, WALL)
    assert mon.evaluate([], ms(40), WALL) == []
    mon2 = NoDataMonitor([rule(min_requests_per_minute=0.9)])
    mon2.evaluate(hops, None, WALL)
    assert len(mon2.evaluate([], ms(40), WALL)) == 1


def test_same_transitions_whatever_the_batching() -> None:
    """Replay determinism: one window per call or all at once, same event times."""
    windows = [tile(m) for m in range(1, 16)] + [tile(m) for m in range(40, 45)]
    one = NoDataMonitor([rule()])
    got_one = []
    for w in windows:
        got_one += one.evaluate([w], ms((w.event_time - T0).total_seconds() / 60 + 0.5), WALL)
    got_one += one.evaluate([], ms(60), WALL)
    bulk = NoDataMonitor([rule()])
    got_bulk = bulk.evaluate(windows, ms(60), WALL)
    assert (
        states(got_one)
        == states(got_bulk)
        == [
            ("firing", "no_data", 19.0),
            ("resolved", "traffic_returned", 40.0),
            ("firing", "no_data", 48.0),
        ]
    )


def test_stale_after_gives_up() -> None:
    mon = NoDataMonitor([rule(stale_after=3600)])
    mon.evaluate([tile(m) for m in range(1, 16)], None, WALL)
    assert states(mon.evaluate([], ms(30), WALL)) == [("firing", "no_data", 19.0)]
    assert states(mon.evaluate([], ms(80), WALL)) == [("resolved", "stale", 74.0)]
    assert mon.evaluate([], ms(200), WALL) == []


def test_rule_validation_and_default() -> None:
    problems: list[str] = []
    for bad in ({"min_requests": 5}, {"for": 3}, {"silent_for": 30}, {"history": 10}):
        with pytest.raises(RuleError) as exc:
            rules_from_data({"rules": [{"kind": "no_data", "name": "q", **bad}]})
        problems += exc.value.problems
    assert any("min_requests: does not apply" in p for p in problems)
    assert any("for/resolve_after" in p for p in problems)
    assert any("silent_for: must be longer than the window" in p for p in problems)
    assert any("history: must be at least the window" in p for p in problems)
    shipped = load_rules()["no-data"]
    assert isinstance(shipped, NoDataRule) and shipped.silent_for == 300
    assert "requests" in load_rules().window_signal_names  # the windows emit what it reads


def test_engine_ignores_no_data_rules_but_emits_their_signal() -> None:
    rules = RuleSet([rule()])
    engine = AlertEngine(rules)
    assert engine.evaluate([tile(m) for m in range(1, 30)], WALL) == []
    assert engine.firing == [] and engine.series_count == 0


def _stage() -> AlertStage:
    return AlertStage(AlertEngine(RuleSet([rule()])), None, send=False)


def _ctx(minute: float, signals: list[Signal]) -> Context:
    return Context(now=WALL, wall_s=0.0, source_time_ms=ms(minute), signals=signals)


def test_stage_checkpoint_round_trip_and_tick() -> None:
    stage = _stage()
    assert stage.process(None, _ctx(15, [tile(m) for m in range(1, 16)])).rows == []  # type: ignore[arg-type]
    blob = stage.snapshot()
    assert blob is not None
    restored = _stage()
    restored.restore(blob)
    # A tick (no window closed anywhere) is enough: the frontier moved.
    out = restored.tick(_ctx(22, []))
    (rows,) = out.rows
    assert rows.table == "alerts" and [r[2] for r in rows.data] == ["firing"]  # type: ignore[index]
    restored2 = _stage()
    blob2 = restored.snapshot()
    assert blob2 is not None and "no_data" in orjson.loads(blob2)
    restored2.restore(blob2)
    assert restored2.tick(_ctx(30, [])).rows == []  # firing survives: no second page
    back = restored2.process(None, _ctx(31, [tile(31)]))  # type: ignore[arg-type]
    assert [r[2] for r in back.rows[0].data] == ["resolved"]  # type: ignore[index]


def test_restart_from_alerts_table_resolves_without_paging_again() -> None:
    mon = NoDataMonitor([rule()])
    mon.evaluate([tile(m) for m in range(1, 16)], None, WALL)
    fired = mon.evaluate([], ms(25), WALL)
    rows = state_rows_from_alerts([transition_row(t) for t in fired])
    fresh = NoDataMonitor([rule()])
    fresh.restore_firing(rows)
    assert len(fresh.firing) == 1
    assert fresh.evaluate([], ms(40), WALL) == []  # no second page while still quiet
    back = fresh.evaluate([tile(41)], ms(41), WALL)
    assert states(back) == [("resolved", "traffic_returned", 41.0)]
    assert back[0].dedup_key == fired[0].dedup_key


# --- end to end: a replay through the real pipeline and store ---------------------------


def _request(service: str, event_id: str, timestamp: int) -> dict[str, Any]:
    """One chat request of ``service`` (``/v1/chat``, gpt-4o, tenant acme)."""
    return event(
        0,
        event_id=event_id,
        timestamp=timestamp,
        service=service,
        tenant="acme",
        latency_ms=120.0,
        input_tokens=100,
        output_tokens=20,
    )


def _events(path: Path) -> int:
    """Two services at one request per second for 40 minutes; ``flaky`` is silent
    from minute 15 to minute 30."""
    base_ms = int(T0.timestamp() * 1000)
    n = 0
    with path.open("wb") as f:
        for s in range(40 * 60):
            for service in ("steady", "flaky"):
                if service == "flaky" and 15 * 60 <= s < 30 * 60:
                    continue
                e = _request(service, f"{service}-{s}", base_ms + s * 1000 + 250)
                f.write(orjson.dumps(e) + b"\n")
                n += 1
    return n


def test_replay_series_goes_quiet_then_returns(tmp_path: Path) -> None:
    path = tmp_path / "quiet.jsonl"
    n = _events(path)
    env = {
        "LLMPULSE_DATA_DIR": str(tmp_path / "data"),
        "LLMPULSE_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'store'}",
        "LLMPULSE_ALERTS_CONTROL_ENABLED": "false",
    }
    proc = llmpulse(["replay", str(path), "--json"], env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accepted"] == n

    sql = (
        "SELECT rule, state, labels['service'] AS service, labels['category'] AS category,"
        " toUnixTimestamp(event_time) AS t FROM alerts ORDER BY dedup_key, wall_time, event_time"
    )
    out = llmpulse(["sql", sql, "-f", "json"], env)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    quiet = [r for r in rows if r["rule"] == "no-data"]
    # Only the service+endpoint+model series of flaky: steady never stopped.
    assert [(r["service"], r["state"], r["category"]) for r in quiet] == [
        ("flaky", "firing", "no_data"),
        ("flaky", "resolved", "no_data"),
    ], rows
    start = int(T0.timestamp())
    fired_at, resolved_at = (int(r["t"]) - start for r in quiet)
    # The last request (14:59.25) is in the window [14:50, 15:50): silent from 14:50,
    # fires 300 s later; the first one back (30:00.25) closes with [29:10, 30:10).
    assert (fired_at, resolved_at) == (19 * 60 + 50, 30 * 60 + 10)
    assert not [r for r in rows if r["service"] == "steady"], rows

    # The same file again: nothing new, nobody paged twice.
    again = llmpulse(["replay", str(path), "--json"], env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["alert_transitions"] == 0
    count = llmpulse(
        ["sql", "SELECT count() AS n FROM alerts WHERE rule = 'no-data'", "-f", "json"], env
    )
    assert json.loads(count.stdout)[0]["n"] == 2


# --- in the worker: other series' windows, then the idle clock -------------------------

WORKER_RULES = """\
version: 1
rules:
  - name: quiet
    kind: no_data
    window: 30
    silent_for: 60
    min_history: 120
    min_requests_per_minute: 1
    grouping: service+endpoint+model
"""


def _traffic(service: str, start_ms: int, seconds: int) -> list[tuple[bytes, bytes]]:
    out = []
    for s in range(seconds):
        e = _request(service, f"{service}-{start_ms + s * 1000}", start_ms + s * 1000 + 250)
        out.append((f"{service}|/v1/chat|gpt-4o".encode(), orjson.dumps(e)))
    return out


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    # Round robin over the input partitions (the worker routes by event id
    # and series itself). Fifteen minutes of event time go out in one burst
    # here; keyed by series, alpha's partition would end 5 minutes earlier in
    # event time but not in wall time, and the idle clock (each partition's
    # newest event plus its wall-clock quiet, the slowest one winning) would
    # lag 5 minutes. Live traffic has no such skew; round robin removes it.
    keys, values = [k for k, _ in records], [v for _, v in records]
    produce(bootstrap, topic, values, keys, partitions=3)


@pytest.mark.kafka
@pytest.mark.slow
def test_worker_fires_on_silence_and_on_a_total_outage(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    import time
    import uuid

    from llmpulse.devkafka.topics import ensure_topics_sync

    topic = f"traces-{uuid.uuid4().hex[:8]}"
    ensure_topics_sync(kafka_bootstrap, {topic: 3, topic + ".dlq": 1})
    rules = tmp_path / "rules.yaml"
    rules.write_text(WORKER_RULES)
    env = worker_env(
        kafka_bootstrap,
        topic,
        tmp_path,
        partitions=3,
        # Private input topics: the shared broker's default ones carry other
        # tests' events, whose event times would hold this worker's clock.
        own_inputs=True,
        app_id=f"llmpulse-test-{topic}",
        worker_flush_interval_s=0.2,
        alerts_rules_file=rules,
        alerts_control_enabled="false",
        # Short windows and lateness keep the idle clock's wait under two minutes.
        windows_specs="[[30, 10]]",
        windows_allowed_lateness_s=5,
        windows_idle_timeout_s=3,
    )
    w = worker_process(env, tmp_path / "worker.log")
    w.start()
    try:
        w.wait_ready()
        # Event time 15 minutes ago: alpha and beta for 5 minutes, then beta alone
        # for 5 more. Beta's windows are alpha's clock.
        t = (int(time.time()) - 15 * 60) // 60 * 60 * 1000
        records = _traffic("alpha", t, 300) + _traffic("beta", t, 600)
        _produce(kafka_bootstrap, topic, records)

        def alerts() -> list[tuple[str, str, int]]:
            rows = w.sql(
                "SELECT labels['service'], state, toUnixTimestamp(event_time) FROM alerts"
                " WHERE rule = 'quiet' ORDER BY event_time"
            )[1]
            return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

        # Beta then stops too: nothing arrives anywhere, and only the worker's idle
        # clock (the frontier moving with wall time) can see it. Bounded wait.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(alerts()) < 2:
            assert w.alive, w.log_tail()
            time.sleep(1.0)
        got = alerts()
        start = t // 1000
        # alpha's last request (4:59.25) is in [4:50, 5:20): fires dated 4:50 + 60 s;
        # beta's (9:59.25) is in [9:50, 10:20): fires dated 9:50 + 60 s.
        assert got == [
            ("alpha", "firing", start + 5 * 60 + 50),
            ("beta", "firing", start + 10 * 60 + 50),
        ], (got, w.log_tail())

        # alpha comes back (event time: now): its alert resolves, beta stays firing.
        back = int(time.time()) * 1000 - 60_000
        _produce(kafka_bootstrap, topic, _traffic("alpha", back, 60))
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(alerts()) < 3:
            assert w.alive, w.log_tail()
            time.sleep(1.0)
        got = alerts()
        assert [(s, st) for s, st, _ in got] == [
            ("alpha", "firing"),
            ("beta", "firing"),
            ("alpha", "resolved"),
        ], (got, w.log_tail())
    finally:
        w.stop()
