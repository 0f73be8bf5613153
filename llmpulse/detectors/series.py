"""``DriftMonitor``: every drift signal of every series, fed with trace events.

Events are duck-typed (a ``TraceEvent`` or anything with the same attributes:
``timestamp`` or ``timestamp_ms``, ``event_id``, the grouping dimensions,
``prompt``/``response``, ``prompt_embedding``/``response_embedding``,
``output_tokens``, ``finish_reason``, ``status``, ``scores``). Each event goes
to the drift series named by its ``grouping`` dimensions (default endpoint,
model, prompt_version) and feeds:

* ``prompt_embedding`` / ``response_embedding``: the event's embedding, or,
  when it has none, the embedder's embedding of its text (``fill_embeddings``).
  Events with neither are skipped for these signals only. A series keeps the
  source it started with: vectors from the other source (a different model,
  a different space) are skipped and counted, never mixed;
* ``output_tokens`` (numeric, rank-based), ``finish_reason`` (category mix),
  ``error_rate`` (status ok/error mix) and ``score:<name>`` for each score.

Memory is bounded: at most ``max_series`` series (events of further series
are counted in ``dropped_events`` and otherwise ignored) and ``max_scores``
score names per series; a warming-up embedding detector holds ``warmup``
float32 vectors, an active one ``window`` feature rows.

>>> from types import SimpleNamespace as E
>>> mon = DriftMonitor(warmup=100, window=100, null_target=200)
>>> evs = [E(timestamp_ms=1_767_225_600_000 + i, event_id=f"e{i}", endpoint="/chat",
...          model="m", prompt_version="v1", prompt=f"question {i % 7} about billing",
...          response=None, output_tokens=100 + i % 5, finish_reason="stop", status="ok",
...          scores={"faithfulness": 0.9}) for i in range(300)]
>>> mon.observe(evs)
[]
>>> mon.n_series, mon.n_events, mon.embedded
(1, 300, 300)
>>> sorted(mon.signals(("/chat", "m", "v1")))
['error_rate', 'finish_reason', 'output_tokens', 'prompt_embedding', 'score:faithfulness']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from llmpulse.alerts.signals import Signal, signal_from_drift
from llmpulse.detectors.embedder import Embedder, HashingEmbedder
from llmpulse.detectors.embedding import DriftDetector
from llmpulse.detectors.reference import Reference
from llmpulse.detectors.results import DriftEvent, WindowScore
from llmpulse.detectors.scalar import ScalarDriftDetector
from llmpulse.errors import ConfigError
from llmpulse.schemas.batch import TOKEN_FIELDS, TraceBatch, to_ms

EMBEDDING_SIGNALS: dict[str, str] = {
    "prompt_embedding": "prompt",
    "response_embedding": "response",
}
SCALAR_SIGNALS: tuple[str, ...] = ("output_tokens", "finish_reason", "error_rate")
SCORE_PREFIX = "score:"
# Scores whose window mean is also published as ``hallucination_rate``.
HALLUCINATION_SCORES: frozenset[str] = frozenset(
    {"hallucination", "hallucinated", "is_hallucination"}
)

SeriesKey = tuple[str, ...]


@dataclass(frozen=True)
class BaselineRecord:
    """A reference to persist in ``drift_baselines`` (see ``storage.baseline_row``)."""

    labels: Mapping[str, str]
    grouping: str
    signal: str
    reference: Reference


@dataclass
class _Series:
    labels: dict[str, str]
    embedding: dict[str, DriftDetector] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)  # signal -> provided | embedded
    scalar: dict[str, ScalarDriftDetector] = field(default_factory=dict)
    events: int = 0


def _time_ms(e: Any) -> int:
    ts = getattr(e, "timestamp", None)
    if isinstance(ts, datetime):
        return to_ms(ts)  # exact, unlike a float-derived timestamp_ms
    return int(e.timestamp_ms)


class DriftMonitor:
    """Drift detection for all series and signals of a stream of trace events."""

    def __init__(
        self,
        grouping: Sequence[str] = ("endpoint", "model", "prompt_version"),
        embedder: Embedder | None = None,
        *,
        embedding_signals: Sequence[str] = tuple(EMBEDDING_SIGNALS),
        scalar_signals: Sequence[str] = SCALAR_SIGNALS,
        watch_scores: bool = True,
        fill_embeddings: bool = True,
        warmup: int = 500,
        window: int = 200,
        detector: str = "adwin",
        null_target: int = 2000,
        cooldown: int = 2000,
        auto_rebaseline: bool = False,
        seed: int = 0,
        max_series: int = 1000,
        max_scores: int = 16,
        embedding_options: Mapping[str, Any] | None = None,
        scalar_options: Mapping[str, Any] | None = None,
    ) -> None:
        unknown = set(embedding_signals) - set(EMBEDDING_SIGNALS)
        unknown |= set(scalar_signals) - set(SCALAR_SIGNALS)
        if unknown:
            raise ConfigError("drift.signals", f"unknown signals {sorted(unknown)}")
        self.grouping = tuple(grouping)
        self.grouping_name = ",".join(self.grouping)
        self.embedder: Embedder = embedder if embedder is not None else HashingEmbedder()
        self.embedding_signals = tuple(embedding_signals)
        self.scalar_signals = tuple(scalar_signals)
        self.watch_scores = watch_scores
        self.fill_embeddings = fill_embeddings
        self.max_series = max_series
        self.max_scores = max_scores
        common = {
            "warmup": warmup,
            "window": window,
            "detector": detector,
            "null_target": null_target,
            "cooldown": cooldown,
            "auto_rebaseline": auto_rebaseline,
            "seed": seed,
        }
        self._emb_opts = {**common, **(embedding_options or {})}
        self._scalar_opts = {**common, **(scalar_options or {})}
        self._series: dict[SeriesKey, _Series] = {}
        self._pending_baselines: list[BaselineRecord] = []
        self._seen_baselines: set[tuple[SeriesKey, str, str]] = set()
        self.n_events = 0
        self.n_detections = 0
        self.dropped_events = 0  # events of series beyond max_series
        self.embedded = 0  # embeddings computed from text
        self.without_embedding = 0  # (event, signal) pairs with neither vector nor text
        self.source_mismatch = 0  # vectors skipped because the series uses the other source

    # -- series ---------------------------------------------------------------------------

    def key(self, event: Any) -> SeriesKey:
        return tuple(str(getattr(event, g, "") or "") for g in self.grouping)

    def _labels(self, key: SeriesKey) -> dict[str, str]:
        return dict(zip(self.grouping, key, strict=True))

    def _get(self, key: SeriesKey) -> _Series | None:
        s = self._series.get(key)
        if s is None:
            if len(self._series) >= self.max_series:
                return None
            s = _Series(labels=self._labels(key))
            self._series[key] = s
        return s

    def _embedding_detector(self, s: _Series, signal: str) -> DriftDetector:
        det = s.embedding.get(signal)
        if det is None:
            det = DriftDetector(
                signal, labels=s.labels, grouping=self.grouping_name, **self._emb_opts
            )
            s.embedding[signal] = det
        return det

    def _scalar_detector(self, s: _Series, signal: str) -> ScalarDriftDetector | None:
        det = s.scalar.get(signal)
        if det is None:
            if signal.startswith(SCORE_PREFIX):
                if sum(1 for k in s.scalar if k.startswith(SCORE_PREFIX)) >= self.max_scores:
                    return None
                opts: dict[str, Any] = {"kind": "numeric"}
            elif signal == "output_tokens":
                opts = {"kind": "numeric"}
            elif signal == "error_rate":
                opts = {"kind": "categorical", "categories": ("ok", "error")}
            else:
                opts = {"kind": "categorical"}
            det = ScalarDriftDetector(
                signal, labels=s.labels, grouping=self.grouping_name, **opts, **self._scalar_opts
            )
            s.scalar[signal] = det
        return det

    def signals(self, key: SeriesKey) -> list[str]:
        """Signals with a detector in this series."""
        s = self._series.get(key)
        return [] if s is None else [*s.embedding, *s.scalar]

    def detector(self, key: SeriesKey, signal: str) -> DriftDetector | ScalarDriftDetector | None:
        s = self._series.get(key)
        if s is None:
            return None
        return s.embedding.get(signal) or s.scalar.get(signal)

    @property
    def n_series(self) -> int:
        return len(self._series)

    @property
    def series(self) -> list[dict[str, str]]:
        return [dict(s.labels) for s in self._series.values()]

    # -- baselines --------------------------------------------------------------------------

    def restore_baseline(
        self, series_labels: Mapping[str, str], signal: str, reference: Reference
    ) -> None:
        """Install a stored or pinned reference for one series' embedding signal."""
        if signal not in EMBEDDING_SIGNALS:
            raise ConfigError(
                "drift.baseline", f"baselines exist for {sorted(EMBEDDING_SIGNALS)}, not {signal!r}"
            )
        key = tuple(str(series_labels.get(g, "")) for g in self.grouping)
        s = self._get(key)
        if s is None:
            raise ConfigError(
                "drift.max_series", f"cannot add series {key}: {self.max_series} already"
            )
        self._embedding_detector(s, signal).set_reference(reference)
        self._seen_baselines.add((key, signal, reference.baseline_id))

    def rebaseline(
        self, series_labels: Mapping[str, str] | None = None, signal: str | None = None
    ) -> int:
        """Re-learn the references of matching series and signals (all if None); how many."""
        count = 0
        for s in self._series.values():
            if series_labels is not None and any(
                s.labels.get(k) != v for k, v in series_labels.items()
            ):
                continue
            for name, det in [*s.embedding.items(), *s.scalar.items()]:
                if signal is None or name == signal:
                    det.rebaseline()
                    count += 1
        return count

    def drain_baselines(self) -> list[BaselineRecord]:
        """References built or finalised since the last call, to store in ``drift_baselines``."""
        for key, s in self._series.items():
            for signal, det in s.embedding.items():
                for ref in det.baselines:
                    mark = (key, signal, ref.baseline_id)
                    if mark not in self._seen_baselines:
                        self._seen_baselines.add(mark)
                        self._pending_baselines.append(
                            BaselineRecord(s.labels, self.grouping_name, signal, ref)
                        )
                det.baselines.clear()
        out, self._pending_baselines = self._pending_baselines, []
        return out

    def drain_window_scores(self) -> list[WindowScore]:
        """Window scores of every detector since the last call (rows of ``drift_scores``)."""
        out: list[WindowScore] = []
        for s in self._series.values():
            for det in [*s.embedding.values(), *s.scalar.values()]:
                out.extend(det.window_scores)
                det.window_scores.clear()
        out.sort(key=lambda w: w.window_end)
        return out

    # -- the stream -----------------------------------------------------------------------------

    def observe(self, events: Iterable[Any] | TraceBatch) -> list[DriftEvent]:
        """Feed a batch of events (in event order): a ``TraceBatch`` (the pipeline's
        columns) or event objects. Returns the drifts they revealed."""
        cols = _Columns.of(events, self.grouping)
        per_series: dict[SeriesKey, list[int]] = {}
        for i, key in enumerate(cols.keys):
            self.n_events += 1
            rows = per_series.get(key)
            if rows is None:
                if self._get(key) is None:
                    self.dropped_events += 1
                    continue
                rows = per_series[key] = []
            rows.append(i)
        found: list[DriftEvent] = []
        for signal in self.embedding_signals:
            found.extend(self._observe_embeddings(signal, cols, per_series))
        for key, rows in per_series.items():
            s = self._series[key]
            s.events += len(rows)
            found.extend(self._observe_scalars(s, cols, rows))
        found.sort(key=lambda d: d.event_time)
        self.n_detections += len(found)
        return found

    def _observe_embeddings(
        self, signal: str, cols: _Columns, per_series: dict[SeriesKey, list[int]]
    ) -> list[DriftEvent]:
        vectors = cols.column(signal)
        text_of = cols.column(EMBEDDING_SIGNALS[signal])
        times, ids = cols.time_ms, cols.event_ids
        # One embedder call for the whole batch: it is vectorised across texts.
        texts: list[str] = []
        plan: dict[SeriesKey, list[tuple[int, Any, str]]] = {}
        for key, idx in per_series.items():
            s = self._series[key]
            rows: list[tuple[int, Any, str]] = []
            for i in idx:
                vec = vectors[i]
                src = s.source.get(signal)
                if vec is not None and len(vec) > 0:
                    if src is None:
                        s.source[signal] = src = "provided"
                    if src != "provided":
                        self.source_mismatch += 1
                        continue
                    rows.append((times[i], vec, ids[i]))
                    continue
                text = text_of[i]
                if not self.fill_embeddings or not isinstance(text, str) or not text.strip():
                    self.without_embedding += 1
                    continue
                if src is None:
                    s.source[signal] = src = "embedded"
                if src != "embedded":
                    self.source_mismatch += 1
                    continue
                rows.append((times[i], len(texts), ids[i]))
                texts.append(text)
            if rows:
                plan[key] = rows
        filled = self.embedder.embed_many(texts) if texts else None
        self.embedded += len(texts)
        found: list[DriftEvent] = []
        for key, rows in plan.items():
            s = self._series[key]
            use = rows
            if s.source.get(signal) == "embedded":
                assert filled is not None
                mat = filled[[r[1] for r in rows]]
            else:
                dims = {len(r[1]) for r in rows}
                if len(dims) > 1:
                    # Mixed dimensions in one batch: keep the most common one;
                    # the detector skips (and counts) any other.
                    common = max(dims, key=lambda d: sum(1 for r in rows if len(r[1]) == d))
                    self.source_mismatch += sum(1 for r in rows if len(r[1]) != common)
                    use = [r for r in rows if len(r[1]) == common]
                mat = np.asarray([r[1] for r in use], dtype=np.float64)
            det = self._embedding_detector(s, signal)
            when = np.fromiter((r[0] for r in use), dtype=np.int64, count=len(use))
            found.extend(det.update_many(mat, when, [r[2] for r in use]))
        return found

    def _observe_scalars(self, s: _Series, cols: _Columns, rows: list[int]) -> list[DriftEvent]:
        times = np.fromiter((cols.time_ms[i] for i in rows), dtype=np.int64, count=len(rows))
        ids = [cols.event_ids[i] for i in rows]
        found: list[DriftEvent] = []
        columns: dict[str, list[Any]] = {}
        if "output_tokens" in self.scalar_signals:
            tokens = cols.column("output_tokens")
            columns["output_tokens"] = [tokens[i] for i in rows]
        if "finish_reason" in self.scalar_signals:
            reasons = cols.column("finish_reason")
            columns["finish_reason"] = [reasons[i] or None for i in rows]
        if "error_rate" in self.scalar_signals:
            status = cols.column("status")
            columns["error_rate"] = ["error" if status[i] == "error" else "ok" for i in rows]
        if self.watch_scores:
            all_scores = cols.column("scores")
            scores = [all_scores[i] or {} for i in rows]
            names: dict[str, None] = {}
            for sc in scores:
                for name in sc:
                    names.setdefault(name, None)
            for name in names:
                columns[SCORE_PREFIX + name] = [sc.get(name) for sc in scores]
        for signal, values in columns.items():
            if all(v is None for v in values):
                continue
            det = self._scalar_detector(s, signal)
            if det is not None:
                found.extend(det.update_many(values, times, ids))
        return found


class _Columns:
    """The fields drift reads, as per-event lists: sliced from a ``TraceBatch`` or
    read once from duck-typed event objects."""

    def __init__(
        self,
        keys: list[SeriesKey],
        time_ms: list[int],
        event_ids: list[str],
        read: Callable[[str], list[Any]],
    ) -> None:
        self.keys = keys
        self.time_ms = time_ms
        self.event_ids = event_ids
        self._read = read
        self._cache: dict[str, list[Any]] = {}

    def column(self, name: str) -> list[Any]:
        col = self._cache.get(name)
        if col is None:
            col = self._cache[name] = self._read(name)
        return col

    @classmethod
    def of(cls, events: Iterable[Any] | TraceBatch, grouping: Sequence[str]) -> _Columns:
        if isinstance(events, TraceBatch):
            return cls._of_batch(events, grouping)
        evs = list(events)
        return cls(
            [tuple(str(getattr(e, g, "") or "") for g in grouping) for e in evs],
            [_time_ms(e) for e in evs],
            [str(getattr(e, "event_id", "") or "") for e in evs],
            lambda name: [getattr(e, name, None) for e in evs],
        )

    @classmethod
    def _of_batch(cls, batch: TraceBatch, grouping: Sequence[str]) -> _Columns:
        def read(name: str) -> list[Any]:
            if name in batch.objects:
                return list(batch.objects[name].tolist())
            if name in TOKEN_FIELDS:
                return [None if v < 0 else v for v in batch.tokens(name).tolist()]
            return [None] * len(batch)

        # Validated labels are already strings ("" when unset).
        dims = [batch.objects[g].tolist() for g in grouping]
        return cls(
            list(zip(*dims, strict=True)) if dims else [() for _ in range(len(batch))],
            batch.timestamp_ms.tolist(),
            batch.event_id.tolist(),
            read,
        )


def alert_signals(
    drifts: Iterable[DriftEvent], windows: Iterable[WindowScore] = ()
) -> list[Signal]:
    """The alert rules' signals of detections and window scores.

    * every ``DriftEvent`` -> ``drift_detected`` (value 1) on its series plus the
      drifted ``signal``; one alert per series and signal, whichever detector spoke;
    * every window of ``score:<name>`` -> ``score_mean:<name>`` (the window mean),
      and also ``hallucination_rate`` for a hallucination score.

    Labels leave out empty dimensions; ``extra`` keeps the finite numbers behind
    a detection (score, threshold, p-value...).
    """
    out: list[Signal] = []
    for d in drifts:
        labels = {k: str(v) for k, v in d.labels.items() if v != ""}
        labels["signal"] = d.signal
        details = {"score": d.score, "threshold": d.threshold, **d.details}
        out.append(
            signal_from_drift(
                "drift_detected",
                labels,
                d.event_time,
                1.0,
                requests=int(details.get("n", 0) or 0),
                extra=_finite(details),
            )
        )
    for w in windows:
        if not w.signal.startswith(SCORE_PREFIX):
            continue
        name = w.signal[len(SCORE_PREFIX) :]
        labels = {k: str(v) for k, v in w.labels.items() if v != ""}
        extra = _finite({"p_value": w.p_value, "n": w.n})
        names = [f"score_mean:{name}"]
        if name in HALLUCINATION_SCORES:
            names.append("hallucination_rate")
        for n in names:
            out.append(
                signal_from_drift(n, labels, w.window_end, w.value, requests=w.n, extra=extra)
            )
    return out


def _finite(values: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
