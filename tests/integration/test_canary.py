"""The continuous canary core, the replay split, and comparisons read through a
worker's read-only SQL endpoint."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from typing import Any

import orjson

from llmpulse.compare.canary import CanaryMonitor
from llmpulse.compare.run import Request, run_comparison
from llmpulse.errors import StoreLockedError
from llmpulse.processors.batch_cost import price_batch
from llmpulse.processors.batch_validate import validate_batch
from llmpulse.processors.cost import PriceTable
from llmpulse.schemas.batch import TraceBatch
from llmpulse.scores.records import CallInfo, ScoreRecord
from llmpulse.settings import CanaryPair, CompareSettings, Settings
from llmpulse.store.client import SerialClient
from llmpulse.store.encode import traces_table
from llmpulse.store.readonly import encode_result, run_readonly
from llmpulse.synth.traffic import TrafficConfig, TrafficGenerator
from tests.helpers import QuietHandler

START = 1_767_225_600_000


def events(minutes: int = 10, slow: float = 1.5) -> list[dict[str, Any]]:
    cfg = TrafficConfig(
        services=["chat-api"],
        endpoints=["/v1/chat"],
        models=["gpt-4o-mini"],
        prompt_versions=["v2", "v3"],
        variants=["A", "B"],
    )
    out = list(
        TrafficGenerator(cfg, seed=3, start_ms=START, rate_per_s=25).events_between(
            START, START + minutes * 60_000
        )
    )
    for e in out:
        if e["prompt_version"] == "v3":
            e["latency_ms"] *= slow
    return out


def batches(evs: list[dict[str, Any]], size: int = 3000) -> Iterator[TraceBatch]:
    prices = PriceTable.default()
    for i in range(0, len(evs), size):
        part = evs[i : i + size]
        b = validate_batch([orjson.dumps(e) for e in part], ["t"] * len(part)).batch
        price_batch(prices, b)
        yield b


PAIR = CanaryPair(
    name="prompt-v3", baseline={"prompt_version": "v2"}, candidate={"prompt_version": "v3"}
)
AA = CanaryPair(name="aa", baseline={"variant": "A"}, candidate={"variant": "B"},
                where={"prompt_version": "v2"})  # fmt: skip


def test_the_monitor_fails_the_slow_candidate_and_passes_an_a_a_pair() -> None:
    mon = CanaryMonitor([PAIR, AA], CompareSettings(bootstrap=200), rollback=True)
    evs = events()
    for b in batches(evs):
        mon.observe(b)
    last = max(e["timestamp"] for e in evs)
    slow, aa = mon.evaluate(last)
    assert slow.comparison.overall == "fail" and slow.failed_metrics == ["latency"]
    assert aa.comparison.overall == "pass", [
        (m.metric, m.verdict, m.reason) for m in aa.comparison.metrics
    ]
    sigs = {(s.labels["pair"], s.labels["metric"]): s.value for s in mon.signals([slow, aa])}
    assert sigs[("prompt-v3", "latency")] == 1.0
    assert sigs[("prompt-v3", "error_rate")] == 0.0 and sigs[("aa", "latency")] == 0.0
    [event] = mon.control_events([slow, aa])
    assert (event["action"], event["candidate"], event["failed_metrics"]) == (
        "rollback",
        {"prompt_version": "v3"},
        ["latency"],
    )
    rows = mon.rows([slow], datetime(2026, 1, 2, tzinfo=UTC))
    assert len(rows) == len(slow.comparison.metrics) and rows[0][2] == "canary:prompt-v3"
    # An hour later with no traffic the horizon is empty: nothing to judge, no signal.
    [later] = mon.evaluate(last + 2 * 3_600_000)[:1]
    assert later.comparison.overall == "inconclusive"
    assert mon.signals([later]) == [] and mon.arm_sizes()["prompt-v3"] == (0, 0)


def test_late_scores_join_the_arm_of_their_call() -> None:
    mon = CanaryMonitor([PAIR], CompareSettings(), horizon_ms=10**9)
    b = next(batches(events(minutes=1)))
    mon.observe(b)
    v3 = next(i for i, pv in enumerate(b.objects["prompt_version"].tolist()) if pv == "v3")
    eid = b.event_id[v3]
    call = CallInfo(eid, int(b.timestamp_ms[v3]), {})
    mon.observe_scores([(ScoreRecord("s1", "thumbs", 1.0, 0, "user_feedback", eid), call)])
    stranger = CallInfo("not-observed", int(b.timestamp_ms[v3]), {})
    mon.observe_scores([(ScoreRecord("s2", "thumbs", 0.0, 0, "user_feedback", "x"), stranger)])
    arm = mon._arms["prompt-v3"][1].arm()
    assert arm.scores["thumbs"].tolist() == [1.0]
    assert "thumbs" not in mon._arms["prompt-v3"][0].arm().scores


def test_compare_through_a_worker_endpoint_reads_but_does_not_store(
    settings: Settings, client: SerialClient
) -> None:
    evs = events(minutes=6)
    for b in batches(evs):
        client.insert_arrow(
            "traces", traces_table(b, datetime(2026, 1, 2, tzinfo=UTC), store_text=False)
        )

    class Sql(QuietHandler):
        def do_POST(self) -> None:
            sql = self.rfile.read(int(self.headers["Content-Length"])).decode()
            self.reply(200, encode_result(run_readonly(client, sql)), content_type=None)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sql)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        s = settings.model_copy(update={"sql_url": f"http://127.0.0.1:{server.server_address[1]}"})

        def locked(_: Settings) -> SerialClient:
            raise StoreLockedError("chdb://x", "in use by the worker")

        out = run_comparison(
            s,
            Request({"prompt_version": "v2"}, {"prompt_version": "v3"}, {}),
            open_store=locked,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert out.stored is False and "read-only" in out.note
    assert out.comparison.metric("latency").verdict == "fail"
    assert client.rows("SELECT count() FROM comparisons")[0][0] == 0
    direct = run_comparison(
        settings,
        Request({"prompt_version": "v2"}, {"prompt_version": "v3"}, {}),
        open_store=lambda _: SerialClient(client.raw, client.dsn),
    )
    assert direct.stored is True
    assert [m.verdict for m in direct.comparison.metrics] == [
        m.verdict for m in out.comparison.metrics
    ]


def test_without_raw_rows_latency_is_compared_from_the_window_sketches(
    settings: Settings, client: SerialClient
) -> None:
    from llmpulse.processors.traces import RawMessage
    from llmpulse.runtime import build_pipeline

    s = settings.model_copy(
        update={
            "drift": settings.drift.model_copy(update={"enabled": False}),
            "alerts": settings.alerts.model_copy(update={"enabled": False}),
        }
    )
    cfg = TrafficConfig(services=["chat-api"], endpoints=["/v1/chat"],
                        models=["gpt-4o-mini", "gpt-4o"])  # fmt: skip
    evs = list(
        TrafficGenerator(cfg, seed=4, start_ms=START, rate_per_s=20).events_between(
            START, START + 600_000
        )
    )
    for e in evs:
        if e["model"] == "gpt-4o":
            e["latency_ms"] = e["latency_ms"] * 1.5
    pipeline = build_pipeline(s, client, restore=False)
    msgs = [RawMessage(orjson.dumps(e), f"f:{i}") for i, e in enumerate(evs)]
    for i in range(0, len(msgs), 2000):
        pipeline.handle(msgs[i : i + 2000])
    pipeline.flush()
    client.command("TRUNCATE TABLE traces")
    out = run_comparison(
        s,
        Request({"model": "gpt-4o-mini"}, {"model": "gpt-4o"}, {}),
        open_store=lambda _: SerialClient(client.raw, client.dsn),
    )
    latency = out.comparison.metric("latency")
    assert latency.verdict == "fail" and latency.details["candidate_source"] == "sketch"
    exact = sorted(e["latency_ms"] for e in evs if e["model"] == "gpt-4o")
    p50 = exact[len(exact) // 2]
    assert abs(latency.candidate / p50 - 1) < 0.02  # the sketch's 1 % plus rank rounding
    assert "error_rate" in out.comparison.skipped


def test_the_monitor_from_settings() -> None:
    from llmpulse.compare.canary import canary_monitor

    s = Settings(canary={"pairs": [PAIR.model_dump()], "horizon_s": 600, "rollback": True})
    mon = canary_monitor(s)
    assert mon is not None and mon.horizon_ms == 600_000 and mon.rollback
    assert list(mon.arm_sizes()) == ["prompt-v3"]
