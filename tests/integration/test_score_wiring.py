"""The score path's wiring without Kafka: quality alerts per series (tiles, each score
once, late scores, rebuild after a move), resending stored scores, the canary stage,
drift leaving quality signals to the score path, and replay of mixed files on chDB."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from llmpulse.alerts.engine import AlertEngine
from llmpulse.alerts.rules import load_rules
from llmpulse.compare.canary import canary_monitor
from llmpulse.processors.traces import RawMessage
from llmpulse.processors.windows import GroupingSet, WindowSpec
from llmpulse.replay import replay_messages
from llmpulse.runtime import build_pipeline, prepare_store
from llmpulse.scores.alerting import QualityAlerts, contributions
from llmpulse.scores.quality import QualityConfig, QualityFolder
from llmpulse.scores.records import CallInfo, ScoreRecord
from llmpulse.scores.stage import ScoreStage
from llmpulse.scores.store import MemoryScoreStore
from llmpulse.settings import Settings
from llmpulse.stages.base import Context
from llmpulse.stages.canary import CanaryStage
from llmpulse.stages.quality import QualityStage
from tests.helpers import BASE_MS, event

NOW = datetime(2026, 1, 2, tzinfo=UTC)
CFG = QualityConfig(
    (WindowSpec(60, 10),),
    (GroupingSet.parse("service+endpoint+model"), GroupingSet.parse("tenant")),
    signal_window_s=60,
    alert_delay_ms=30_000,
)


def scored(n: int, start_ms: int, bad_every: int = 10, prefix: str = "s") -> list[Any]:
    out = []
    for i in range(n):
        call = CallInfo(f"e{prefix}{i}", start_ms + i * 100, {"service": "chat", "tenant": "t1"})
        rec = ScoreRecord(f"{prefix}{i}", "hallucination", float(i % bad_every == 0), 0, "eval")
        out.append((rec, call))
    return out


def items(pairs: list[Any]) -> list[Any]:
    return [c for group in contributions(pairs, CFG.groupings).values() for c in group]


def test_quality_alerts_count_each_score_once_per_series_in_its_tile() -> None:
    alerts = QualityAlerts(CFG)
    first = scored(300, BASE_MS)  # calls 0-30 s: tile [0, 60)
    assert alerts.add(items(first)) == 600  # two groupings
    assert alerts.add(items(first[:100])) == 0 and alerts.duplicates == 200
    assert alerts.advance(BASE_MS + 60_000) == []  # the alert delay is not over
    sigs = alerts.advance(BASE_MS + 90_000)
    rates = {s.labels["grouping"]: (s.value, s.requests) for s in sigs
             if s.name == "hallucination_rate"}  # fmt: skip
    assert rates == {"service+endpoint+model": (0.1, 300), "tenant": (0.1, 300)}
    assert all(s.window_seconds == 60 for s in sigs)
    assert alerts.add(items(scored(5, BASE_MS, prefix="late"))) == 0 and alerts.late == 10
    assert alerts.open_windows == 0 and alerts.needed_from_ms() is None


def test_the_shipped_rule_pages_once_per_series_on_two_bad_tiles() -> None:
    engine = AlertEngine(load_rules())
    alerts = QualityAlerts(CFG)
    fired = []
    for tile in range(3):
        alerts.add(items(scored(600, BASE_MS + tile * 60_000, prefix=f"t{tile}-")))
        signals = alerts.advance(BASE_MS + (tile + 1) * 60_000 + 30_000)
        fired += [t for t in engine.evaluate(signals, NOW) if t.rule == "hallucination-rate-high"]
    assert [(t.to_state.value, t.labels["grouping"]) for t in fired] == [
        ("pending", "service+endpoint+model"),
        ("firing", "service+endpoint+model"),
    ]


def test_a_quality_stage_rebuilt_from_its_input_equals_the_one_that_ran() -> None:
    """A task moved to another worker: checkpoint, then the same contributions replayed."""
    ran = QualityStage(CFG)
    ctx = Context(NOW, 0.0, source_time_ms=BASE_MS + 90_000)
    early, later = items(scored(300, BASE_MS)), items(scored(300, BASE_MS + 60_000, prefix="x"))
    ran.add(early)
    first = ran.process(None, ctx)  # type: ignore[arg-type]
    assert {s.name for s in first.signals} >= {"hallucination_rate"}
    blob = ran.snapshot()
    assert blob is not None and ran.snapshot() is None  # unchanged since
    ran.add(later)
    assert ran.retention().event_time_ms == BASE_MS + 60_000

    moved = QualityStage(CFG)
    moved.restore(blob)
    moved.add(early + later)  # the replayed input: the tile alerted on is not again
    end = Context(NOW, 0.0, source_time_ms=BASE_MS + 150_000)
    got, want = moved.tick(end).signals, ran.tick(end).signals
    assert [(s.name, s.value, s.requests) for s in got] == [
        (s.name, s.value, s.requests) for s in want
    ]
    assert len(got) > 0


def test_stored_scores_delivered_again_are_passed_on_and_their_fold_completed() -> None:
    call = CallInfo("evt-1", BASE_MS, {"tenant": "acme"})
    store = MemoryScoreStore([call])
    folder = QualityFolder(CFG)
    rec = ScoreRecord("s1", "hallucination", 1.0, BASE_MS, "eval", "evt-1")
    # A crash after the score row of a call then unknown was written: stored with
    # call_known = 0 and folded nowhere; the call is stored by now.
    first = ScoreStage(folder, MemoryScoreStore(), clock=lambda: NOW)
    first.add([rec])
    store.scores.update(first.store.scores)  # type: ignore[attr-defined]
    again = ScoreStage(QualityFolder(CFG), store, clock=lambda: NOW, resend_stored=True)
    out = again.add([rec])
    assert [r.score_id for r, _ in out.resent] == ["s1"]
    assert [r.score_id for r, _ in out.folded] == ["s1"]  # the interrupted fold, completed
    assert out.stats.duplicates == 1 and out.stats.accepted == 0
    once_more = again.add([rec])  # now seen in memory: nothing to pass on
    assert once_more.resent == [] and once_more.folded == []
    plain = ScoreStage(QualityFolder(CFG), store, clock=lambda: NOW)
    assert plain.add([rec]).resent == []  # a replay does not resend


PAIRS = {
    "pairs": [{"name": "p", "baseline": {"prompt_version": "v2"},
               "candidate": {"prompt_version": "v3"}}],
    "rollback": True,
}  # fmt: skip


class Recording:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def __call__(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append((topic, key, value))


def test_the_canary_stage_compares_every_hop_and_rolls_back_once(
    settings: Settings,
) -> None:
    s = settings.model_copy(
        update={
            "canary": settings.canary.model_validate(PAIRS),
            "drift": settings.drift.model_copy(update={"enabled": False}),
        }
    )
    client = prepare_store(s)
    try:
        pipeline = build_pipeline(s, client)
        msgs = [
            RawMessage(orjson.dumps(event(i, prompt_version="v3" if i % 2 else "v2",
                                          latency_ms=(100 + i % 30) * (3 if i % 2 else 1))),
                       f"t:{i}")
            for i in range(600)
        ]  # fmt: skip
        replay_messages(pipeline, msgs, batch_size=600)
        monitor = canary_monitor(s)
        assert monitor is not None
        sent = Recording()
        stage = CanaryStage(monitor, client.query, every_ms=10_000, publish=sent)
        outs = [stage.tick(Context(NOW, 0.0, source_time_ms=BASE_MS + t)) for t in (59_000, 61_000)]
        outs.append(stage.tick(Context(NOW, 0.0, source_time_ms=BASE_MS + 65_000)))
        assert stage.evaluations == 2  # 50 s and 60 s; 65 s is within the same hop
        for out in outs[:2]:
            [rows] = out.rows
            assert rows.table == "comparisons" and len(rows) > 3
            latency = [x for x in out.signals if x.labels["metric"] == "latency"]
            assert [x.value for x in latency] == [1.0]
            for effect in out.after_write:
                effect()
        assert len(sent.sent) == 1  # the pair started failing once
        topic, key, value = sent.sent[0]
        assert topic == "llm.control"
        assert key == b"canary:p" and orjson.loads(value)["failed_metrics"] == ["latency"]
        restored = CanaryStage(monitor, client.query, every_ms=10_000, publish=sent)
        blob = stage.snapshot()
        assert blob is not None
        restored.restore(blob)
        again = restored.tick(Context(NOW, 0.0, source_time_ms=BASE_MS + 75_000))
        for effect in again.after_write:
            effect()
        assert restored.evaluations == 1 and len(sent.sent) == 1  # still failing: no repeat
        pipeline.close()
    finally:
        client.close()


def test_drift_leaves_quality_signals_to_the_score_path(settings: Settings) -> None:
    from llmpulse.runtime import Stages

    client = prepare_store(settings)
    try:
        stages = Stages(settings, client, send_alerts=False, replay=True)
        [drift] = [s for s in stages.keyed() if s.name == "drift"]
        assert drift.quality_signals is False  # type: ignore[attr-defined]
        assert "quality" in [s.name for s in stages.keyed()]
    finally:
        client.close()


def test_replay_of_a_mixed_batch_scores_calls_before_and_after_them(
    settings: Settings,
) -> None:
    client = prepare_store(settings)
    try:
        pipeline = build_pipeline(settings, client)

        def line(d: dict[str, Any]) -> RawMessage:
            return RawMessage(orjson.dumps(d), "f")

        def sc(eid: str, value: Any, **kw: Any) -> dict[str, Any]:
            return {"kind": "score", "event_id": eid, "name": "hallucination", "value": value,
                    "source": "eval", "timestamp": BASE_MS + 9_000, **kw}  # fmt: skip

        first = pipeline.handle(
            [line(sc("evt-1", True)), line(event(1)), line(event(2, scores={"relevance": 0.9})),
             line(sc("evt-2", False)), line({"kind": "score", "event_id": "evt-2"})]
        )  # fmt: skip
        assert first.stats.accepted == 2 and first.stats.rejected_total == 0
        ids = {r.score_id for r, _ in first.scores.scored}
        assert len(ids) == 3  # two marked scores and one inline, all folded
        second = pipeline.handle([line(sc("evt-1", True)), line(sc("evt-9", 0.2))])
        assert second.scores.scored == []
        rows = client.rows(
            "SELECT event_id, source, call_known FROM scores FINAL ORDER BY event_id, source"
        )
        assert [tuple(r) for r in rows] == [
            ("evt-1", "eval", 1),
            ("evt-2", "eval", 1),
            ("evt-2", "trace", 1),
            ("evt-9", "eval", 0),
        ]
        assert client.rows("SELECT count() FROM rejected_events")[0][0] == 1
        stats = pipeline.scores.stats  # type: ignore[union-attr]
        assert (stats.accepted, stats.duplicates, stats.unknown_calls) == (4, 1, 1)
        pipeline.close()
    finally:
        client.close()


@pytest.mark.parametrize("custom", [True, False])
def test_the_signal_window_falls_back_to_the_longest_spec_unless_set(custom: bool) -> None:
    from llmpulse.errors import ConfigError
    from llmpulse.scores.build import quality_config

    kw: dict[str, Any] = {"windows": {"specs": [(10, 5), (30, 10)]}}
    if custom:
        kw["scores"] = {"signal_window_s": 300}
        with pytest.raises(ConfigError, match=r"scores\.signal_window_s"):
            quality_config(Settings(**kw))
    else:
        assert quality_config(Settings(**kw)).signal_window_s == 30
