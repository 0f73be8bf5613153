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

The fold itself runs over numpy columns (``scores.fold``): one row per
(score, grouping, spec, window start), grouped by a sort, with sums that add
the values in the same order as a loop would, so the partials and their ids
are exactly those of the per-score loop it replaced (``tests/unit/scores/test_fold.py``).

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
from functools import cached_property
from itertools import chain
from typing import Any, Final, Literal

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]

from llmpulse.alerts.signals import Signal
from llmpulse.processors.windows import GroupingSet, WindowSpec, window_id_of
from llmpulse.schemas.batch import from_ms, to_ms
from llmpulse.schemas.event import DIMENSIONS
from llmpulse.schemas.rows import WINDOW_SCORE_COLUMNS, names
from llmpulse.scores.fold import F64, I64, Groups, combine, dense, group, window_starts_of
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

    # Cached: the stage and the table builder both read them. One update of the
    # joined parts hashes the same bytes as an update per part and separator.
    @cached_property
    def window_id(self) -> str:
        return window_id_of(self.window_start_ms, self.window_seconds, self.grouping, self.dims)

    @cached_property
    def partial_id(self) -> str:
        return _partial_id(self.window_id, self.score_name, repr(self.threshold), self.score_ids)


def _partial_id(window_id: str, name: str, threshold: str, score_ids: Sequence[str]) -> str:
    parts = (window_id, name, threshold, *score_ids, "")
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


class _Acc:
    """An alerting window still open: its scores so far."""

    __slots__ = ("below", "count", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.below = 0


class _Columns:
    """A batch of scores as columns, one row per score.

    Series are coded per distinct dims mapping (calls of one series share theirs),
    score ids by their sorted rank (the partials list them sorted). Equal window
    specs or groupings listed twice share one index, as they shared dict keys.
    """

    def __init__(self, cfg: QualityConfig, scored: Sequence[Scored]) -> None:
        self.n = len(scored)
        g_index = [cfg.groupings.index(g) for g in cfg.groupings]
        s_index = [cfg.specs.index(s) for s in cfg.specs]
        # (grouping index, spec index) of the windows of one score, in loop order
        self.layout: list[tuple[int, int]] = []
        for gi in g_index:
            for si in s_index:
                spec = cfg.specs[si]
                width = spec.length_s // spec.hop_s
                self.layout.extend([(gi, si)] * width)
        self.names: list[str] = []
        name_code: dict[str, int] = {}
        self.series: list[tuple[int, tuple[str, ...]]] = []  # (grouping index, values)
        series_code: dict[tuple[int, tuple[str, ...]], int] = {}
        of_dims: dict[int, list[int]] = {}
        values: list[float] = []
        names: list[int] = []
        times: list[int] = []
        series: list[list[int]] = []
        ids: list[str] = []
        for rec, call in scored:
            values.append(rec.value)
            ids.append(rec.score_id)
            times.append(call.timestamp_ms)
            code = name_code.get(rec.name)
            if code is None:
                code = name_code[rec.name] = len(self.names)
                self.names.append(rec.name)
            names.append(code)
            codes = of_dims.get(id(call.dims))
            if codes is None:
                codes = of_dims[id(call.dims)] = []
                for gi in g_index:
                    key = (
                        gi,
                        tuple(str(call.dims.get(d, "") or "") for d in cfg.groupings[gi].dims),
                    )
                    c = series_code.get(key)
                    if c is None:
                        c = series_code[key] = len(self.series)
                        self.series.append(key)
                    codes.append(c)
            series.append(codes)
        self.n_names = len(self.names)
        self.thresholds = [cfg.threshold_of(n) for n in self.names]
        self.values: F64 = np.array(values, dtype=np.float64)
        self.name: I64 = np.array(names, dtype=np.int64)
        self.times: I64 = np.array(times, dtype=np.int64)
        self.series_of: I64 = np.array(series, dtype=np.int64).reshape(self.n, len(g_index))
        self.below = self.values < np.array(self.thresholds, dtype=np.float64)[self.name]
        self.id_table = np.array(sorted(set(ids)), dtype=object)
        rank = {s: i for i, s in enumerate(self.id_table.tolist())}
        self.id_rank: I64 = np.array([rank[s] for s in ids], dtype=np.int64)


class _Rows:
    """One row per (score, grouping, spec, window start), score-major, in the
    order of a loop over scores, groupings, specs and starts."""

    def __init__(self, cfg: QualityConfig, cols: _Columns) -> None:
        width = len(cols.layout)
        g_pos = range(len(cfg.groupings))
        blocks = []
        series_cols = []
        for gp in g_pos:
            for spec in cfg.specs:
                blocks.append(window_starts_of(cols.times, spec.length_ms, spec.hop_ms))
                series_cols.extend([gp] * (spec.length_s // spec.hop_s))
        self.starts: I64 = np.hstack(blocks).reshape(-1)
        self.series: I64 = cols.series_of[:, series_cols].reshape(-1)
        spec_of_col = np.array([si for _, si in cols.layout], dtype=np.int64)
        n_specs = len(cfg.specs)
        self.series_spec: I64 = (
            self.series.reshape(cols.n, width) * n_specs + spec_of_col
        ).reshape(-1)
        self.n_series_spec = len(cols.series) * n_specs
        self.name: I64 = np.repeat(cols.name, width)
        self.values: F64 = np.repeat(cols.values, width)
        self.below = np.repeat(cols.below, width)
        self.id_rank: I64 = np.repeat(cols.id_rank, width)


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
        """Partials of ``scored`` (each score must be folded once: the stage checks).

        Same partials, in the same order, with the same sums as a loop adding each
        score to a dict of accumulators per window (see ``scores.fold``)."""
        cfg = self.config
        scored = list(scored)
        self.folded += len(scored)
        cols = _Columns(cfg, scored)
        if not cols.n or not cols.layout:
            return []
        rows = _Rows(cfg, cols)
        starts = rows.starts
        start_codes, n_starts = dense(starts)
        key, n_key = combine(rows.series_spec, rows.n_series_spec, start_codes, n_starts)
        key, _ = combine(key, n_key, rows.name, cols.n_names)
        groups = group(key)
        self._hold_rows(cols, rows, start_codes, n_starts)
        return self._partials(cols, rows, groups)

    def _partials(self, cols: _Columns, rows: _Rows, groups: Groups) -> list[QualityPartial]:
        cfg = self.config
        counts = groups.count.tolist()
        sums = groups.sum(rows.values).tolist()
        with np.errstate(over="ignore"):  # inf, as a float product in Python gives
            sqs = groups.sum(rows.values * rows.values).tolist()
        belows = groups.sum(rows.below.astype(np.float64)).astype(np.int64).tolist()
        by_id = groups.rows_by(rows.id_rank)
        ids = cols.id_table[rows.id_rank[by_id]].tolist()
        first = groups.first
        starts = rows.starts[first].tolist()
        layout = [cols.layout[c] for c in (first % len(cols.layout)).tolist()]
        names = rows.name[first].tolist()
        series = rows.series[first].tolist()
        shown = [repr(t) for t in cols.thresholds]
        # One window id per window (its partials differ by score name only); both
        # ids are hashed here, in the loop that has their parts, and handed to the
        # partial's cached properties.
        window_ids: dict[tuple[int, int, int], str] = {}
        out = []
        at = 0
        for i, (gi, si) in enumerate(layout):
            g, spec, code = cfg.groupings[gi], cfg.specs[si], names[i]
            n = counts[i]
            dims = dict(zip(g.dims, cols.series[series[i]][1], strict=True))
            wkey = (starts[i], si, series[i])
            wid = window_ids.get(wkey)
            if wid is None:
                wid = window_ids[wkey] = window_id_of(starts[i], spec.length_s, g.name, dims)
            score_ids = tuple(ids[at : at + n])
            part = QualityPartial(
                window_start_ms=starts[i],
                window_seconds=spec.length_s,
                hop_seconds=spec.hop_s,
                grouping=g.name,
                dims=dims,
                score_name=cols.names[code],
                threshold=cols.thresholds[code],
                count=n,
                value_sum=sums[i],
                value_sq_sum=sqs[i],
                below=belows[i],
                score_ids=score_ids,
            )
            vars(part).update(
                window_id=wid,
                partial_id=_partial_id(wid, cols.names[code], shown[code], score_ids),
            )
            out.append(part)
            at += n
        return out

    def _hold_rows(self, cols: _Columns, rows: _Rows, start_codes: I64, n_starts: int) -> None:
        """Count the rows of the alerting windows still open into ``_open``; count the
        scores with a window already alerted on in ``late_for_alerts``."""
        spec = self._signal_spec
        if spec is None:
            return
        signal_cols = np.array([self.config.specs[si] == spec for _, si in cols.layout])
        if not signal_cols.any():
            return
        width = len(cols.layout)
        signal = np.tile(signal_cols, cols.n)
        open_ = signal & (rows.starts + spec.length_ms > self._emitted_ms)
        self.late_for_alerts += int((signal & ~open_).reshape(cols.n, width).any(axis=1).sum())
        if not open_.any():
            return
        # The series code names the grouping; the spec is the signal spec on every row.
        series = rows.series[open_]
        key, n_key = combine(series, len(cols.series), start_codes[open_], n_starts)
        key, _ = combine(key, n_key, rows.name[open_], cols.n_names)
        groups = group(key)
        first = groups.first
        held = np.flatnonzero(open_)[first]
        keys = [
            (self.config.groupings[gi], tup, start, cols.names[name])
            for (gi, tup), start, name in zip(
                [cols.series[s] for s in series[first].tolist()],
                rows.starts[held].tolist(),
                rows.name[held].tolist(),
                strict=True,
            )
        ]
        accs = [self._open.get(k) for k in keys]
        # Totals go on from the stored ones: each prior total is the first weight
        # of its group, so the additions are those of a loop over the rows.
        prior = [i for i, a in enumerate(accs) if a is not None]
        of_row = np.concatenate([np.array(prior, dtype=np.int64), groups.of_row])
        weights = np.concatenate(
            [np.array([accs[i].total for i in prior], dtype=np.float64), rows.values[open_]]  # type: ignore[union-attr]
        )
        totals = np.bincount(of_row, weights=weights, minlength=groups.size).tolist()
        belows = groups.sum(rows.below[open_].astype(np.float64)).astype(np.int64).tolist()
        for k, found, n, total, below in zip(
            keys, accs, groups.count.tolist(), totals, belows, strict=True
        ):
            acc = found if found is not None else self._open.setdefault(k, _Acc())
            acc.count += n
            acc.total = total
            acc.below += below

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
    n = len(partials)
    starts = np.array([p.window_start_ms for p in partials], dtype=np.int64) // 1000
    seconds = np.array([p.window_seconds for p in partials], dtype=np.int64)
    counts = np.array([len(p.score_ids) for p in partials], dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    flat_ids = pa.array(list(chain.from_iterable(p.score_ids for p in partials)), pa.string())
    cols: dict[str, Any] = {
        "partial_id": pa.array([p.partial_id for p in partials], pa.string()),
        "window_id": pa.array([p.window_id for p in partials], pa.string()),
        "window_start": pa.array(starts, pa.int64()).cast(ts),
        "window_end": pa.array(starts + seconds, pa.int64()).cast(ts),
        "window_seconds": pa.array(seconds, pa.uint32()),
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
    cols["score_ids"] = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat_ids)
    cols["emitted_at"] = pa.array(np.full(n, to_ms(emitted_at), dtype=np.int64), pa.int64()).cast(
        pa.timestamp("ms", tz="UTC")
    )
    return pa.table({name: cols[name] for name in WINDOW_SCORE_NAMES})
