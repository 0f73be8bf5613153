"""Late scores: the score path against a real chDB store (the contract and the fold in
memory: tests/unit/scores/test_stage.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from llmpulse.processors.batch_validate import validate_batch
from llmpulse.schemas.batch import TraceBatch
from llmpulse.scores.quality import QualityFolder
from llmpulse.scores.stage import ScoreStage
from llmpulse.scores.store import ClickHouseScoreStore
from llmpulse.store.client import SerialClient
from llmpulse.store.encode import traces_table
from tests.helpers import BASE_MS, event
from tests.unit.scores.test_stage import NOW, cfg, msgs, score


def store_traces(client: SerialClient, events: list[dict[str, Any]]) -> TraceBatch:
    batch = validate_batch([orjson.dumps(e) for e in events], ["t"] * len(events)).batch
    client.insert_arrow("traces", traces_table(batch, NOW, store_text=False))
    return batch


def stage_for(client: SerialClient, **kw: Any) -> ScoreStage:
    folder = QualityFolder(cfg(alert_delay_ms=0))
    return ScoreStage(folder, ClickHouseScoreStore(client), clock=lambda: NOW, **kw)


def quality(
    client: SerialClient, grouping: str = "tenant"
) -> dict[tuple[str, int], tuple[Any, ...]]:
    rows = client.rows(
        "SELECT tenant, toUnixTimestamp(window_start), scores, mean, below, rate_below "
        "FROM window_quality WHERE grouping = {g:String} AND window_seconds = 60 "
        "AND score_name = 'hallucination' ORDER BY window_start",
        {"g": grouping},
    )
    return {(r[0], r[1]): r[2:] for r in rows}


def test_late_scores_change_the_windows_of_their_calls_exactly_once(client: SerialClient) -> None:
    store_traces(client, [event(i, tenant="acme") for i in range(10)])  # calls at +0..0.9 s
    stage = stage_for(client)
    first = [score(f"evt-{i}", value=float(i % 2)) for i in range(10)]
    out = stage.handle(msgs(first[:6]))
    assert (out.stats.accepted, out.stats.folded, out.stats.unknown_calls) == (6, 6, 0)
    q = quality(client)
    window = ("acme", BASE_MS // 1000)
    assert q[window] == (6, 0.5, 3, 0.5)

    # Redelivered in another split, with the rest: only the 4 new scores count.
    again = stage_for(client)  # a restarted worker: no memory of what it folded
    out = again.handle(msgs(first[4:]))
    assert (out.stats.accepted, out.stats.duplicates, out.stats.folded) == (4, 2, 4)
    assert quality(client)[window] == (10, 0.5, 5, 0.5)
    again.handle(msgs(first))
    assert quality(client)[window] == (10, 0.5, 5, 0.5)
    assert client.rows("SELECT count() FROM scores FINAL")[0][0] == 10

    # The view joins the window statistics of the same windows by window_id.
    ids = client.rows(
        "SELECT DISTINCT window_id FROM window_scores WHERE grouping = 'tenant' "
        "AND window_seconds = 60 AND window_start = toDateTime({s:UInt32})",
        {"s": BASE_MS // 1000},
    )
    from llmpulse.processors.windows import window_id_of

    assert ids == [(window_id_of(BASE_MS, 60, "tenant", {"tenant": "acme"}),)]


def test_a_crash_between_the_two_writes_does_not_count_twice(client: SerialClient) -> None:
    store_traces(client, [event(i, tenant="acme") for i in range(4)])

    class Crashing(ClickHouseScoreStore):
        def write_scores(self, rows: Sequence[Sequence[Any]], token: str) -> None:
            raise ConnectionError("crash after the partials were written")

    folder = QualityFolder(cfg(alert_delay_ms=0))
    crashing = ScoreStage(folder, Crashing(client), clock=lambda: NOW)
    with pytest.raises(ConnectionError):
        crashing.handle(msgs([score(f"evt-{i}", value=1.0) for i in range(4)]))
    assert client.rows("SELECT count() FROM scores")[0][0] == 0
    out = stage_for(client).handle(msgs([score(f"evt-{i}", value=1.0) for i in range(4)]))
    assert (out.stats.accepted, out.stats.folded) == (4, 0)
    assert quality(client)[("acme", BASE_MS // 1000)] == (4, 1.0, 0, 0.0)
    assert client.rows("SELECT count() FROM scores FINAL WHERE call_known = 1")[0][0] == 4


def test_a_score_before_its_call_is_kept_counted_and_folded_when_the_call_comes(
    client: SerialClient,
) -> None:
    stage = stage_for(client)
    early = [score("evt-1"), score("", trace_id="tr-2", span_id="sp-2", value=1.0)]
    out = stage.handle(msgs(early))
    assert (out.stats.accepted, out.stats.unknown_calls, stage.pending) == (2, 2, 2)
    assert client.rows("SELECT count() FROM scores FINAL WHERE call_known = 0")[0][0] == 2
    assert quality(client) == {}

    batch = store_traces(
        client, [event(1, tenant="acme"), event(2, tenant="acme", trace_id="tr-2", span_id="sp-2")]
    )
    out = stage.observe_calls(batch)
    assert (out.stats.resolved_late, stage.pending) == (2, 0)
    assert quality(client)[("acme", BASE_MS // 1000)] == (2, 0.5, 1, 0.5)
    rows = client.rows("SELECT call_event_id, call_known FROM scores FINAL ORDER BY call_event_id")
    assert rows == [("evt-1", 1), ("evt-2", 1)]
    # The alert signals of the window come once event time passes it.
    later = store_traces(client, [event(900, tenant="acme")])  # +90 s
    sigs = stage.observe_calls(later).signals
    names = {(s.name, s.labels.get("tenant")) for s in sigs}
    assert ("hallucination_rate", "acme") in names


def test_sweep_after_a_restart_folds_what_memory_forgot(client: SerialClient) -> None:
    stage_for(client).handle(msgs([score("evt-3", value=1.0)]))
    store_traces(client, [event(3, tenant="acme")])
    fresh = stage_for(client)  # the restarted worker never saw the call batch
    out = fresh.sweep(datetime(2025, 12, 1, tzinfo=UTC))
    assert out.stats.resolved_late == 1
    assert quality(client)[("acme", BASE_MS // 1000)] == (1, 1.0, 0, 0.0)
    assert fresh.sweep(datetime(2025, 12, 1, tzinfo=UTC)).stats.resolved_late == 0


def test_rejected_scores_go_to_rejected_events(client: SerialClient) -> None:
    out = stage_for(client).handle(msgs([score(value="bad"), score()], topic="llm.scores"))
    assert [r.field for r in out.rejections] == ["value"]
    rows = client.rows("SELECT source, field FROM rejected_events")
    assert rows == [("llm.scores/0@0", "value")]
