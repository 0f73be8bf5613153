"""Drift core: embedder, reference, detectors, monitor, storage rows, bench streams."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest

from llmpulse.bench.drift import SCENARIOS, TopicModel, format_table, make_stream
from llmpulse.detectors import (
    DriftDetector,
    DriftEvent,
    DriftMonitor,
    HashingEmbedder,
    Reference,
    ScalarDriftDetector,
    alert_signals,
)
from llmpulse.detectors.combine import to_ms
from llmpulse.detectors.storage import (
    DRIFT_BASELINE_COLUMNS,
    DRIFT_DDL,
    DRIFT_EVENT_COLUMNS,
    DRIFT_SCORE_COLUMNS,
    baseline_row,
    drift_event_row,
    drift_score_row,
)
from llmpulse.errors import ConfigError
from llmpulse.schemas.event import TraceEvent

BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def feed(det: DriftDetector, x: np.ndarray, start: int = 0, batch: int = 1000) -> list[DriftEvent]:
    found: list[DriftEvent] = []
    times = start + np.arange(x.shape[0], dtype=np.int64)
    for a in range(0, x.shape[0], batch):
        found.extend(det.update_many(x[a : a + batch], times[a : a + batch]))
    return found


# -- embedder ------------------------------------------------------------------------


@pytest.mark.slow  # seconds long: run by `make test`, not by `make unit`
def test_embedder_is_deterministic_across_processes_and_instances() -> None:
    text = "Résumé: how do I rotate my API key? 🙂"
    here = HashingEmbedder(dim=128, seed=3).embed(text)
    code = (
        "from llmpulse.detectors.embedder import HashingEmbedder;"
        f"print(HashingEmbedder(dim=128, seed=3).embed({text!r}).tolist())"
    )
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            check=True,
            text=True,
            env={"PYTHONHASHSEED": hash_seed, "PATH": "/usr/bin:/bin"},
        )
        assert np.array_equal(np.array(orjson.loads(out.stdout)), here)
    assert not np.array_equal(HashingEmbedder(dim=128, seed=4).embed(text), here)


def test_embedder_similarity_and_batch() -> None:
    emb = HashingEmbedder()
    texts = [
        "How do I reset my password?",
        "how can I reset my password",
        "What is the refund policy for annual plans?",
        "",
    ]
    m = emb.embed_many(texts)
    assert m.shape == (4, 384)
    assert np.allclose(np.linalg.norm(m[:3], axis=1), 1.0)
    assert not m[3].any()  # no n-gram: zero vector, skipped by detectors
    assert m[0] @ m[1] > 0.6
    assert abs(m[0] @ m[2]) < 0.3
    for i, t in enumerate(texts):
        assert np.allclose(emb.embed(t), m[i])


def test_embedder_is_fast_enough() -> None:
    emb = HashingEmbedder()
    texts = [
        f"customer {i} asks how to configure billing alerts for project {i % 97}"
        for i in range(4000)
    ]
    import time

    t = time.perf_counter()
    emb.embed_many(texts)
    assert 4000 / (time.perf_counter() - t) > 5000


def test_sentence_transformer_missing_is_a_clear_error() -> None:
    try:
        import sentence_transformers  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        from llmpulse.detectors.embedder import SentenceTransformerEmbedder

        with pytest.raises(ConfigError, match="sentence-transformers is not installed"):
            SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    else:
        pytest.skip("sentence-transformers installed")


# -- reference -------------------------------------------------------------------------


def test_reference_round_trip_is_exact() -> None:
    x = make_stream(96, "stationary", 0, n_pre=0, n_post=0)[0]
    ref = Reference.fit(x, seed=5)
    assert (ref.n, ref.dim, ref.k, ref.null_n) == (500, 96, 8, 250)
    again = Reference.from_json(ref.to_json())
    assert again.baseline_id == ref.baseline_id
    for name in ("centroid", "components", "feature_cov", "scalar_quantiles", "rff_freq"):
        assert np.array_equal(getattr(again, name), getattr(ref, name))
    probe = TopicModel(96, seed=0).sample(np.random.default_rng(9), 50)
    for a, b in zip(ref.transform(probe), again.transform(probe), strict=True):
        assert np.array_equal(a, b)
    # Same data, same seed: same id; another seed: another reference.
    assert Reference.fit(x, seed=5).baseline_id == ref.baseline_id
    assert Reference.fit(x, seed=6).baseline_id != ref.baseline_id
    payload = ref.to_dict()
    assert orjson.loads(orjson.dumps(payload)) == payload


def test_reference_rejects_bad_payloads_and_tiny_inputs() -> None:
    ref = Reference.fit(np.random.default_rng(0).normal(size=(100, 8)))
    bad = ref.to_dict() | {"version": 99}
    with pytest.raises(ConfigError):
        Reference.from_dict(bad)
    tampered = ref.to_dict() | {"projection_check": ref.projection_check + 1.0}
    with pytest.raises(ConfigError, match="re-baseline"):
        Reference.from_dict(tampered)
    with pytest.raises(ConfigError):
        Reference.fit(np.zeros((100, 8)))  # no usable (non-zero) rows


def test_null_statistics_grow_after_warmup() -> None:
    det = DriftDetector(warmup=500, null_target=1500, seed=0)
    x = make_stream(64, "stationary", 1, n_pre=2000, n_post=0)[0]
    feed(det, x[:500])
    assert det.reference is not None and det.reference.null_n == 250 and not det.calibrated
    feed(det, x[500:], start=500)
    assert det.reference.null_n == 1500 and det.calibrated
    assert len({r.baseline_id for r in det.baselines}) == 2  # warm-up one, calibrated one


# -- embedding drift: scenarios and false alarms ------------------------------------------

# Delay bounds (events after the change) with margin over the measured medians.
DELAY_BOUND = {
    "topic_shift_30": 150,  # the target
    "new_topic_20": 300,
    "mean_shift": 800,
    "covariance": 150,
    "gradual": 2000,
}


@pytest.mark.slow  # seconds long: run by `make test`, not by `make unit`
@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s != "stationary"])
def test_scenario_detected_within_delay(scenario: str) -> None:
    x, t0 = make_stream(384, scenario, seed=11)
    det = DriftDetector("prompt_embedding", seed=0)
    found = feed(det, x)
    assert found, f"{scenario}: no detection"
    first = to_ms(found[0].event_time)
    assert first >= t0, f"{scenario}: false alarm at {first} before the change at {t0}"
    assert first - t0 <= DELAY_BOUND[scenario], (scenario, first - t0, found[0].detector)
    assert found[0].baseline_id == det.reference.baseline_id  # type: ignore[union-attr]


@pytest.mark.slow  # seconds long: run by `make test`, not by `make unit`
def test_stationary_streams_raise_no_alarm() -> None:
    # 200,000 events at 64 dimensions and 40,000 at 768, with different seeds.
    for dim, n, seed in ((64, 200_000, 21), (768, 40_000, 22)):
        x = make_stream(dim, "stationary", seed, n_pre=n, n_post=0)[0]
        det = DriftDetector(seed=seed)
        assert feed(det, x, batch=5000) == [], dim
        assert det.online_alarms <= 1
        assert det.calibrated


def test_detection_is_deterministic_and_single_updates_match_batches() -> None:
    x, _ = make_stream(32, "topic_shift_30", seed=3, n_pre=1500, n_post=800)
    a = feed(DriftDetector(seed=1), x)
    b = feed(DriftDetector(seed=1), x, batch=37)
    single = DriftDetector(seed=1)
    c = [e for i in range(x.shape[0]) if (e := single.update(x[i], i, f"id{i}")) is not None]
    assert a and [e.drift_id for e in a] == [e.drift_id for e in b] == [e.drift_id for e in c]
    assert c[0].event_id == f"id{to_ms(c[0].event_time)}"


@pytest.mark.slow  # seconds long: run by `make test`, not by `make unit`
def test_cooldown_refires_persisting_drift_and_rebaseline_stops_it() -> None:
    x, t0 = make_stream(64, "topic_shift_30", seed=4, n_pre=2000, n_post=6000)
    det = DriftDetector(seed=0, cooldown=2000)
    found = feed(det, x)
    times = [to_ms(e.event_time) for e in found]
    assert times[0] >= t0
    assert all(b - a >= 2000 for a, b in itertools.pairwise(times))
    assert 2 <= len(found) <= 4  # persisting drift: once per cool-down

    auto = DriftDetector(seed=0, auto_rebaseline=True)
    found = feed(auto, x)
    assert len(found) == 1  # the new regime became the reference
    assert auto.reference is not None and auto.reference.baseline_id != found[0].baseline_id


def test_pinned_reference_skips_warmup_and_bad_vectors_are_skipped() -> None:
    tm = TopicModel(48, seed=2)
    rng = np.random.default_rng(2)
    ref = Reference.fit(tm.sample(rng, 4000))
    det = DriftDetector(reference=ref)
    assert not det.warming_up and det.calibrated  # 2,000 held-out rows
    x = tm.sample(rng, 300)
    x[5] = 0.0
    x[6, 0] = np.nan
    assert det.update_many(x, np.arange(300)) == []
    assert det.skipped == 2
    assert det.update_many(np.ones((3, 12)), [1, 2, 3]) == []  # other dimension
    assert det.skipped == 5
    with pytest.raises(ConfigError):
        DriftDetector(detector="cusum")


@pytest.mark.slow  # seconds long: run by `make test`, not by `make unit`
@pytest.mark.parametrize("kind", ["kswin", "page_hinkley"])
def test_other_online_detectors_are_selectable(kind: str) -> None:
    x, t0 = make_stream(64, "covariance", seed=5, n_pre=1500, n_post=1500)
    found = feed(DriftDetector(detector=kind, seed=0), x)
    assert found and to_ms(found[0].event_time) >= t0


# -- scalar drifts ------------------------------------------------------------------------


def test_finish_reason_mix_shift() -> None:
    rng = np.random.default_rng(0)
    det = ScalarDriftDetector("finish_reason", kind="categorical", seed=0)
    cats = np.array(["stop", "length", "content_filter", "tool_calls"])
    before = cats[rng.choice(4, p=[0.85, 0.08, 0.02, 0.05], size=20_000)].tolist()
    after = cats[rng.choice(4, p=[0.77, 0.08, 0.10, 0.05], size=3000)].tolist()
    assert det.update_many(before, np.arange(20_000)) == []
    found = det.update_many(after, 20_000 + np.arange(3000))
    assert found and to_ms(found[0].event_time) - 20_000 < 600
    assert found[0].signal == "finish_reason"
    windows = list(det.window_scores)
    assert windows[-1].detector == "fisher" and 0.0 <= windows[-1].value <= 1.0


def test_output_length_shift_and_stationary_scalars() -> None:
    rng = np.random.default_rng(1)
    det = ScalarDriftDetector("output_tokens", seed=0)
    base = rng.lognormal(5.0, 0.8, 50_000).round()
    assert det.update_many(base.tolist(), np.arange(50_000)) == []
    longer = rng.lognormal(5.3, 0.8, 2000).round()
    found = det.update_many(longer.tolist(), 50_000 + np.arange(2000))
    assert found and to_ms(found[0].event_time) - 50_000 < 600  # +35 % tokens: median ~330


def test_score_mean_drop_and_error_rate() -> None:
    rng = np.random.default_rng(2)
    score = ScalarDriftDetector("score:faithfulness", seed=0)
    good = np.clip(rng.normal(0.9, 0.08, 10_000), 0, 1)
    worse = np.clip(rng.normal(0.85, 0.08, 2000), 0, 1)
    assert score.update_many(good.tolist(), np.arange(10_000)) == []
    found = score.update_many(worse.tolist(), 10_000 + np.arange(2000))
    assert found and to_ms(found[0].event_time) - 10_000 < 300
    assert found[0].details["p_value"] < 1e-3

    err = ScalarDriftDetector("error_rate", kind="categorical", categories=("ok", "error"))
    ok = np.where(rng.random(10_000) < 0.01, "error", "ok").tolist()
    bad = np.where(rng.random(3000) < 0.05, "error", "ok").tolist()
    assert err.update_many(ok, np.arange(10_000)) == []
    found = err.update_many(bad, 10_000 + np.arange(3000))
    assert found and to_ms(found[0].event_time) - 10_000 < 600


def test_rare_binary_score_does_not_false_alarm() -> None:
    rng = np.random.default_rng(3)
    det = ScalarDriftDetector("score:hallucination", seed=0)
    values = (rng.random(100_000) < 0.02).astype(float).tolist()
    assert det.update_many(values, np.arange(100_000)) == []


# -- monitor ---------------------------------------------------------------------------------


def _events(
    series: str, x: np.ndarray | None, start: int, *, texts: list[str] | None = None
) -> list[Any]:
    n = x.shape[0] if x is not None else len(texts or [])
    return [
        SimpleNamespace(
            timestamp_ms=BASE_MS + start + i,
            event_id=f"{series}-{start + i}",
            endpoint=series,
            model="m",
            prompt_version="v1",
            prompt=texts[i] if texts else None,
            response=None,
            prompt_embedding=x[i].tolist() if x is not None else None,
            response_embedding=None,
            output_tokens=200,
            finish_reason="stop",
            status="ok",
            scores={},
        )
        for i in range(n)
    ]


@pytest.mark.slow  # seconds long: run by `make test`, not by `make unit`
def test_monitor_isolates_series() -> None:
    drifting, t0 = make_stream(64, "topic_shift_30", seed=7, n_pre=2000, n_post=1500)
    steady = make_stream(64, "stationary", seed=8, n_pre=t0 - 500 + 1500, n_post=0)[0]
    mon = DriftMonitor(scalar_signals=())
    found: list[DriftEvent] = []
    for a in range(0, drifting.shape[0], 500):
        batch = _events("/a", drifting[a : a + 500], a) + _events("/b", steady[a : a + 500], a)
        found.extend(mon.observe(batch))
    assert found
    assert {e.labels["endpoint"] for e in found} == {"/a"}
    assert found[0].labels == {"endpoint": "/a", "model": "m", "prompt_version": "v1"}
    assert to_ms(found[0].event_time) - BASE_MS - t0 <= 150
    assert mon.n_series == 2 and mon.embedded == 0
    records = mon.drain_baselines()
    assert {r.labels["endpoint"] for r in records} == {"/a", "/b"}
    assert mon.drain_baselines() == []
    scores = mon.drain_window_scores()
    assert {s.signal for s in scores} == {"prompt_embedding"}

    # A stored baseline restored in a new monitor skips the warm-up.
    fresh = DriftMonitor(scalar_signals=())
    ref = next(r.reference for r in records if r.labels["endpoint"] == "/b")
    fresh.restore_baseline(
        {"endpoint": "/b", "model": "m", "prompt_version": "v1"}, "prompt_embedding", ref
    )
    det = fresh.detector(("/b", "m", "v1"), "prompt_embedding")
    assert det is not None and not det.warming_up


def _prompts(rng: np.random.Generator, n: int, topics: list[str]) -> list[str]:
    subjects = ["my invoice", "the dashboard", "an API key", "the mobile app", "two-factor login"]
    verbs = ["How do I", "Why can't I", "Is it possible to", "Please help me"]
    out = []
    for _ in range(n):
        topic = topics[rng.integers(len(topics))]
        out.append(
            f"{verbs[rng.integers(4)]} {topic} {subjects[rng.integers(5)]} "
            f"(ticket {rng.integers(100_000)})"
        )
    return out


def test_monitor_fills_missing_embeddings_from_text_and_detects_topic_shift() -> None:
    rng = np.random.default_rng(0)
    known = ["update", "cancel", "export", "share", "rename"]
    unseen = ["benchmark latency of", "translate to German", "summarise legal terms in"]
    mon = DriftMonitor(embedder=HashingEmbedder(dim=256), scalar_signals=("output_tokens",))
    found: list[DriftEvent] = []
    t0 = 3000
    for a in range(0, t0 + 1500, 500):
        texts = _prompts(rng, 500, known)
        if a >= t0:
            shifted = _prompts(rng, 500, unseen)
            mix = rng.random(500) < 0.3
            texts = [s if m else t for t, s, m in zip(texts, shifted, mix, strict=True)]
        found.extend(mon.observe(_events("/t", None, a, texts=texts)))
    assert mon.embedded == t0 + 1500
    emb = [e for e in found if e.signal == "prompt_embedding"]
    assert emb and to_ms(emb[0].event_time) - BASE_MS - t0 <= 150
    det = mon.detector(("/t", "m", "v1"), "prompt_embedding")
    assert det is not None and det.dim == 256


def test_monitor_with_trace_events_and_without_text() -> None:
    evs = [
        TraceEvent.model_validate(
            {
                "schema_version": 1,
                "event_id": f"e{i}",
                "timestamp": BASE_MS + i,
                "service": "chat",
                "model": "gpt-4o",
                "latency_ms": 10.0,
                "output_tokens": 100 + i % 7,
                "finish_reason": "stop",
                "scores": {"hallucination": float(i % 50 == 0)},
            }
        )
        for i in range(1200)
    ]
    mon = DriftMonitor(warmup=200, window=100, null_target=400)
    assert mon.observe(evs) == []
    assert mon.without_embedding == 2 * 1200 and mon.embedded == 0
    key = ("", "gpt-4o", "")
    assert "prompt_embedding" not in mon.signals(key)
    assert {"output_tokens", "finish_reason", "error_rate", "score:hallucination"} <= set(
        mon.signals(key)
    )
    signals = alert_signals([], mon.drain_window_scores())
    names = {s.name for s in signals}
    assert names == {"score_mean:hallucination", "hallucination_rate"}
    rate = [s for s in signals if s.name == "hallucination_rate"]
    assert all(abs(s.value - 0.02) < 0.03 for s in rate)


def test_monitor_caps_series() -> None:
    mon = DriftMonitor(max_series=2, scalar_signals=("output_tokens",))
    evs = [
        SimpleNamespace(timestamp_ms=BASE_MS, endpoint=f"/{i}", output_tokens=5) for i in range(5)
    ]
    mon.observe(evs)
    assert mon.n_series == 2 and mon.dropped_events == 3


# -- storage and alert signals ---------------------------------------------------------------


def test_storage_rows_match_ddl() -> None:
    x, _ = make_stream(32, "topic_shift_30", seed=1, n_pre=2000, n_post=600)
    labels = {"endpoint": "/chat", "model": "m", "prompt_version": "v1", "variant": "b"}
    det = DriftDetector(labels=labels, grouping="endpoint,model,prompt_version,variant")
    found = feed(det, x, start=BASE_MS)
    assert found
    now = datetime(2026, 1, 2, tzinfo=UTC)
    ref = det.reference
    assert ref is not None
    for row, cols in (
        (
            baseline_row(
                ref, labels=labels, grouping="g", signal="prompt_embedding", created_at=now
            ),
            DRIFT_BASELINE_COLUMNS,
        ),
        (drift_event_row(found[0], now), DRIFT_EVENT_COLUMNS),
        (drift_score_row(det.window_scores[-1], now), DRIFT_SCORE_COLUMNS),
    ):
        assert len(row) == len(cols)
        for value, (name, kind) in zip(row, cols, strict=True):
            if kind.startswith("DateTime64"):
                assert isinstance(value, datetime) and value.tzinfo is not None, name
            elif kind.startswith("Map"):
                assert isinstance(value, dict), name
            elif kind == "Float64":
                assert isinstance(value, float), name
            elif kind.startswith("UInt"):
                assert isinstance(value, int), name
            else:
                assert isinstance(value, str), name
    for ddl, cols in zip(
        DRIFT_DDL, (DRIFT_BASELINE_COLUMNS, DRIFT_EVENT_COLUMNS, DRIFT_SCORE_COLUMNS), strict=True
    ):
        assert all(f"{name} {kind}" in ddl for name, kind in cols)
    event_row = drift_event_row(found[0], now)
    assert event_row[0] == found[0].drift_id and event_row[5] == "/chat"
    assert (
        Reference.from_json(
            baseline_row(ref, labels=labels, grouping="g", signal="s", created_at=now)[-1]
        ).baseline_id
        == ref.baseline_id
    )
    assert orjson.loads(event_row[-2])["p_value"] < 1e-3


def test_alert_signals_for_detections() -> None:
    ev = DriftEvent(
        event_time=datetime(2026, 1, 1, tzinfo=UTC),
        signal="prompt_embedding",
        detector="combined",
        score=90.0,
        threshold=70.0,
        baseline_id="abc",
        details={"p_value": 1e-6},
        labels={"endpoint": "/chat"},
    )
    (sig,) = alert_signals([ev])
    assert sig.name == "drift_detected" and sig.value == 1.0
    assert sig.labels == {"endpoint": "/chat", "signal": "prompt_embedding"}
    assert sig.extra == {"score": 90.0, "threshold": 70.0, "p_value": 1e-6}
    assert len(ev.drift_id) == 24


def test_bench_table_runs_small() -> None:
    from llmpulse.bench.drift import run_drift_bench

    rows = run_drift_bench(
        dims=(32,),
        seeds=range(1),
        scenarios=("covariance", "stationary"),
        n_stationary=3000,
        evidently=False,
        throughput=False,
    )
    table = format_table(rows)
    assert "covariance" in table and "all stationary events" in table
    assert all(not math.isnan(r["events_per_s"]) for r in rows if "events_per_s" in r)


def test_bank_scan_is_update_value_by_value() -> None:
    """The batch scan of the online detectors (river ADWIN's core mapped over a column,
    a fresh core after each detection) equals feeding them one value at a time."""
    from llmpulse.detectors.online import DetectorBank

    rng = np.random.default_rng(1)
    for _ in range(10):
        means = rng.normal(0, 3, 30)
        x = np.concatenate(
            [
                rng.normal(m, 1, int(n))
                for m, n in zip(means, rng.integers(20, 300, 30), strict=True)
            ]
        )
        x = np.column_stack([x, rng.normal(0, 1, len(x))])
        stepwise = DetectorBank(["a", "b"], delta=0.01, clock=1)
        batched = DetectorBank(["a", "b"], delta=0.01, clock=1)
        expected = [stepwise.update(r) for r in x.tolist()]
        got: list[int] = []
        i = 0
        while i < len(x):
            k = int(rng.integers(1, 200))
            got += batched.scan(x[i : i + k]).tolist()
            i += k
        assert got == expected
        assert sum(h >= 0 for h in got) > 5  # the detections (and resets) were exercised


@pytest.mark.parametrize("kind", ["numeric", "categorical", "embedding"])
def test_detections_do_not_depend_on_batch_boundaries(kind: str) -> None:
    """One event at a time or in random batches: the same detections, window scores
    and alarms (the event loop skips ahead over events where nothing can happen)."""

    def run(sizes: list[int]) -> tuple[object, ...]:
        rng = np.random.default_rng(7)
        if kind == "embedding":
            det: Any = DriftDetector("e", warmup=300, null_target=600, seed=0, cooldown=300)
            topics = 3.0 * np.eye(16)[:4]
            data: Any = topics[rng.choice([0, 1, 2], 1500)] + rng.normal(size=(1500, 16))
            data = np.vstack(
                [data, topics[rng.choice([0, 1, 2, 3], 1500)] + rng.normal(size=(1500, 16))]
            )
        elif kind == "numeric":
            det = ScalarDriftDetector("x", warmup=300, null_target=600, seed=0, cooldown=300)
            data = [*rng.lognormal(5, 0.5, 1500).tolist(), *rng.lognormal(5.5, 0.5, 1500).tolist()]
        else:
            det = ScalarDriftDetector("c", kind="categorical", warmup=300, null_target=600, seed=0,
                                      cooldown=300)  # fmt: skip
            data = [*rng.choice(["a", "b", "c"], 1500, p=[0.6, 0.3, 0.1]).tolist(),
                    *rng.choice(["a", "b", "c"], 1500, p=[0.3, 0.3, 0.4]).tolist()]  # fmt: skip
        found = []
        pos = 0
        for size in sizes:
            end = min(pos + size, 3000)
            found += det.update_many(data[pos:end], np.arange(pos, end) * 1000)
            pos = end
        # Sums over differently cut batches may differ in their last bits (and so the
        # ids hashing them): compare times, detectors and rounded values.
        scores = [(w.window_end, round(w.statistic, 6)) for w in det.window_scores]
        seen = [(d.event_time, d.detector, round(d.score, 6)) for d in found]
        return seen, scores, det.online_alarms

    rng = np.random.default_rng(3)
    random_sizes = rng.integers(1, 400, 100).tolist()
    whole = run([3000])
    assert whole[0]  # the shift is detected
    assert run([1] * 3000) == whole
    assert run(random_sizes) == whole
