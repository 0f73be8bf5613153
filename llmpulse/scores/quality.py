"""Folding scores into the quality statistics of the windows of the calls they score.

Pure: no I/O, no clock. A score lands in every window that holds its *call's*
event time (not the score's), for every window spec and grouping of the
window statistics, so its row in ``window_scores`` carries the same
``window_id`` as the call's row in ``window_stats``.

What is stored are partial aggregates: per (window, series, score name) the
count, the sum and the sum of squares of the values, and how many were below
the name's threshold, with the ids of the scores counted. A late score never
rewrites a row: it adds one. The ``window_quality`` view sums the partials, so
it always shows the corrected numbers. The partial's id is a hash of its
window, name, threshold and score ids, so a retried insert collapses; the
score ids let the stage recognise a score already folded when Kafka redelivers
it in a different batch (see ``stage``).

Alerting reads one window length (``signal_window_s``): its windows are held
in memory until the event-time watermark passes their end by
``alert_delay_ms`` (time for late scores to arrive), then their quality goes
to the alert rules as signals, once. Scores arriving later still correct the
table and the view, not the alert.

>>> from llmpulse.processors.windows import GroupingSet, WindowSpec
>>> cfg = QualityConfig((WindowSpec(60, 60),), (GroupingSet(("model",)),),
...                     signal_window_s=60, alert_delay_ms=0)
>>> folder = QualityFolder(cfg)
>>> call = CallInfo("e1", 1_767_225_605_000, {"model": "m", "tenant": "t"})
>>> def score(i, v):
...     return ScoreRecord(f"s{i}", "hallucination", v, 1_767_229_000_000, "eval", "e1")
>>> [p] = folder.fold([(score(1, 1.0), call), (score(2, 0.0), call)])
>>> (p.window_seconds, dict(p.dims), p.count, p.below, p.score_ids)
(60, {'model': 'm'}, 2, 1, ('s1', 's2'))
>>> sigs = folder.advance(1_767_225_660_000)
>>> sorted((s.name, s.value, s.requests) for s in sigs)  # doctest: +NORMALIZE_WHITESPACE
[('hallucination_rate', 0.5, 2), ('score_mean:hallucination', 0.5, 2),
 ('score_rate_below:hallucination', 0.5, 2)]
>>> folder.fold([(score(3, 1.0), call)])[0].count, folder.late_for_alerts
(1, 1)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

import pyarrow as pa  # type: ignore[import-untyped]

from llmpulse.alerts.signals import Signal
from llmpulse.processors.windows import GroupingSet, WindowSpec, window_id_of
from llmpulse.schemas.batch import from_ms, to_ms
from llmpulse.schemas.event import DIMENSIONS
from llmpulse.schemas.rows import WINDOW_SCORE_COLUMNS, names
from llmpulse.scores.records import CallInfo, ScoreRecord

WINDOW_SCORE_NAMES: Final = names(WINDOW_SCORE_COLUMNS)
MEAN_PREFIX: Final = "score_mean:"
BELOW_PREFIX: Final = "score_rate_below:"
HALLUCINATION_SIGNAL: Final = "hallucination_rate"

Scored = tuple[ScoreRecord, CallInfo]


@dataclass(frozen=True)
class QualityConfig:
    specs: tuple[WindowSpec, ...]
    groupings: tuple[GroupingSet, ...]
    threshold: float = 0.5
    thresholds: Mapping[str, float] = field(default_factory=dict)
    hallucination_score: str = "hallucination"
    hallucination_if: Literal["above", "below"] = "above"
    signal_window_s: int = 300
    alert_delay_ms: int = 300_000

    def threshold_of(self, name: str) -> float:
        return float(self.thresholds.get(name, self.threshold))

    def bad_share(self, name: str, count: int, below: int) -> float | None:
        """The hallucination rate of a window of ``name`` (None for other scores)."""
        if name != self.hallucination_score or count == 0:
            return None
        bad = below if self.hallucination_if == "below" else count - below
        return bad / count

    @property
    def signal_spec(self) -> WindowSpec | None:
        return next((s for s in self.specs if s.length_s == self.signal_window_s), None)


@dataclass(frozen=True)
class QualityPartial:
    """Scores of one window, series and score name folded together."""

    window_start_ms: int
    window_seconds: int
    hop_seconds: int
    grouping: str
    dims: Mapping[str, str]
    score_name: str
    threshold: float
    count: int
    value_sum: float
    value_sq_sum: float
    below: int
    score_ids: tuple[str, ...]

    @property
    def window_id(self) -> str:
        return window_id_of(self.window_start_ms, self.window_seconds, self.grouping, self.dims)

    @property
    def partial_id(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        for part in (self.window_id, self.score_name, repr(self.threshold), *self.score_ids):
            h.update(part.encode())
            h.update(b"\x1f")
        return h.hexdigest()


class _Acc:
    __slots__ = ("below", "count", "ids", "sq", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.sq = 0.0
        self.below = 0
        self.ids: list[str] = []

    def add(self, value: float, below: bool, score_id: str) -> None:
        self.count += 1
        self.total += value
        self.sq += value * value
        self.below += below
        self.ids.append(score_id)


# (spec, grouping, series values, window start ms, score name)
_Key = tuple[WindowSpec, GroupingSet, tuple[str, ...], int, str]


def window_starts(t_ms: int, spec: WindowSpec) -> range:
    """Starts (ms) of the hopping windows of ``spec`` that hold ``t_ms``.

    >>> list(window_starts(125_000, WindowSpec(60, 20)))
    [80000, 100000, 120000]
    """
    hop, length = spec.hop_ms, spec.length_ms
    last = t_ms // hop * hop
    return range(last - length + hop, last + 1, hop)


class QualityFolder:
    """Turns resolved scores into ``window_scores`` partials and alert signals."""

    def __init__(self, config: QualityConfig) -> None:
        self.config = config
        self._signal_spec = config.signal_spec
        self._open: dict[tuple[GroupingSet, tuple[str, ...], int, str], _Acc] = {}
        self._emitted_ms = -(2**62)  # windows ending at or before this have been alerted
        self.watermark_ms = -(2**62)
        self.folded = 0
        self.late_for_alerts = 0  # scores whose signal window had already been alerted on

    def fold(self, scored: Iterable[Scored]) -> list[QualityPartial]:
        """Partials of ``scored`` (each score must be folded once: the stage checks)."""
        cfg = self.config
        accs: dict[_Key, _Acc] = {}
        for rec, call in scored:
            threshold = cfg.threshold_of(rec.name)
            below = rec.value < threshold
            self.folded += 1
            alerted = False
            for g in cfg.groupings:
                series = tuple(str(call.dims.get(d, "") or "") for d in g.dims)
                for spec in cfg.specs:
                    for start in window_starts(call.timestamp_ms, spec):
                        key = (spec, g, series, start, rec.name)
                        acc = accs.get(key)
                        if acc is None:
                            acc = accs[key] = _Acc()
                        acc.add(rec.value, below, rec.score_id)
                        if spec == self._signal_spec:
                            alerted |= not self._hold(g, series, start, rec, below)
            self.late_for_alerts += alerted
        out = []
        for (spec, g, series, start, name), acc in accs.items():
            ids = tuple(sorted(acc.ids))
            out.append(
                QualityPartial(
                    window_start_ms=start,
                    window_seconds=spec.length_s,
                    hop_seconds=spec.hop_s,
                    grouping=g.name,
                    dims=dict(zip(g.dims, series, strict=True)),
                    score_name=name,
                    threshold=cfg.threshold_of(name),
                    count=acc.count,
                    value_sum=acc.total,
                    value_sq_sum=acc.sq,
                    below=acc.below,
                    score_ids=ids,
                )
            )
        return out

    def _hold(
        self, g: GroupingSet, series: tuple[str, ...], start: int, rec: ScoreRecord, below: bool
    ) -> bool:
        """Count the score in an alerting window still open; False if already alerted."""
        assert self._signal_spec is not None
        if start + self._signal_spec.length_ms <= self._emitted_ms:
            return False
        key = (g, series, start, rec.name)
        acc = self._open.get(key)
        if acc is None:
            acc = self._open[key] = _Acc()
        acc.count += 1
        acc.total += rec.value
        acc.below += below
        return True

    def advance(self, watermark_ms: int) -> list[Signal]:
        """Move event time on (the latest call time seen); signals of the windows
        of the alerting length whose end is ``alert_delay_ms`` behind it."""
        self.watermark_ms = max(self.watermark_ms, int(watermark_ms))
        spec = self._signal_spec
        if spec is None:
            return []
        cutoff = self.watermark_ms - self.config.alert_delay_ms
        if cutoff <= self._emitted_ms:
            return []
        self._emitted_ms = cutoff
        due = [k for k in self._open if k[2] + spec.length_ms <= cutoff]
        due.sort(key=lambda k: k[2])
        out: list[Signal] = []
        for key in due:
            acc = self._open.pop(key)
            out.extend(self._signals(key, acc, spec))
        return out

    def _signals(
        self, key: tuple[GroupingSet, tuple[str, ...], int, str], acc: _Acc, spec: WindowSpec
    ) -> list[Signal]:
        g, series, start, name = key
        return window_signals(
            self.config, g, series, start, spec, name, acc.count, acc.total, acc.below
        )

    @property
    def open_windows(self) -> int:
        return len(self._open)


def window_signals(
    config: QualityConfig,
    grouping: GroupingSet,
    series: Sequence[str],
    start_ms: int,
    spec: WindowSpec,
    name: str,
    count: int,
    total: float,
    below: int,
) -> list[Signal]:
    """The alert signals of one window of one series and score name: ``score_mean:``,
    ``score_rate_below:`` and, for the hallucination score, ``hallucination_rate``."""
    labels = {"grouping": grouping.name}
    labels.update((d, v) for d, v in zip(grouping.dims, series, strict=True) if v)
    end = from_ms(start_ms + spec.length_ms)
    n = count
    extra = {"below": float(below), "threshold": config.threshold_of(name)}
    out = [
        Signal(MEAN_PREFIX + name, labels, spec.length_s, end, total / n, n, extra),
        Signal(
            BELOW_PREFIX + name,
            labels,
            spec.length_s,
            end,
            below / n,
            n,
            {**extra, "bad": float(below)},
        ),
    ]
    bad = config.bad_share(name, n, below)
    if bad is not None:
        out.append(
            Signal(
                HALLUCINATION_SIGNAL,
                labels,
                spec.length_s,
                end,
                bad,
                n,
                {**extra, "bad": bad * n},
            )
        )
    return out


def partials_table(partials: Sequence[QualityPartial], emitted_at: datetime) -> pa.Table:
    """``window_scores`` rows (``WINDOW_SCORE_COLUMNS``) of ``partials``."""
    ts = pa.timestamp("s", tz="UTC")
    starts = [p.window_start_ms // 1000 for p in partials]
    cols: dict[str, Any] = {
        "partial_id": pa.array([p.partial_id for p in partials], pa.string()),
        "window_id": pa.array([p.window_id for p in partials], pa.string()),
        "window_start": pa.array(starts, pa.int64()).cast(ts),
        "window_end": pa.array(
            [s + p.window_seconds for s, p in zip(starts, partials, strict=True)], pa.int64()
        ).cast(ts),
        "window_seconds": pa.array([p.window_seconds for p in partials], pa.uint32()),
        "hop_seconds": pa.array([p.hop_seconds for p in partials], pa.uint32()),
        "grouping": pa.array([p.grouping for p in partials], pa.string()),
    }
    for d in DIMENSIONS:
        cols[d] = pa.array([p.dims.get(d, "") for p in partials], pa.string())
    cols["score_name"] = pa.array([p.score_name for p in partials], pa.string())
    cols["threshold"] = pa.array([p.threshold for p in partials], pa.float64())
    cols["score_count"] = pa.array([p.count for p in partials], pa.uint64())
    cols["value_sum"] = pa.array([p.value_sum for p in partials], pa.float64())
    cols["value_sq_sum"] = pa.array([p.value_sq_sum for p in partials], pa.float64())
    cols["below_count"] = pa.array([p.below for p in partials], pa.uint64())
    cols["score_ids"] = pa.array([list(p.score_ids) for p in partials], pa.list_(pa.string()))
    cols["emitted_at"] = pa.array([to_ms(emitted_at)] * len(partials), pa.int64()).cast(
        pa.timestamp("ms", tz="UTC")
    )
    return pa.table({n: cols[n] for n in WINDOW_SCORE_NAMES})
