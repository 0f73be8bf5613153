"""Continuous canary analysis: configured pairs compared every window (pure core).

The worker feeds ``CanaryMonitor`` the trace batches it stored (``observe``)
and, optionally, the late scores the score stage folded (``observe_scores``);
the monitor keeps, per pair and arm, the calls of the last ``horizon_ms`` of
event time (at most ``max_calls`` per arm, newest kept). ``evaluate(now_ms)``
compares every pair with the same statistics as ``llmpulse compare`` and
returns one ``CanaryResult`` per pair, from which come:

* ``signals``: ``canary_regression`` per pair and metric (1.0 fail, 0.0 pass; no
  signal while inconclusive), for the alert rules;
* ``control_events``: a ``rollback`` control event per failing pair (when
  ``canary.rollback`` is on), in the ``llm.control`` message shape;
* ``rows``: ``comparisons`` rows (origin ``canary:<pair>``).

``evaluate_store`` does the same from ClickHouse instead of memory (any query
function, e.g. ``run_readonly`` on the worker's client).

>>> from llmpulse.settings import CanaryPair, CompareSettings, Settings
>>> pair = CanaryPair(name="v3", baseline={"prompt_version": "v2"},
...                   candidate={"prompt_version": "v3"})
>>> mon = CanaryMonitor([pair], CompareSettings(), horizon_ms=3_600_000)
>>> mon.arm_sizes()
{'v3': (0, 0)}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from llmpulse._types import FloatArray
from llmpulse.alerts.signals import Signal
from llmpulse.compare.data import QueryFn, load_arm, where_sql
from llmpulse.compare.run import Request, comparison_rows, run_id_of
from llmpulse.compare.verdict import Arm, Comparison, ScoreRule, compare_arms
from llmpulse.detectors.embedder import Embedder, HashingEmbedder
from llmpulse.schemas.batch import TraceBatch, from_ms
from llmpulse.scores.quality import Scored
from llmpulse.settings import CanaryPair, CompareSettings, Settings

SIGNAL = "canary_regression"


@dataclass
class _Buffer:
    """Calls of one arm: columns of parallel arrays, appended per batch."""

    time_ms: list[np.ndarray[Any, np.dtype[np.int64]]] = field(default_factory=list)
    event_ids: list[list[str]] = field(default_factory=list)
    latency: list[FloatArray] = field(default_factory=list)
    ttft: list[FloatArray] = field(default_factory=list)
    errors: list[np.ndarray[Any, np.dtype[np.bool_]]] = field(default_factory=list)
    cost: list[FloatArray] = field(default_factory=list)
    tokens: list[FloatArray] = field(default_factory=list)
    scores: list[tuple[int, str, float]] = field(default_factory=list)  # (time, name, value)

    def size(self) -> int:
        return sum(t.size for t in self.time_ms)

    def prune(self, oldest_ms: int, max_calls: int) -> None:
        if not self.time_ms:
            return
        t = np.concatenate(self.time_ms)
        keep = t >= oldest_ms
        if keep.sum() > max_calls:
            cut = np.sort(t[keep])[-max_calls]
            keep &= t >= cut
        if keep.all():
            return
        ids = [i for chunk in self.event_ids for i in chunk]
        self.time_ms = [t[keep]]
        self.event_ids = [[i for i, k in zip(ids, keep.tolist(), strict=True) if k]]
        for name in ("latency", "ttft", "errors", "cost", "tokens"):
            col = np.concatenate(getattr(self, name))
            setattr(self, name, [col[keep]])
        self.scores = [s for s in self.scores if s[0] >= oldest_ms]

    def arm(self) -> Arm:
        if not self.time_ms:
            return Arm.empty()
        t = np.concatenate(self.time_ms)
        values: dict[str, list[float]] = {}
        for _, name, v in self.scores:
            values.setdefault(name, []).append(v)
        return Arm(
            latency_ms=np.concatenate(self.latency),
            ttft_ms=np.concatenate(self.ttft),
            errors=np.concatenate(self.errors),
            cost_usd=np.concatenate(self.cost),
            tokens=np.concatenate(self.tokens),
            scores={k: np.array(v) for k, v in values.items()},
            calls=int(t.size),
            span_s=float(t.max() - t.min()) / 1000.0 if t.size else 0.0,
        )


@dataclass
class CanaryResult:
    pair: CanaryPair
    comparison: Comparison
    event_time: datetime

    @property
    def failed_metrics(self) -> list[str]:
        return [m.metric for m in self.comparison.metrics if m.verdict == "fail"]


def _matches(objects: Mapping[str, np.ndarray[Any, Any]], n: int, sel: Mapping[str, str]) -> Any:
    mask = np.ones(n, dtype=np.bool_)
    for k, v in sel.items():
        col = objects.get(k)
        if col is None:  # attributes.<x> and unknown keys: not decidable here
            return np.zeros(n, dtype=np.bool_)
        mask &= col == v
    return mask


class CanaryMonitor:
    def __init__(
        self,
        pairs: Sequence[CanaryPair],
        settings: CompareSettings,
        score_rule: ScoreRule | None = None,
        *,
        horizon_ms: int = 3_600_000,
        rollback: bool = False,
        max_calls: int = 50_000,
        embedder: Embedder | None = None,
    ) -> None:
        self.pairs = list(pairs)
        self.settings = settings
        self.score_rule = score_rule or ScoreRule()
        self.horizon_ms = horizon_ms
        self.rollback = rollback
        self.max_calls = max_calls
        self.embedder = embedder
        self._arms: dict[str, tuple[_Buffer, _Buffer]] = {
            p.name: (_Buffer(), _Buffer()) for p in self.pairs
        }
        self._owner: dict[str, tuple[str, int]] = {}  # event id -> (pair, arm)

    def arm_sizes(self) -> dict[str, tuple[int, int]]:
        return {k: (a.size(), b.size()) for k, (a, b) in self._arms.items()}

    def observe(self, batch: TraceBatch) -> None:
        """Stored calls (priced): each goes to the arms whose selection it matches."""
        n = len(batch)
        if not n:
            return
        o = batch.objects
        scores = o["scores"].tolist()
        tokens_in = batch.tokens("input_tokens").astype(np.float64)
        tokens_out = batch.tokens("output_tokens").astype(np.float64)
        both_missing = (tokens_in < 0) & (tokens_out < 0)
        tokens = np.where(
            both_missing, np.nan, np.maximum(tokens_in, 0) + np.maximum(tokens_out, 0)
        )
        for p in self.pairs:
            common = _matches(o, n, p.where)
            for k, sel in enumerate((p.baseline, p.candidate)):
                rows = np.flatnonzero(common & _matches(o, n, sel))
                if not rows.size:
                    continue
                buf = self._arms[p.name][k]
                t = batch.timestamp_ms[rows]
                buf.time_ms.append(t)
                ids = batch.event_id[rows].tolist()
                buf.event_ids.append(ids)
                buf.latency.append(batch.numbers["latency_ms"][rows])
                buf.ttft.append(batch.numbers["ttft_ms"][rows])
                buf.errors.append(o["status"][rows] == "error")
                buf.cost.append(batch.cost[rows])
                buf.tokens.append(tokens[rows])
                for r, ts in zip(rows.tolist(), t.tolist(), strict=True):
                    for name, v in (scores[r] or {}).items():
                        buf.scores.append((ts, name, float(v)))
                for i in ids:
                    self._owner[i] = (p.name, k)

    def observe_scores(self, scored: Sequence[Scored]) -> None:
        """Late scores, by the time of the call they score."""
        for rec, call in scored:
            owner = self._owner.get(call.event_id)
            if owner is not None:
                self._arms[owner[0]][owner[1]].scores.append(
                    (call.timestamp_ms, rec.name, rec.value)
                )

    def _prune(self, now_ms: int) -> None:
        oldest = now_ms - self.horizon_ms
        for a, b in self._arms.values():
            a.prune(oldest, self.max_calls)
            b.prune(oldest, self.max_calls)
        live = {
            i for a, b in self._arms.values() for buf in (a, b) for c in buf.event_ids for i in c
        }
        self._owner = {k: v for k, v in self._owner.items() if k in live}

    def evaluate(self, now_ms: int) -> list[CanaryResult]:
        """Compare every pair on the calls of the last horizon (event time ``now_ms``)."""
        self._prune(now_ms)
        out = []
        for p in self.pairs:
            a, b = self._arms[p.name]
            c = compare_arms(a.arm(), b.arm(), self.settings, self.score_rule)
            out.append(CanaryResult(p, c, from_ms(now_ms)))
        return out

    def evaluate_store(self, query: QueryFn, now_ms: int) -> list[CanaryResult]:
        """The same comparisons read from ClickHouse (the last horizon before ``now_ms``)."""
        since, until = from_ms(now_ms - self.horizon_ms), from_ms(now_ms)
        out = []
        for p in self.pairs:
            arms = [
                load_arm(
                    query,
                    where_sql(sel, p.where, since, until),
                    max_rows=self.settings.max_rows,
                    seed=self.settings.seed,
                    embedder=self.embedder,
                )
                for sel in (p.baseline, p.candidate)
            ]
            c = compare_arms(arms[0], arms[1], self.settings, self.score_rule)
            out.append(CanaryResult(p, c, until))
        return out

    @staticmethod
    def signals(results: Sequence[CanaryResult]) -> list[Signal]:
        out = []
        for r in results:
            for m in r.comparison.metrics:
                if m.verdict == "inconclusive":
                    continue
                out.append(
                    Signal(
                        SIGNAL,
                        {"pair": r.pair.name, "metric": m.metric},
                        0,
                        r.event_time,
                        1.0 if m.verdict == "fail" else 0.0,
                        min(m.n_baseline, m.n_candidate),
                        {"effect": float(m.effect), "p_adjusted": float(m.p_adjusted)},
                    )
                )
        return out

    def control_events(self, results: Sequence[CanaryResult]) -> list[dict[str, Any]]:
        if not self.rollback:
            return []
        return [
            {
                "version": 1,
                "type": "llmpulse.control",
                "action": "rollback",
                "state": "firing",
                "rule": f"canary:{r.pair.name}",
                "signal": SIGNAL,
                "labels": {"pair": r.pair.name},
                "baseline": dict(r.pair.baseline),
                "candidate": dict(r.pair.candidate),
                "where": dict(r.pair.where),
                "failed_metrics": r.failed_metrics,
                "event_time": r.event_time.isoformat(timespec="milliseconds"),
                "dedup_key": f"canary:{r.pair.name}",
            }
            for r in results
            if r.comparison.overall == "fail"
        ]

    def rows(self, results: Sequence[CanaryResult], created_at: datetime) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for r in results:
            req = Request(r.pair.baseline, r.pair.candidate, r.pair.where,
                          from_ms(int(r.event_time.timestamp() * 1000) - self.horizon_ms),
                          r.event_time)  # fmt: skip
            origin = f"canary:{r.pair.name}"
            run_id = run_id_of(req, r.event_time, origin)
            out.extend(
                comparison_rows(r.comparison, req, run_id=run_id, created_at=created_at,
                                origin=origin)
            )  # fmt: skip
        return out


def canary_monitor(
    settings: Settings, *, pairs: Sequence[CanaryPair] | None = None
) -> CanaryMonitor | None:
    """The monitor of ``[canary]`` (None without pairs); ``pairs``: only these of
    them (a worker's task compares the pairs it owns).

    >>> canary_monitor(Settings()) is None
    True
    """
    c = settings.canary
    chosen = list(c.pairs if pairs is None else pairs)
    if not chosen:
        return None
    return CanaryMonitor(
        chosen,
        settings.compare,
        ScoreRule.of(settings.scores),
        horizon_ms=c.horizon_s * 1000,
        rollback=c.rollback,
        max_calls=settings.compare.max_rows,
        embedder=HashingEmbedder(dim=settings.drift.embedding_dim),
    )
