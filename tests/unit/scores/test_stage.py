"""Late scores: the contract, validation and the fold in memory (the score path against
a real chDB store: tests/integration/test_scores.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pytest

from llmpulse.errors import ValidationError
from llmpulse.processors.batch_validate import validate_batch
from llmpulse.processors.score_validate import validate_score_mapping, validate_scores
from llmpulse.processors.traces import RawMessage
from llmpulse.processors.windows import GroupingSet, WindowSpec
from llmpulse.schemas.score import ScoreEvent
from llmpulse.scores.quality import QualityConfig, QualityFolder, window_starts
from llmpulse.scores.records import CallInfo, ScoreRecord, inline_scores
from llmpulse.scores.stage import ScoreStage
from llmpulse.scores.store import MemoryScoreStore
from tests.helpers import BASE_MS, event

NOW = datetime(2026, 1, 2, tzinfo=UTC)


def score(event_id: str = "evt-1", **fields: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "event_id": event_id,
        "name": "hallucination",
        "value": 0.0,
        "source": "eval",
        "timestamp": BASE_MS + 3_600_000,
    }
    s.update(fields)
    return s


def msgs(items: Sequence[dict[str, Any]], topic: str = "llm.scores") -> list[RawMessage]:
    return [RawMessage(orjson.dumps(s), f"{topic}/0@{i}") for i, s in enumerate(items)]


# --- the contract -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"value": "high"}, "value: must be a boolean or a finite number, got 'high'"),
        ({"value": None}, "value: must be a boolean or a finite number, got None"),
        ({"name": ""}, "name: must not be empty, got ''"),
        ({"source": None}, "source: must be a string, got None"),
        ({"timestamp": 1767225600}, "timestamp: must be between 2000-01-01 and 2200-01-01"),
        ({"timestamp": "2026-01-01 00:00:00"}, "timestamp: must include a time zone offset"),
        ({"event_id": None}, "event_id: needs event_id, or trace_id and span_id, got None"),
        ({"event_id": "", "trace_id": "t"}, "event_id: needs event_id, or trace_id and span_id"),
        ({"schema_version": 2}, "schema_version: must be 1, got 2"),
    ],
)
def test_rejections_name_field_rule_and_value(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_score_mapping(score(**change))
    assert str(info.value).startswith(reason)


def test_numbers_booleans_spans_and_ids() -> None:
    b = validate_score_mapping(score(value=True))
    n = validate_score_mapping(score(value=1))
    assert (b.data_type, b.numeric_value, n.data_type, n.numeric_value) == (
        "boolean",
        1.0,
        "numeric",
        1.0,
    )
    assert b.score_id != n.score_id  # true and 1 are different answers
    span = validate_score_mapping(score(event_id="", trace_id="t1", span_id="s1"))
    assert span.target == "span:t1/s1"
    given = validate_score_mapping(score(score_id="mine", extra_field=[1, 2]))
    assert given.score_id == "mine"
    rfc = validate_score_mapping(score(timestamp="2026-01-01T01:00:00+01:00"))
    assert rfc.timestamp_ms == BASE_MS
    assert validate_score_mapping(score()).score_id == validate_score_mapping(score()).score_id


def test_batch_validator_keeps_first_of_each_score_and_every_problem() -> None:
    raws = [orjson.dumps(score()), orjson.dumps(score()), b"{nope", b"[1]"]
    raws.append(orjson.dumps(score(value=float("inf")) | {"value": 1e400}))
    out = validate_scores(raws)
    assert out.positions == [0] and out.duplicates == 1
    assert [(i, e.problems[0].field) for i, e in out.rejected] == [(2, "$"), (3, "$"), (4, "value")]


# --- the folding core ----------------------------------------------------------------------


def cfg(**kw: Any) -> QualityConfig:
    base: dict[str, Any] = {
        "specs": (WindowSpec(60, 10), WindowSpec(300, 60)),
        "groupings": (GroupingSet.parse("service+endpoint+model"), GroupingSet.parse("tenant")),
        "signal_window_s": 60,
        "alert_delay_ms": 0,
    }
    base.update(kw)
    return QualityConfig(**base)


def test_a_score_lands_in_every_window_of_its_call_not_of_its_arrival() -> None:
    call = CallInfo("e", BASE_MS + 65_000, {"service": "s", "model": "m", "tenant": "t"})
    rec = ScoreRecord("x", "relevance", 0.2, BASE_MS + 86_400_000, "human", "e")
    parts = QualityFolder(cfg()).fold([(rec, call)])
    # 6 hopping 60 s windows + 5 hopping 300 s windows, for each of the 2 groupings
    assert len(parts) == 22
    for p in parts:
        assert p.window_start_ms <= call.timestamp_ms < p.window_start_ms + p.window_seconds * 1000
        assert (p.count, p.below, p.score_ids) == (1, 1, ("x",))
    assert sorted(window_starts(BASE_MS + 65_000, WindowSpec(60, 10)))[0] == BASE_MS + 10_000


@pytest.mark.parametrize(("when", "rate"), [("above", 0.25), ("below", 0.75)])
def test_hallucination_rate_direction_and_thresholds(when: str, rate: float) -> None:
    folder = QualityFolder(
        cfg(hallucination_score="faith", hallucination_if=when, thresholds={"faith": 0.7})
    )
    call = CallInfo("e", BASE_MS, {"model": "m"})
    values = [0.1, 0.5, 0.69, 0.9]
    folder.fold(
        [(ScoreRecord(f"s{i}", "faith", v, 0, "eval", "e"), call) for i, v in enumerate(values)]
    )
    sigs = {
        s.name: s for s in folder.advance(BASE_MS + 120_000) if s.labels["grouping"] == "tenant"
    }
    assert sigs["hallucination_rate"].value == rate
    assert sigs["score_rate_below:faith"].value == 0.75
    assert sigs["score_mean:faith"].value == pytest.approx(sum(values) / 4)
    assert sigs["score_mean:faith"].requests == 4


def test_signals_wait_for_the_alert_delay_then_come_once() -> None:
    folder = QualityFolder(cfg(alert_delay_ms=300_000))
    call = CallInfo("e", BASE_MS + 5_000, {"model": "m"})
    folder.fold([(ScoreRecord("a", "relevance", 0.9, 0, "eval", "e"), call)])
    assert folder.advance(BASE_MS + 200_000) == []
    first = folder.advance(BASE_MS + 370_000)
    assert first and all(s.window_seconds == 60 for s in first)
    assert folder.advance(BASE_MS + 900_000) == []


def test_inline_scores_are_records_of_their_own_call() -> None:
    checked = validate_batch([orjson.dumps(event(1, scores={"relevance": 0.4}))], ["t:1"])
    [rec] = inline_scores(checked.batch)
    assert (rec.event_id, rec.name, rec.value, rec.source) == ("evt-1", "relevance", 0.4, "trace")
    again = inline_scores(validate_batch([orjson.dumps(event(1, scores={"relevance": 0.4}))]).batch)
    assert again[0].score_id == rec.score_id


# --- the stage on a real store ---------------------------------------------------------------


def test_pending_is_bounded_and_counts_what_it_lets_go() -> None:
    folder = QualityFolder(cfg())
    stage = ScoreStage(folder, MemoryScoreStore(), pending_max=2, clock=lambda: NOW)
    out = stage.handle(msgs([score(f"nope-{i}") for i in range(5)]))
    assert (out.stats.unknown_calls, out.stats.expired, stage.pending) == (5, 3, 2)


def test_memory_store_behaves_like_the_table_for_callers() -> None:
    store = MemoryScoreStore([CallInfo("evt-1", BASE_MS, {"tenant": "acme"})])
    stage = ScoreStage(QualityFolder(cfg()), store, clock=lambda: NOW)
    stage.handle(msgs([score()]))
    stage.handle(msgs([score()]))
    assert len(store.scores) == 1
    assert sum(p["score_count"] for p in store.partials.values() if p["grouping"] == "tenant") == 11
    assert isinstance(pa.table({"a": [1]}), pa.Table)


def test_score_events_ignore_unknown_fields() -> None:
    e = ScoreEvent.model_validate(score(kind="score", whatever={"x": 1}))
    assert e.kind == "score"


def test_the_shipped_hallucination_rule_fires_on_folded_late_scores() -> None:
    from llmpulse.alerts.engine import AlertEngine
    from llmpulse.alerts.rules import load_rules

    engine = AlertEngine(load_rules())
    folder = QualityFolder(
        cfg(groupings=(GroupingSet.parse("service+endpoint+model"),), alert_delay_ms=0)
    )
    fired = []
    for w in range(3):  # three 60 s windows, 4 % of 100 scored calls hallucinated each
        start = BASE_MS + w * 60_000
        scored = [
            (
                ScoreRecord(f"w{w}-{i}", "hallucination", float(i < 4), 0, "eval", f"e{w}-{i}"),
                CallInfo(f"e{w}-{i}", start + i * 100, {"service": "s", "model": "m"}),
            )
            for i in range(100)
        ]
        folder.fold(scored)
        sigs = [s for s in folder.advance(start + 60_000) if s.window_seconds == 60]
        fired += [t for t in engine.evaluate(sigs, NOW) if t.rule == "hallucination-rate-high"]
    states = [t.to_state.value for t in fired]
    assert "firing" in states
    assert fired[-1].value == pytest.approx(0.04)


def test_outcomes_list_what_was_folded_and_flush_ends_a_replay() -> None:
    store = MemoryScoreStore([CallInfo("evt-1", BASE_MS, {"tenant": "acme"})])
    stage = ScoreStage(QualityFolder(cfg(alert_delay_ms=10**9)), store, clock=lambda: NOW)
    out = stage.handle(msgs([score()]))
    assert [(r.event_id, c.timestamp_ms) for r, c in out.folded] == [("evt-1", BASE_MS)]
    assert out.signals == []
    assert {s.name for s in stage.flush()} >= {"hallucination_rate", "score_mean:hallucination"}
