"""Embedding drift benchmark: synthetic streams with known change points.

Streams imitate sentence embeddings: events are noisy copies of topic
directions that share a common component (pairwise cosine about 0.2 between
random events, about 0.5 within a topic), with anisotropic noise. Each run has
a warm-up, a stationary stretch, then a change at a known event ``t0``:

* ``topic_shift_30``: 30 % of events move to three topics the reference never saw;
* ``new_topic_20``: one unseen topic takes 20 % of the traffic;
* ``mean_shift``: every embedding moves by 0.2 toward a fixed new direction
  (cosine between an event and its moved copy about 0.98);
* ``covariance``: the spread within every topic grows by 25 %;
* ``gradual``: the share of unseen topics grows linearly from 0 to 30 % over
  2,000 events (delay counted from the start of the ramp);
* ``stationary``: no change (controls for false alarms).

Per scenario: detection rate (a detection in ``[t0, t0 + n_post)``), median
and p90 delay in events, false alarms per 100,000 stationary events per series
(detections before ``t0`` and in the controls) and events per second of the
detector alone (stream generation excluded).

Evidently's embedding drift methods (``model``: a domain classifier, with the
bootstrap threshold its metric uses below 1,000 reference rows; ``ratio``;
``distance``; ``mmd``; all with their default thresholds) run on the same
warm-up reference and the same tumbling windows of 200 events, when
``evidently`` imports. They are batch methods: a window is flagged or not, so
their delay is counted at the end of the first flagged window.

>>> rows = run_drift_bench(dims=(32,), seeds=range(1), scenarios=("topic_shift_30",),
...                        n_stationary=0, evidently=False, throughput=False)
>>> rows[0]["scenario"], rows[0]["method"], rows[0]["runs"]
('topic_shift_30', 'llmpulse', 1)
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmpulse._types import FloatArray
from llmpulse.detectors.combine import DriftDetector

Progress = Callable[[str], None]

SCENARIOS: tuple[str, ...] = (
    "topic_shift_30",
    "new_topic_20",
    "mean_shift",
    "covariance",
    "gradual",
    "stationary",
)
WARMUP = 500
WINDOW = 200
N_PRE = 2500  # stationary events after warm-up, before the change
N_POST = 3000
GRADUAL_RAMP = 2000
BATCH = 1000
EVIDENTLY_METHODS: tuple[str, ...] = ("model", "ratio", "distance", "mmd")


class TopicModel:
    """A seeded generator of embedding-like vectors drawn from a mix of topics.

    >>> tm = TopicModel(64, seed=0)
    >>> x = tm.sample(np.random.default_rng(0), 5)
    >>> x.shape, bool(np.allclose(np.linalg.norm(x, axis=1), 1.0))
    ((5, 64), True)
    """

    def __init__(
        self, dim: int, *, n_seen: int = 10, n_unseen: int = 4, seed: int = 0, rank: int = 48
    ) -> None:
        rng = np.random.default_rng([seed, dim, 77])
        self.dim = dim
        common = rng.standard_normal(dim)
        common /= np.linalg.norm(common)
        dirs = rng.standard_normal((n_seen + n_unseen, dim))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        centers = 0.6 * common + 0.8 * dirs
        self.centers = centers / np.linalg.norm(centers, axis=1, keepdims=True)
        self.n_seen = n_seen
        self.weights = rng.dirichlet(np.full(n_seen, 3.0))
        r = min(rank, dim)
        q, _ = np.linalg.qr(rng.standard_normal((dim, r)))
        lam = np.arange(1, r + 1, dtype=np.float64) ** -0.7
        self.basis = (q * np.sqrt(lam / lam.sum())).T  # (r, dim): anisotropic noise
        shift = rng.standard_normal(dim)
        self.shift_dir = shift / np.linalg.norm(shift)

    def sample(
        self,
        rng: np.random.Generator,
        n: int,
        *,
        unseen_share: float | FloatArray = 0.0,
        unseen_topics: Sequence[int] | None = None,
        spread: float = 1.0,
        shift: float = 0.0,
    ) -> FloatArray:
        topics = rng.choice(self.n_seen, p=self.weights, size=n)
        share = np.broadcast_to(np.asarray(unseen_share, dtype=np.float64), (n,))
        if share.any():
            pool = (
                np.arange(self.n_seen, self.centers.shape[0])
                if unseen_topics is None
                else np.asarray(unseen_topics)
            )
            new = rng.random(n) < share
            topics = np.where(new, rng.choice(pool, size=n), topics)
        noise = 0.8 * spread * (rng.standard_normal((n, self.basis.shape[0])) @ self.basis)
        noise += 0.6 * spread * rng.standard_normal((n, self.dim)) / math.sqrt(self.dim)
        x = self.centers[topics] + noise
        if shift:
            x += shift * self.shift_dir
        out: FloatArray = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out


def make_stream(
    dim: int, scenario: str, seed: int, *, n_pre: int = N_PRE, n_post: int = N_POST
) -> tuple[FloatArray, int]:
    """(embeddings, t0): warm-up + n_pre stationary events, then n_post changed ones."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {SCENARIOS}")
    tm = TopicModel(dim, seed=seed)
    rng = np.random.default_rng([seed, dim, 1])
    t0 = WARMUP + n_pre
    before = tm.sample(rng, t0)
    kwargs: dict[str, Any] = {}
    if scenario == "topic_shift_30":
        kwargs = {"unseen_share": 0.3, "unseen_topics": [10, 11, 12]}
    elif scenario == "new_topic_20":
        kwargs = {"unseen_share": 0.2, "unseen_topics": [13]}
    elif scenario == "mean_shift":
        kwargs = {"shift": 0.2}
    elif scenario == "covariance":
        kwargs = {"spread": 1.25}
    elif scenario == "gradual":
        kwargs = {
            "unseen_share": np.minimum(np.arange(n_post) / GRADUAL_RAMP, 1.0) * 0.3,
            "unseen_topics": [10, 11, 12],
        }
    after = tm.sample(rng, n_post, **kwargs)
    return np.vstack([before, after]), t0


@dataclass
class _Tally:
    runs: int = 0
    detected: int = 0
    delays: list[float] | None = None
    false_alarms: int = 0
    stationary_events: int = 0
    events: int = 0
    seconds: float = 0.0
    note: str = ""

    def __post_init__(self) -> None:
        self.delays = []


def _run_llmpulse(
    x: FloatArray, t0: int, seed: int, options: dict[str, Any]
) -> tuple[list[int], float]:
    det = DriftDetector("prompt_embedding", seed=seed, **options)
    times = np.arange(x.shape[0], dtype=np.int64)
    hits: list[int] = []
    start = time.perf_counter()
    for a in range(0, x.shape[0], BATCH):
        for ev in det.update_many(x[a : a + BATCH], times[a : a + BATCH]):
            hits.append(int(ev.event_time.timestamp() * 1000 + 0.5))
    return hits, time.perf_counter() - start


def _evidently_methods() -> tuple[dict[str, Any], str]:
    """Evidently's embedding drift methods, or an explanation of why they are unavailable."""
    # Imported by name: both are optional bench extras without type stubs.
    try:
        pd_common: Any = importlib.import_module("pandas.core.dtypes.common")
        # evidently 0.7.x imports a helper that pandas 3 removed, in a module its
        # embedding drift methods do not use: shim it so the comparison can run.
        if not hasattr(pd_common, "infer_dtype_from_object"):
            pd_common.infer_dtype_from_object = lambda dtype: dtype
        edm: Any = importlib.import_module(
            "evidently.legacy.metrics.data_drift.embedding_drift_methods"
        )
        version = str(getattr(importlib.import_module("evidently"), "__version__", "?"))
    except Exception as exc:  # any import failure means "not available", said in the row
        return {}, f"evidently not importable: {type(exc).__name__}: {exc}"[:200]
    return (
        {
            "model": edm.model(bootstrap=True),
            "ratio": edm.ratio(),
            "distance": edm.distance(),
            "mmd": edm.mmd(),
        },
        f"evidently {version}",
    )


def _run_evidently(
    methods: dict[str, Any], x: FloatArray, t0: int, max_windows: int, stationary: bool
) -> dict[str, tuple[list[tuple[int, bool]], float]]:
    """Per method: (window end, flagged) for the evaluated windows, and seconds spent."""
    pd: Any = importlib.import_module("pandas")
    ref = pd.DataFrame(x[:WARMUP])
    ends = list(range(WARMUP + WINDOW, x.shape[0] + 1, WINDOW))
    if not stationary:
        # Two stationary windows before the change, then windows after it.
        first = max(0, next(i for i, e in enumerate(ends) if e > t0) - 2)
        ends = ends[first:]
    ends = ends[:max_windows]
    out: dict[str, tuple[list[tuple[int, bool]], float]] = {}
    for name, method in methods.items():
        flags: list[tuple[int, bool]] = []
        start = time.perf_counter()
        for end in ends:
            cur = pd.DataFrame(x[end - WINDOW : end])
            _, drifted, _ = method(cur.copy(), ref.copy())
            flags.append((end, bool(drifted)))
        out[name] = (flags, time.perf_counter() - start)
    return out


def run_drift_bench(
    dims: Iterable[int] = (64, 384, 768),
    seeds: Iterable[int] = range(5),
    scenarios: Iterable[str] = SCENARIOS,
    n_stationary: int = 100_000,
    progress: Progress | None = None,
    *,
    evidently: bool = True,
    evidently_seeds: int = 3,
    evidently_windows: int = 8,
    throughput: bool = True,
    detector_options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run every (dim, scenario, seed); one row per (dim, scenario, method).

    ``n_stationary``: events of each stationary control run (after warm-up).
    Evidently runs on the first ``evidently_seeds`` seeds and at most
    ``evidently_windows`` windows per run (it costs up to a second per window).
    """
    say = progress or (lambda _msg: None)
    options = {"warmup": WARMUP, "window": WINDOW, **(detector_options or {})}
    seeds = list(seeds)
    scenarios = list(scenarios)
    methods, ev_note = _evidently_methods() if evidently else ({}, "evidently skipped")
    # Lazy imports (river, scipy.stats) must not count against the first run's events/s.
    _run_llmpulse(make_stream(16, "stationary", 0, n_pre=500, n_post=0)[0], 0, 0, options)
    rows: list[dict[str, Any]] = []
    for dim in dims:
        tallies: dict[tuple[str, str], _Tally] = {}
        for scenario in scenarios:
            for seed in seeds:
                stationary = scenario == "stationary"
                if stationary:
                    x, t0 = make_stream(dim, "stationary", seed, n_pre=n_stationary, n_post=0)
                    t0 = x.shape[0]
                else:
                    x, t0 = make_stream(dim, scenario, seed)
                hits, secs = _run_llmpulse(x, t0, seed, options)
                t = tallies.setdefault((scenario, "llmpulse"), _Tally())
                t.runs += 1
                t.events += x.shape[0]
                t.seconds += secs
                t.stationary_events += t0 - WARMUP
                t.false_alarms += sum(1 for h in hits if h < t0)
                after = [h - t0 for h in hits if h >= t0]
                if after and not stationary:
                    t.detected += 1
                    assert t.delays is not None
                    t.delays.append(after[0])
                say(f"dim={dim} {scenario} seed={seed}: llmpulse hits={hits[:3]} t0={t0}")
                if methods and seed in seeds[:evidently_seeds]:
                    res = _run_evidently(methods, x, t0, evidently_windows, stationary)
                    for name, (flags, esecs) in res.items():
                        et = tallies.setdefault(
                            (scenario, f"evidently:{name}"), _Tally(note=ev_note)
                        )
                        et.runs += 1
                        et.events += WINDOW * len(flags)
                        et.seconds += esecs
                        pre = [f for end, f in flags if end <= t0]
                        et.stationary_events += WINDOW * len(pre)
                        et.false_alarms += sum(pre)
                        post = [end - t0 for end, f in flags if end > t0 and f]
                        if post and not stationary:
                            et.detected += 1
                            assert et.delays is not None
                            et.delays.append(post[0])
                    say(f"dim={dim} {scenario} seed={seed}: evidently done")
        for (scenario, method), t in tallies.items():
            rows.append(_row(dim, scenario, method, t, scenario == "stationary"))
        if not methods and evidently:
            rows.append({"dim": dim, "scenario": "*", "method": "evidently", "note": ev_note})
        total = [t for (s, m), t in tallies.items() if m == "llmpulse"]
        fa = sum(t.false_alarms for t in total)
        events = sum(t.stationary_events for t in total)
        if throughput:
            rows.append(measure_throughput(dim))
            say(f"dim={dim}: throughput {rows[-1]['events_per_s']:,.0f} events/s")
        rows.append(
            {
                "dim": dim,
                "scenario": "all stationary events",
                "method": "llmpulse",
                "runs": sum(t.runs for t in total),
                "false_alarms": fa,
                "stationary_events": events,
                "fa_per_100k": 1e5 * fa / events if events else float("nan"),
                # Poisson 95 % upper bound: 3.0 events when none was seen.
                "fa_per_1M_upper95": 1e6 * _poisson_upper(fa) / events if events else float("nan"),
                "events_per_s": sum(t.events for t in total)
                / max(sum(t.seconds for t in total), 1e-9),
            }
        )
    return rows


def measure_throughput(dim: int, *, n: int = 30_000, repeats: int = 3) -> dict[str, Any]:
    """Steady-state events/s of ``DriftDetector.update_many`` (batches of 1,000, reference
    already fitted and calibrated), best of ``repeats``: the per-core figure to hold
    against the 20,000 embeddings/s target (run the process on one core to be strict)."""
    x = make_stream(dim, "stationary", 99, n_pre=n + 2500, n_post=0)[0]
    best = 0.0
    for _ in range(repeats):
        det = DriftDetector("prompt_embedding", warmup=WARMUP, window=WINDOW)
        times = np.arange(x.shape[0], dtype=np.int64)
        det.update_many(x[:3000], times[:3000])  # warm-up and calibration
        start = time.perf_counter()
        for a in range(3000, x.shape[0], BATCH):
            det.update_many(x[a : a + BATCH], times[a : a + BATCH])
        best = max(best, (x.shape[0] - 3000) / (time.perf_counter() - start))
    return {
        "dim": dim,
        "scenario": "throughput (steady state)",
        "method": "llmpulse",
        "events_per_s": best,
    }


def measure_monitor_throughput(*, n: int = 20_000, dim: int = 384) -> dict[str, Any]:
    """End-to-end ``DriftMonitor.observe`` on text-only events: hashing embedder
    (``dim``), prompt embedding drift and the scalar signals, one series."""
    from types import SimpleNamespace

    from llmpulse.detectors.embedder import HashingEmbedder
    from llmpulse.detectors.series import DriftMonitor

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    events = [
        SimpleNamespace(
            timestamp_ms=1_767_225_600_000 + i,
            event_id=str(i),
            endpoint="/chat",
            model="m",
            prompt_version="v1",
            prompt=" ".join(rng.choice(words, size=20)),
            output_tokens=int(rng.integers(10, 500)),
            finish_reason="stop",
            status="ok",
            scores={"faithfulness": float(rng.random())},
        )
        for i in range(n)
    ]
    mon = DriftMonitor(embedder=HashingEmbedder(dim=dim), embedding_signals=("prompt_embedding",))
    start = time.perf_counter()
    for a in range(0, n, BATCH):
        mon.observe(events[a : a + BATCH])
    return {
        "dim": dim,
        "scenario": "DriftMonitor, text events",
        "method": "llmpulse",
        "events_per_s": n / (time.perf_counter() - start),
    }


def _poisson_upper(k: int) -> float:
    from scipy import stats

    return float(stats.chi2.ppf(0.95, 2 * (k + 1)) / 2)


def _row(dim: int, scenario: str, method: str, t: _Tally, stationary: bool) -> dict[str, Any]:
    delays = np.asarray(t.delays or [], dtype=np.float64)
    return {
        "dim": dim,
        "scenario": scenario,
        "method": method,
        "runs": t.runs,
        "detection_rate": float("nan") if stationary else t.detected / max(t.runs, 1),
        "delay_median": float(np.median(delays)) if delays.size else float("nan"),
        "delay_p90": float(np.percentile(delays, 90)) if delays.size else float("nan"),
        "false_alarms": t.false_alarms,
        "stationary_events": t.stationary_events,
        "fa_per_100k": 1e5 * t.false_alarms / t.stationary_events
        if t.stationary_events
        else float("nan"),
        "events_per_s": t.events / t.seconds if t.seconds > 0 else float("nan"),
        "note": t.note,
    }


_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("dim", "dim", "{}"),
    ("scenario", "scenario", "{}"),
    ("method", "method", "{}"),
    ("runs", "runs", "{}"),
    ("detection_rate", "detected", "{:.0%}"),
    ("delay_median", "delay p50", "{:.0f}"),
    ("delay_p90", "delay p90", "{:.0f}"),
    ("false_alarms", "FA", "{}"),
    ("stationary_events", "stationary ev", "{:,}"),
    ("fa_per_100k", "FA/100k", "{:.2f}"),
    ("events_per_s", "events/s", "{:,.0f}"),
)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table, llmpulse and Evidently rows of a scenario side by side.

    >>> table = format_table([{"dim": 8, "scenario": "s", "method": "m", "runs": 1}])
    >>> table.splitlines()[0].startswith("| dim | scenario | method | runs | detected |")
    True
    >>> table.splitlines()[2]
    '| 8 | s | m | 1 |  |  |  |  |  |  |  |'
    """

    def cell(row: dict[str, Any], key: str, fmt: str) -> str:
        v = row.get(key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return fmt.format(v)

    head = "| " + " | ".join(h for _, h, _ in _COLUMNS) + " |"
    lines = [head, "|" + "---|" * len(_COLUMNS)]
    ordered = sorted(
        rows,
        key=lambda r: (
            r.get("dim", 0),
            _scenario_rank(str(r.get("scenario", ""))),
            str(r.get("method", "")),
        ),
    )
    notes: list[str] = []
    for r in ordered:
        lines.append("| " + " | ".join(cell(r, k, f) for k, _, f in _COLUMNS) + " |")
        if r.get("fa_per_1M_upper95") is not None:
            notes.append(
                f"dim {r['dim']}: {r.get('false_alarms', 0)} false alarms in "
                f"{r.get('stationary_events', 0):,} stationary events "
                f"(95 % upper bound {r['fa_per_1M_upper95']:.2f} per 1,000,000)"
            )
        note = r.get("note")
        if note and note not in notes:
            notes.append(str(note))
    return "\n".join([*lines, "", *notes] if notes else lines)


def _scenario_rank(name: str) -> int:
    return SCENARIOS.index(name) if name in SCENARIOS else len(SCENARIOS)
