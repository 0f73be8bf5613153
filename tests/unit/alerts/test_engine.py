"""The alert engine: state machine, min_requests, hysteresis, for, restore, baselines,
burn rates, and the signals it reads."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmpulse.alerts.engine import AlertEngine
from llmpulse.alerts.estimators import BurnRateTracker
from llmpulse.alerts.rules import (
    BaselineRule,
    BurnRateRule,
    Rule,
    RuleSet,
    ThresholdRule,
    load_rules,
)
from llmpulse.alerts.signals import (
    Signal,
    fraction_above,
    signal_from_drift,
    signals_from_budget,
    signals_from_window,
)
from llmpulse.alerts.state import (
    ALERT_COLUMNS,
    AlertState,
    Transition,
    state_rows_from_alerts,
    transition_row,
)
from llmpulse.processors.budgets import Budget, BudgetStatus
from llmpulse.processors.windows import EventBatch, GroupingSet, WindowAggregator, WindowSpec

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WALL = datetime(2026, 6, 1, tzinfo=UTC)
SERIES = {
    "grouping": "service+endpoint+model",
    "service": "chat",
    "endpoint": "/v1",
    "model": "gpt-4o",
}
OTHER = {**SERIES, "model": "claude"}

FIRING, RESOLVED, PENDING, INACTIVE = (
    AlertState.FIRING,
    AlertState.RESOLVED,
    AlertState.PENDING,
    AlertState.INACTIVE,
)


def sig(
    i: int,
    value: float,
    requests: int = 100,
    *,
    name: str = "latency_p99_ms",
    step: int = 10,
    labels: dict[str, str] | None = None,
    window: int = 60,
    extra: dict[str, float] | None = None,
) -> Signal:
    """Window ``i`` of a series: windows end every ``step`` s; i % (60/step) == 0 aligned."""
    end = T0 + timedelta(seconds=600 + step * i)
    return Signal(name, labels or SERIES, window, end, value, requests, extra or {})


P99_RULE = {"name": "p99", "signal": "latency_p99_ms", "threshold": 800, "min_requests": 50}


def p99_rule(**kw: Any) -> ThresholdRule:
    """The p99 rule (``P99_RULE``) with the fields in ``kw`` changed."""
    return ThresholdRule.model_validate({**P99_RULE, **kw})


def run(
    engine: AlertEngine, signals: Iterable[Signal], one_by_one: bool = True
) -> list[Transition]:
    out: list[Transition] = []
    if one_by_one:
        for s in signals:
            out += engine.evaluate([s], WALL)
    else:
        out += engine.evaluate(list(signals), WALL)
    return out


def notified(ts: Iterable[Transition]) -> list[str]:
    return [t.to_state.value for t in ts if t.notify]


# --- examples ------------------------------------------------------------------------------


def test_latency_regression_fires_once_and_resolves_once() -> None:
    engine = AlertEngine(load_rules())
    values = [300.0] * 30 + [1200.0] * 20 + [300.0] * 30
    ts = run(engine, [sig(i, v) for i, v in enumerate(values)])
    fired = [t for t in ts if t.notify]
    assert [t.to_state for t in fired] == [FIRING, RESOLVED]
    assert fired[0].rule == "latency-p99-high" and fired[0].dedup_key == fired[1].dedup_key
    assert fired[0].event_time == sig(31, 0).event_time  # for: 2
    assert fired[1].event_time == sig(52, 0).event_time  # resolve_after: 3
    assert fired[0].severity == "error"
    assert fired[0].summary == (
        "p99 latency 1200 ms > 800 ms over 60s on endpoint=/v1, model=gpt-4o, service=chat"
    )
    assert fired[0].runbook_url and fired[0].runbook_url.endswith("#latency-p99-high")
    assert fired[0].labels["category"] == "latency" and fired[0].labels["model"] == "gpt-4o"
    assert len(fired[0].dedup_key) <= 255 and fired[0].dedup_key.startswith("llmpulse:")
    assert [(t.from_state, t.to_state) for t in ts] == [
        (INACTIVE, PENDING),
        (PENDING, FIRING),
        (FIRING, RESOLVED),
    ]


def test_clean_series_produces_nothing() -> None:
    engine = AlertEngine(load_rules())
    rng = np.random.default_rng(1)
    signals = []
    for i in range(300):
        signals.append(sig(i, float(rng.uniform(100, 700))))
        signals.append(sig(i, float(rng.uniform(0, 0.02)), name="error_rate", extra={"bad": 1.0}))
    assert run(engine, signals, one_by_one=False) == []


def test_min_requests_ignores_small_windows() -> None:
    engine = AlertEngine([p99_rule()])
    # p99 of 20 requests is their max: huge values, never a page
    assert run(engine, [sig(i, 5000.0, requests=20) for i in range(50)]) == []
    # small windows inside an incident neither clear nor breach
    ts = run(engine, [sig(100, 900.0), sig(101, 100.0, requests=3), sig(102, 100.0)])
    assert [(t.to_state, t.event_time) for t in ts] == [
        (FIRING, sig(100, 0).event_time),
        (RESOLVED, sig(102, 0).event_time),
    ]


def test_for_needs_consecutive_breaches() -> None:
    engine = AlertEngine([p99_rule(**{"for": 3})])
    ts = run(engine, [sig(0, 900.0), sig(1, 900.0), sig(2, 100.0), sig(3, 900.0), sig(4, 900.0)])
    assert [(t.from_state, t.to_state) for t in ts] == [
        (INACTIVE, PENDING),
        (PENDING, INACTIVE),
        (INACTIVE, PENDING),
    ]
    assert notified(ts) == []
    ts = run(engine, [sig(5, 900.0)])
    assert [(t.from_state, t.to_state) for t in ts] == [(PENDING, FIRING)]
    assert ts[0].notify


def test_hysteresis_and_resolve_after() -> None:
    engine = AlertEngine([p99_rule(resolve_threshold=700, resolve_after=2)])
    ts = run(engine, [sig(0, 900.0)] + [sig(i, 750.0 if i % 2 else 790.0) for i in range(1, 30)])
    assert notified(ts) == ["firing"]  # between 700 and 800: still firing
    ts = run(engine, [sig(30, 650.0), sig(31, 750.0), sig(32, 650.0)])
    assert ts == []  # the dead band broke the run of clear windows
    ts = run(engine, [sig(33, 650.0)])
    assert notified(ts) == ["resolved"]
    assert ts[0].value == 650.0 and ts[0].summary.startswith("[resolved] ")
    # resolved behaves like inactive: a new incident pages again, same key
    ts2 = run(engine, [sig(40, 1000.0)])
    assert notified(ts2) == ["firing"] and ts2[0].from_state is RESOLVED
    assert ts2[0].dedup_key == ts[0].dedup_key


def test_less_than_rules() -> None:
    # Fires on relevance below 0.5, resolves above 0.6.
    low = {"name": "q", "signal": "score_mean:relevance", "comparison": "<", "threshold": 0.5}
    rule = ThresholdRule.model_validate({**low, "resolve_threshold": 0.6, "min_requests": 10})
    engine = AlertEngine([rule])
    s = [
        signal_from_drift(
            "score_mean:relevance", {"model": "m"}, T0 + timedelta(minutes=i), v, requests=50
        )
        for i, v in enumerate([0.8, 0.4, 0.55, 0.7])
    ]
    ts = run(engine, s)
    assert notified(ts) == ["firing", "resolved"]
    assert ts[-1].event_time == T0 + timedelta(minutes=3)


def test_grouping_window_and_match_filters() -> None:
    rule = p99_rule(grouping="service+endpoint+model", match={"model": ["gpt-4o"]}, window=60)
    engine = AlertEngine([rule])
    assert run(engine, [sig(0, 900.0, labels=OTHER)]) == []  # filtered model
    assert run(engine, [sig(1, 900.0, window=300)]) == []  # other window spec
    assert run(engine, [sig(2, 900.0, labels={"grouping": "model", "model": "gpt-4o"})]) == []
    assert notified(run(engine, [sig(3, 900.0)])) == ["firing"]


def test_series_are_independent_and_keys_stable() -> None:
    engine = AlertEngine([p99_rule()])
    ts = run(engine, [sig(0, 900.0), sig(0, 900.0, labels=OTHER), sig(1, 100.0)], one_by_one=False)
    assert [(t.labels["model"], t.to_state) for t in ts] == [
        ("gpt-4o", FIRING),
        ("claude", FIRING),
        ("gpt-4o", RESOLVED),
    ]
    assert ts[0].dedup_key != ts[1].dedup_key and ts[0].dedup_key == ts[2].dedup_key
    assert len(engine.firing) == 1


def test_replayed_and_out_of_order_windows_are_ignored() -> None:
    engine = AlertEngine([p99_rule(**{"for": 2})])
    ts = run(engine, [sig(5, 900.0), sig(5, 900.0), sig(4, 900.0)])
    assert [t.to_state for t in ts] == [PENDING]  # the same window twice is one window
    # within one batch the order does not matter
    engine2 = AlertEngine([p99_rule(**{"for": 2})])
    ts2 = engine2.evaluate([sig(2, 900.0), sig(1, 900.0)], WALL)
    assert [t.to_state for t in ts2] == [PENDING, FIRING]


def test_stale_series_resolves() -> None:
    engine = AlertEngine([p99_rule(stale_after=300)])
    ts = run(engine, [sig(0, 900.0)])
    assert notified(ts) == ["firing"]
    # the series goes quiet while another one keeps the clock moving
    quiet = [sig(i, 100.0, labels=OTHER) for i in range(1, 40)]
    ts = run(engine, quiet)
    assert [(t.to_state, t.reason) for t in ts] == [(RESOLVED, "stale")]
    assert ts[0].event_time - sig(0, 0).event_time > timedelta(seconds=300)
    assert ts[0].summary.startswith("[resolved: no data]")
    assert run(engine, [sig(20, 900.0)]) == []  # older than the stale resolution: late


def test_wall_time_is_stamped_not_read() -> None:
    engine = AlertEngine([p99_rule()])
    wall = datetime(2030, 5, 5, 5, 5, tzinfo=UTC)
    [t] = engine.evaluate([sig(0, 900.0)], wall)
    assert t.wall_time == wall and t.event_time == sig(0, 0).event_time
    with pytest.raises(ValueError, match="timezone-aware"):
        engine.evaluate([], datetime(2030, 1, 1))


def test_dashboard_and_runbook_templates() -> None:
    rule = p99_rule(
        dashboard_url="{dashboard_base_url}/d/llm?var-model={labels[model]}",
        runbook_url="https://r.example/{labels[service]}",
    )
    engine = AlertEngine([rule], dashboard_base_url="https://grafana.example/")
    [t] = engine.evaluate([sig(0, 900.0)], WALL)
    assert t.dashboard_url == "https://grafana.example/d/llm?var-model=gpt-4o"
    assert t.runbook_url == "https://r.example/chat"
    [t] = AlertEngine([p99_rule()], dashboard_base_url="https://g").evaluate([sig(0, 900.0)], WALL)
    assert t.dashboard_url == "https://g" and t.runbook_url is None


# --- restart ---------------------------------------------------------------------------------


def incident() -> list[Signal]:
    return [sig(i, v) for i, v in enumerate([300.0] * 5 + [1200.0] * 10 + [300.0] * 10)]


@pytest.mark.parametrize("via_table", [False, True])
def test_restore_mid_incident_does_not_page_again_and_still_resolves(via_table: bool) -> None:
    rules = load_rules()
    signals = incident()
    first = AlertEngine(rules)
    before = run(first, signals[:10])  # firing now
    assert notified(before) == ["firing"]
    if via_table:
        rows = [dict(zip(ALERT_COLUMNS, transition_row(t), strict=True)) for t in before]
        engine = AlertEngine.from_snapshot(rules, state_rows_from_alerts(rows))
    else:
        engine = AlertEngine.from_snapshot(rules, first.snapshot())
    assert len(engine.firing) == 1
    # the worker rebuilds open windows: some already-seen windows come again
    after = run(engine, signals[8:])
    assert notified(after) == ["resolved"]
    assert after[-1].dedup_key == before[-1].dedup_key


def test_restored_state_waits_for_data_before_going_stale() -> None:
    rules = RuleSet([p99_rule(stale_after=300)])
    first = AlertEngine(rules)
    run(first, [sig(0, 900.0)])
    engine = AlertEngine.from_snapshot(rules, first.snapshot())
    # hours later, other series resume first: no instant resolve of the restored alert
    later = [sig(2000 + i, 100.0, labels=OTHER) for i in range(5)]
    assert run(engine, later) == []
    assert notified(run(engine, [sig(2010, 1000.0)])) == []  # still firing, not re-paged
    ts = run(engine, [sig(2011, 100.0)])
    assert notified(ts) == ["resolved"]


def test_restored_alert_of_a_removed_rule_resolves() -> None:
    first = AlertEngine([p99_rule()])
    run(first, [sig(0, 900.0)])
    engine = AlertEngine.from_snapshot([p99_rule(name="renamed")], first.snapshot())
    ts = engine.evaluate([], WALL)
    assert [(t.rule, t.to_state, t.reason) for t in ts] == [("p99", RESOLVED, "rule_removed")]
    assert engine.evaluate([], WALL) == []


windows_st = st.lists(
    st.tuples(st.sampled_from([100.0, 650.0, 750.0, 850.0, 2000.0]), st.sampled_from([5, 60, 500])),
    max_size=60,
)
params_st = st.fixed_dictionaries(
    {
        "for": st.integers(1, 3),
        "resolve_after": st.integers(1, 3),
        "resolve_threshold": st.sampled_from([None, 700.0]),
    }
)


def reference(seq: Sequence[tuple[float, int]], p: dict[str, Any]) -> list[tuple[str, str, int]]:
    """The state machine as the issue states it, written the obvious way."""
    state, breaches, clears, out = "inactive", 0, 0, []
    resolve = p["resolve_threshold"] if p["resolve_threshold"] is not None else 800.0
    for i, (v, n) in enumerate(seq):
        if n < 50:
            continue
        if v > 800.0:
            clears = 0
            if state == "firing":
                continue
            breaches = breaches + 1 if state == "pending" else 1
            new = "firing" if breaches >= p["for"] else "pending"
            if new != state:
                out.append((state, new, i))
                state = new
            continue
        breaches = 0
        if state == "pending":
            out.append((state, "inactive", i))
            state = "inactive"
        elif state == "firing":
            clears = clears + 1 if v <= resolve else 0
            if clears >= p["resolve_after"]:
                out.append((state, "resolved", i))
                state, clears = "resolved", 0
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=windows_st, p=params_st)
def test_engine_matches_the_reference_machine(
    seq: list[tuple[float, int]], p: dict[str, Any]
) -> None:
    engine = AlertEngine([p99_rule(**p)])
    ts = run(engine, [sig(i, v, n) for i, (v, n) in enumerate(seq)], one_by_one=False)
    got = [
        (
            t.from_state.value,
            t.to_state.value,
            round((t.event_time - sig(0, 0).event_time).total_seconds()) // 10,
        )
        for t in ts
    ]
    assert got == reference(seq, p)
    # notifications alternate, starting with firing
    n = notified(ts)
    assert n == ["firing", "resolved"] * (len(n) // 2) + ["firing"] * (len(n) % 2)


@settings(max_examples=100, deadline=None)
@given(seq=windows_st, p=params_st, data=st.data())
def test_small_windows_change_nothing(
    seq: list[tuple[float, int]], p: dict[str, Any], data: st.DataObject
) -> None:
    # (inside the span of the base windows: later ones would move the clock on and let a
    # firing alert go stale, which is a different rule)
    small = data.draw(st.lists(st.integers(0, max(0, len(seq) - 2)), max_size=20))
    base = [sig(2 * i, v, n) for i, (v, n) in enumerate(seq)]
    noisy = base + [sig(2 * i + 1, 5000.0, requests=10) for i in small]
    a = run(AlertEngine([p99_rule(**p)]), base, one_by_one=False)
    b = run(AlertEngine([p99_rule(**p)]), noisy, one_by_one=False)
    assert [(t.to_state, t.event_time) for t in a] == [(t.to_state, t.event_time) for t in b]


@settings(max_examples=100, deadline=None)
@given(seq=windows_st, p=params_st, cut=st.integers(0, 60), data=st.data())
def test_restore_at_any_point(
    seq: list[tuple[float, int]], p: dict[str, Any], cut: int, data: st.DataObject
) -> None:
    rules = RuleSet([p99_rule(**p)])
    signals = [sig(i, v, n) for i, (v, n) in enumerate(seq)]
    cut = min(cut, len(signals))
    whole = run(AlertEngine(rules), signals)

    first = AlertEngine(rules)
    head = run(first, signals[:cut])
    # an exact snapshot continues exactly
    tail = run(AlertEngine.from_snapshot(rules, first.snapshot()), signals[cut:])
    assert [(t.to_state, t.event_time) for t in head + tail] == [
        (t.to_state, t.event_time) for t in whole
    ]
    # the table only keeps transitions: never a second page, never a resolve out of thin air
    rows = [transition_row(t) for t in head]
    replay_from = data.draw(st.integers(max(0, cut - 3), cut))  # re-emitted windows
    tail2 = run(
        AlertEngine.from_snapshot(rules, state_rows_from_alerts(rows)), signals[replay_from:]
    )
    n = notified(head + tail2)
    assert n == ["firing", "resolved"] * (len(n) // 2) + ["firing"] * (len(n) % 2)


# --- baselines ---------------------------------------------------------------------------------


def cost_rule(**kw: Any) -> BaselineRule:
    base: dict[str, Any] = {
        "name": "cost-spike",
        "kind": "baseline",
        "signal": "cost_per_minute",
        "multiple": 3,
        "resolve_multiple": 2,
        "baseline_windows": 30,
        "min_value": 0.05,
        "for": 2,
    }
    return BaselineRule.model_validate({**base, **kw})


def cost_series(levels: Sequence[float]) -> list[Signal]:
    """Hopping 60 s/10 s windows: six per minute, one of them aligned."""
    rng = np.random.default_rng(7)
    out = []
    for minute, level in enumerate(levels):
        for k in range(6):
            v = level * float(rng.uniform(0.9, 1.1))
            out.append(sig(6 * minute + k, v, name="cost_per_minute", requests=100))
    return out


def test_baseline_cost_spike_fires_once() -> None:
    engine = AlertEngine([cost_rule()])
    ts = run(engine, cost_series([1.0] * 40 + [5.0] * 5 + [1.0] * 20), one_by_one=False)
    assert notified(ts) == ["firing", "resolved"]
    fire = next(t for t in ts if t.to_state is FIRING)
    assert fire.event_time >= sig(6 * 40, 0).event_time
    assert fire.event_time <= sig(6 * 40 + 6, 0).event_time  # within a minute of the spike
    assert 2.7 < fire.threshold < 3.3 and 4 < fire.extra["ratio"] < 6
    assert fire.kind == "baseline" and fire.extra["baseline"] == pytest.approx(1.0, rel=0.1)


def test_baseline_ignores_sub_multiple_moves_and_warmup() -> None:
    engine = AlertEngine([cost_rule()])
    # wild values during warm-up (no baseline yet), then a 2.5x step: below 3x
    levels = [0.1, 50.0, 0.2] + [1.0] * 40 + [2.5] * 10
    assert run(engine, cost_series(levels), one_by_one=False) == []


def test_baseline_min_value_floor() -> None:
    engine = AlertEngine([cost_rule()])
    assert run(engine, cost_series([0.001] * 40 + [0.01] * 5), one_by_one=False) == []


def test_cost_per_request_default_rule() -> None:
    rules = load_rules()
    engine = AlertEngine(rules)
    s = [
        sig(6 * m, 0.01 if m < 40 else 0.05, name="cost_per_request", requests=100)
        for m in range(45)
    ]
    ts = run(engine, s)
    assert [(t.rule, t.to_state) for t in ts if t.notify] == [("cost-spike-per-request", FIRING)]


# --- burn rates ----------------------------------------------------------------------------------


def error_windows(rates: Sequence[float], requests: int = 1000, hops: int = 1) -> list[Signal]:
    """One 60 s window per minute (aligned), plus ``hops - 1`` overlapping ones."""
    out = []
    step = 60 // hops
    for minute, rate in enumerate(rates):
        for k in range(hops):
            bad = round(rate * requests)
            out.append(
                sig(
                    minute * hops + k,
                    bad / requests,
                    requests,
                    name="error_rate",
                    step=step,
                    extra={"bad": float(bad)},
                )
            )
    return out


def slo_rule(**kw: Any) -> BurnRateRule:
    base: dict[str, Any] = {"name": "slo", "kind": "burn_rate", "sli": "error", "objective": 0.99}
    return BurnRateRule.model_validate({**base, **kw})


def test_burn_rate_fires_on_fast_burn_and_resolves() -> None:
    engine = AlertEngine([slo_rule()])
    rates = [0.001] * 360 + [0.30] * 40 + [0.001] * 30  # 6 h of history fill every span
    ts = run(engine, error_windows(rates), one_by_one=False)
    assert notified(ts) == ["firing", "resolved"]
    fire, res = (t for t in ts if t.notify)
    # 1 h window at 30x burn reaches 14.4x after ~29 minutes of burn
    minutes = (fire.event_time - sig(360, 0, step=60).event_time).total_seconds() / 60
    assert 25 <= minutes <= 32
    assert fire.threshold == 14.4 and fire.value >= 14.4
    assert fire.extra["long_s"] == 3600 and fire.extra["short_s"] == 300
    # the 5 m window clears within minutes after the burn stops
    minutes_after = (res.event_time - sig(400, 0, step=60).event_time).total_seconds() / 60
    assert minutes_after <= 6
    assert "burning" in fire.summary


def test_burn_rate_quiet_on_slow_sub_threshold_burn() -> None:
    engine = AlertEngine([slo_rule()])
    # 3x burn for 8 hours: spends budget, but below both 14.4x/1h and 6x/6h
    assert run(engine, error_windows([0.03] * 480), one_by_one=False) == []


def test_burn_rate_slow_pair_fires_on_sustained_medium_burn() -> None:
    engine = AlertEngine([slo_rule()])
    ts = run(engine, error_windows([0.0] * 30 + [0.08] * 400), one_by_one=False)
    [fire] = [t for t in ts if t.notify]
    assert fire.threshold == 6.0 and fire.extra["long_s"] == 21600


def test_burn_rate_counts_each_request_once() -> None:
    rates = [0.001] * 120 + [0.30] * 40 + [0.001] * 30
    a = run(AlertEngine([slo_rule()]), error_windows(rates), one_by_one=False)
    b = run(AlertEngine([slo_rule()]), error_windows(rates, hops=6), one_by_one=False)
    assert [(t.to_state, t.event_time, t.value) for t in a] == [
        (t.to_state, t.event_time, t.value) for t in b
    ]


def test_burn_rate_needs_enough_requests() -> None:
    engine = AlertEngine([slo_rule()])
    # min_requests (100) counts the short span: 3 a minute never reach it in 30 minutes
    assert run(engine, error_windows([1.0] * 30, requests=3), one_by_one=False) == []
    assert notified(
        run(AlertEngine([slo_rule()]), error_windows([1.0] * 30, requests=4), one_by_one=False)
    ) == ["firing"]


def test_latency_slo_from_windows() -> None:
    rule = slo_rule(sli="latency", latency_threshold_ms=800.0, objective=0.99)
    engine = AlertEngine([rule])
    agg = WindowAggregator([WindowSpec(60, 10)], [GroupingSet(("model",))], allowed_lateness_s=0)
    rng = np.random.default_rng(3)
    results = []
    for minute in range(80):
        slow = 0.5 if 10 <= minute < 30 else 0.0
        n = 200
        lat = np.where(rng.random(n) < slow, 1500.0, rng.uniform(50, 400, n))
        ts_ms = (T0.timestamp() * 1000 + minute * 60_000 + np.linspace(0, 59_000, n)).astype(int)
        results += agg.add(
            EventBatch.from_records(
                [
                    {"ts_ms": int(t), "latency_ms": float(v), "model": "m"}
                    for t, v in zip(ts_ms, lat, strict=True)
                ]
            )
        )
    ts = engine.evaluate_windows(results, WALL)
    assert notified(ts) == ["firing", "resolved"]
    assert ts[0].signal == "slo_latency_bad_fraction:800"
    # the 6 h/30 m pair holds it until the burst leaves its 30 m span
    assert ts[-1].event_time <= T0 + timedelta(minutes=62)


def test_burn_tracker_prunes() -> None:
    tr = BurnRateTracker(horizon_s=600)
    for i in range(1, 10_000):
        tr.update(60 * i, 10.0, 1.0)
    assert tr.sums(600) == (100.0, 10.0)
    assert len(tr._ends) <= 25


# --- signals -------------------------------------------------------------------------------------


def test_signals_from_window_result() -> None:
    agg = WindowAggregator(
        [WindowSpec(60, 60)], [GroupingSet(("service", "model"))], allowed_lateness_s=0
    )
    recs = [
        {
            "ts_ms": 1_000 + i,
            "latency_ms": 100.0 + i,
            "service": "s",
            "model": "m",
            "cost_usd": 0.01 if i < 80 else None,
            "is_error": i < 5,
            "ttft_ms": None,
        }
        for i in range(100)
    ]
    agg.add(EventBatch.from_records(recs))
    [r] = agg.flush_all()
    sigs = {s.name: s for s in signals_from_window(r, latency_thresholds_ms=[150.0])}
    assert dict(sigs["latency_p99_ms"].labels) == {
        "grouping": "service+model",
        "service": "s",
        "model": "m",
    }
    assert "ttft_p95_ms" not in sigs  # NaN: no ttft in the window
    assert sigs["error_rate"].value == 0.05 and sigs["error_rate"].extra["bad"] == 5
    assert sigs["cost_per_minute"].value == pytest.approx(0.8)
    assert sigs["cost_per_request"].value == pytest.approx(0.01)
    assert sigs["cost_per_request"].requests == 80
    assert sigs["requests"].value == 100
    assert sigs["slo_latency_bad_fraction:150"].value == pytest.approx(0.49, abs=0.02)
    assert sigs["latency_p99_ms"].event_time == r.window_end
    only = signals_from_window(r, names={"error_rate"})
    assert [s.name for s in only] == ["error_rate"]


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(0, 1e5, allow_nan=False), min_size=1, max_size=300),
    threshold=st.floats(0, 2e5, allow_nan=False),
)
def test_fraction_above_is_bucket_accurate(values: list[float], threshold: float) -> None:
    from llmpulse.processors.sketch import LogHistogram

    h = LogHistogram()
    h.update_many(np.array(values))

    class W:
        latency_sketch = h

    got = fraction_above(W(), threshold)  # type: ignore[arg-type]
    x = np.array(values)
    exact = float((x > threshold).mean())
    near = float(((x > threshold / 1.0203) & (x <= threshold * 1.0203)).mean())
    assert exact - near - 1e-12 <= got <= exact + 1e-12
    assert not math.isnan(got)


def test_budget_and_drift_signals() -> None:
    st_ = BudgetStatus(Budget("team", "search", "month", 100.0), date(2026, 1, 1), 120.0)
    s = signals_from_budget(st_, T0)
    assert (s.name, s.value, s.labels["team"], s.window_seconds) == (
        "budget_usage_ratio",
        1.2,
        "search",
        0,
    )
    rules = load_rules()
    [t] = AlertEngine(rules).evaluate([s], WALL)
    assert (t.rule, t.to_state) == ("budget-exceeded", FIRING)
    assert t.summary == "team search spent 120% of its month budget"
    d = signal_from_drift("drift_detected", {"model": "m", "signal": "prompt_embedding"}, T0, 1.0)
    [t] = AlertEngine(rules).evaluate([d], WALL)
    assert (t.rule, t.to_state, t.labels["category"]) == (
        "drift-detected",
        FIRING,
        "drift_detected",
    )
    with pytest.raises(ValueError):
        signal_from_drift("latency_p99_ms", {}, T0, 1.0)


def test_warm_feeds_history_only() -> None:
    engine = AlertEngine([cost_rule(), p99_rule()])
    history = cost_series([1.0] * 40)
    engine.warm([*history, sig(0, 5000.0)])
    assert engine.firing == [] and engine.pending == []
    spike = [sig(6 * 40 + k, 5.0, name="cost_per_minute") for k in range(3)]
    assert notified(engine.evaluate(spike, WALL)) == ["firing"]


def test_snapshot_rows_are_json() -> None:
    import json

    engine = AlertEngine([p99_rule()])
    engine.evaluate([sig(0, 900.0)], WALL)
    rows = json.loads(json.dumps(engine.snapshot()))
    again = AlertEngine.from_snapshot([p99_rule()], rows)
    assert [s.state for s in again.firing] == [FIRING]


def test_rules_type_alias_accepts_all_kinds() -> None:
    rules: list[Rule] = [p99_rule(), cost_rule(), slo_rule()]
    assert {r.kind for r in AlertEngine(rules).rules} == {"threshold", "baseline", "burn_rate"}


# --- incidents -------------------------------------------------------------------------------


def test_rules_of_one_incident_page_once() -> None:
    fast = p99_rule(name="p99-fast", incident="latency")
    slow = p99_rule(name="p99-slow", threshold=1000, incident="latency", **{"for": 3})
    engine = AlertEngine([fast, slow])
    values = [1500.0] * 5 + [900.0] * 3 + [100.0] * 3
    ts = run(engine, [sig(i, v) for i, v in enumerate(values)])
    fired = [(t.rule, t.to_state.value, t.notify) for t in ts if t.to_state in (FIRING, RESOLVED)]
    assert fired == [
        ("p99-fast", "firing", True),
        ("p99-slow", "firing", False),  # absorbed by the open incident
        ("p99-slow", "resolved", False),  # p99-fast still firing
        ("p99-fast", "resolved", True),  # the last one out resolves the page
    ]
    keys = {t.page_key for t in ts}
    assert len(keys) == 1 and next(iter(keys)).startswith("llmpulse:latency:")
    assert len({t.dedup_key for t in ts}) == 2
    # the table keeps what was notified
    assert [
        transition_row(t)[ALERT_COLUMNS.index("notified")]
        for t in ts
        if t.to_state in (FIRING, RESOLVED)
    ] == [1, 0, 0, 1]


def test_incident_survives_restore() -> None:
    rules = RuleSet([p99_rule(name="a", incident="lat"), p99_rule(name="b", incident="lat")])
    first = AlertEngine(rules)
    before = run(first, [sig(0, 900.0)])
    assert [t.notify for t in before] == [True, False]
    rows = [transition_row(t) for t in before]
    engine = AlertEngine.from_snapshot(rules, state_rows_from_alerts(rows))
    after = run(engine, [sig(1, 900.0), sig(2, 100.0)])
    assert [(t.rule, t.to_state.value, t.notify) for t in after] == [
        ("a", "resolved", False),
        ("b", "resolved", True),
    ]


def test_burn_rate_quiet_at_start_on_a_noisy_small_series() -> None:
    # a fresh engine (a replay, a restart without warm()) sees 30 minutes of a small
    # series with an unlucky 4 % of errors: the 6 h span is not judged on 30 minutes
    engine = AlertEngine([slo_rule(objective=0.995)])
    assert run(engine, error_windows([0.04] * 30, requests=20), one_by_one=False) == []
    # while a real outage at start still pages
    engine = AlertEngine([slo_rule(objective=0.995)])
    ts = run(engine, error_windows([1.0] * 15, requests=50), one_by_one=False)
    assert notified(ts) == ["firing"]
