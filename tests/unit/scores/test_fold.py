"""The vectorised score fold against the loop it replaced (kept here as the reference).

The loop below is the fold as it was before ``llmpulse.scores.fold``: a dict of
accumulators, one update per (score, grouping, spec, window start). The new
fold must give the same partials (same order, same float sums to the bit, same
ids), the same rows in ``window_scores``, and the same alerting state and
signals, for any scores: random series, out-of-order call times, duplicate
score ids, repeated specs and groupings, batches folded one after the other
with event time moving on in between.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmpulse.alerts.signals import Signal
from llmpulse.processors.windows import GroupingSet, WindowSpec, window_id_of
from llmpulse.schemas.batch import to_ms
from llmpulse.schemas.event import DIMENSIONS
from llmpulse.schemas.rows import WINDOW_SCORE_COLUMNS, names
from llmpulse.scores.fold import combine, dense, group
from llmpulse.scores.quality import (
    QualityConfig,
    QualityFolder,
    QualityPartial,
    Scored,
    partials_table,
    window_signals,
    window_starts,
)
from llmpulse.scores.records import CallInfo, ScoreRecord

EMITTED = datetime(2026, 1, 2, tzinfo=UTC)


# -- the reference: the loop fold as it was ----------------------------------------------


class RefAcc:
    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.sq = 0.0
        self.below = 0
        self.ids: list[str] = []


def ref_partial_id(p: QualityPartial) -> str:
    h = hashlib.blake2b(digest_size=16)
    wid = window_id_of(p.window_start_ms, p.window_seconds, p.grouping, p.dims)
    for part in (wid, p.score_name, repr(p.threshold), *p.score_ids):
        h.update(part.encode())
        h.update(b"\x1f")
    return h.hexdigest()


class RefFolder:
    def __init__(self, config: QualityConfig) -> None:
        self.config = config
        self._signal_spec = config.signal_spec
        self._open: dict[tuple[GroupingSet, tuple[str, ...], int, str], RefAcc] = {}
        self._emitted_ms = -(2**62)
        self.watermark_ms = -(2**62)
        self.folded = 0
        self.late_for_alerts = 0

    def fold(self, scored: Iterable[Scored]) -> list[QualityPartial]:
        cfg = self.config
        accs: dict[Any, RefAcc] = {}
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
                            acc = accs[key] = RefAcc()
                        acc.count += 1
                        acc.total += rec.value
                        acc.sq += rec.value * rec.value
                        acc.below += below
                        acc.ids.append(rec.score_id)
                        if spec == self._signal_spec:
                            alerted |= not self._hold(g, series, start, rec, below)
            self.late_for_alerts += alerted
        return [
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
                score_ids=tuple(sorted(acc.ids)),
            )
            for (spec, g, series, start, name), acc in accs.items()
        ]

    def _hold(
        self, g: GroupingSet, series: tuple[str, ...], start: int, rec: ScoreRecord, below: bool
    ) -> bool:
        assert self._signal_spec is not None
        if start + self._signal_spec.length_ms <= self._emitted_ms:
            return False
        key = (g, series, start, rec.name)
        acc = self._open.get(key)
        if acc is None:
            acc = self._open[key] = RefAcc()
        acc.count += 1
        acc.total += rec.value
        acc.below += below
        return True

    def advance(self, watermark_ms: int) -> list[Signal]:
        """Signals of the held windows (oldest start first, each once) that end
        ``alert_delay_ms`` or more behind the newest watermark."""
        self.watermark_ms = max(self.watermark_ms, int(watermark_ms))
        spec, cutoff = self._signal_spec, self.watermark_ms - self.config.alert_delay_ms
        if spec is None or cutoff <= self._emitted_ms:
            return []
        self._emitted_ms = cutoff
        due = sorted((k for k in self._open if k[2] + spec.length_ms <= cutoff), key=lambda k: k[2])
        return [
            signal
            for (g, series, start, name), acc in ((k, self._open.pop(k)) for k in due)
            for signal in window_signals(
                self.config, g, series, start, spec, name, acc.count, acc.total, acc.below
            )
        ]


TS_S, TS_MS = pa.timestamp("s", tz="UTC"), pa.timestamp("ms", tz="UTC")
# The arrow type of each column of window_scores.
REF_TYPES: dict[str, pa.DataType] = {
    "partial_id": pa.string(),
    "window_id": pa.string(),
    "window_start": TS_S,
    "window_end": TS_S,
    "window_seconds": pa.uint32(),
    "hop_seconds": pa.uint32(),
    "grouping": pa.string(),
    **dict.fromkeys(DIMENSIONS, pa.string()),
    "score_name": pa.string(),
    "threshold": pa.float64(),
    "score_count": pa.uint64(),
    "value_sum": pa.float64(),
    "value_sq_sum": pa.float64(),
    "below_count": pa.uint64(),
    "score_ids": pa.list_(pa.string()),
    "emitted_at": TS_MS,
}


def ref_row(p: QualityPartial, emitted_at: datetime) -> dict[str, Any]:
    """The window_scores row of one partial (times as whole seconds or ms)."""
    start = p.window_start_ms // 1000
    return {
        "partial_id": ref_partial_id(p),
        "window_id": window_id_of(p.window_start_ms, p.window_seconds, p.grouping, p.dims),
        "window_start": start,
        "window_end": start + p.window_seconds,
        "window_seconds": p.window_seconds,
        "hop_seconds": p.hop_seconds,
        "grouping": p.grouping,
        **{d: p.dims.get(d, "") for d in DIMENSIONS},
        "score_name": p.score_name,
        "threshold": p.threshold,
        "score_count": p.count,
        "value_sum": p.value_sum,
        "value_sq_sum": p.value_sq_sum,
        "below_count": p.below,
        "score_ids": list(p.score_ids),
        "emitted_at": to_ms(emitted_at),
    }


def ref_table(partials: list[QualityPartial], emitted_at: datetime) -> pa.Table:
    """The table of the partials built row by row."""
    rows = [ref_row(p, emitted_at) for p in partials]
    return pa.table(
        {n: pa.array([r[n] for r in rows], REF_TYPES[n]) for n in names(WINDOW_SCORE_COLUMNS)}
    )


# -- random inputs ------------------------------------------------------------------------

SPECS = [WindowSpec(60, 10), WindowSpec(300, 60), WindowSpec(60, 60), WindowSpec(20, 5)]
GROUPINGS = [
    GroupingSet(("model",)),
    GroupingSet(("service", "model")),
    GroupingSet(("tenant",)),
    GroupingSet(("service", "endpoint", "model", "tenant")),
]
NAMES = ["hallucination", "helpful", "toxicity", "x"]
T0 = 1_767_225_600_000


@st.composite
def configs(draw: st.DrawFn) -> QualityConfig:
    specs = tuple(draw(st.lists(st.sampled_from(SPECS), min_size=0, max_size=3)))
    groupings = tuple(draw(st.lists(st.sampled_from(GROUPINGS), min_size=0, max_size=3)))
    lengths = [s.length_s for s in specs]
    signal = draw(st.sampled_from(lengths)) if lengths and draw(st.booleans()) else 999
    return QualityConfig(
        specs,
        groupings,
        threshold=draw(st.sampled_from([0.5, 0.0, 1.0, 0.25])),
        thresholds=draw(st.dictionaries(st.sampled_from(NAMES), st.sampled_from([0.1, 0.9]))),
        hallucination_score=draw(st.sampled_from(NAMES)),
        hallucination_if=draw(st.sampled_from(["above", "below"])),
        signal_window_s=signal,
        alert_delay_ms=draw(st.sampled_from([0, 30_000, 300_000])),
    )


dim_values = st.sampled_from(["", "a", "b", "svc-1", "é"])
dims_maps = st.dictionaries(st.sampled_from(list(DIMENSIONS)), dim_values, max_size=4)
values = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, 0.5, 0.1, 0.2, 0.3, 1e-300, 1e300]),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)
times = st.one_of(
    st.integers(T0 - 600_000, T0 + 600_000),  # out of order, near each other
    st.integers(0, 2**42),  # far apart: the dense-code fallbacks
)


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[list[Scored], int]]:
    """Batches of (score, call) pairs, each with a watermark to advance to after it."""
    dims_pool = draw(st.lists(dims_maps, min_size=1, max_size=4))
    calls = [
        CallInfo(f"e{i}", draw(times), draw(st.sampled_from(dims_pool)))
        for i in range(draw(st.integers(1, 6)))
    ]
    ids = draw(st.lists(st.text("ab0é", min_size=1, max_size=3), min_size=1, max_size=8))
    out = []
    for _ in range(draw(st.integers(1, 4))):
        scored: list[Scored] = []
        for _ in range(draw(st.integers(0, 25))):
            call = draw(st.sampled_from(calls))
            # A fresh dims dict now and then: series are coded per mapping and per value.
            if draw(st.booleans()):
                call = CallInfo(call.event_id, call.timestamp_ms, dict(call.dims))
            rec = ScoreRecord(
                draw(st.sampled_from(ids)),  # duplicates on purpose
                draw(st.sampled_from(NAMES)),
                draw(values),
                0,
                "eval",
                call.event_id,
            )
            scored.append((rec, call))
        out.append((scored, draw(st.one_of(times, st.just(2**62)))))
    return out


def same_floats(a: float, b: float) -> bool:
    return math.copysign(1.0, a) == math.copysign(1.0, b) and (a == b)


def assert_same_partials(new: list[QualityPartial], ref: list[QualityPartial]) -> None:
    assert new == ref
    for n, r in zip(new, ref, strict=True):
        assert same_floats(n.value_sum, r.value_sum)
        assert same_floats(n.value_sq_sum, r.value_sq_sum)
        assert type(n.count) is int and type(n.below) is int
        assert n.window_id == window_id_of(r.window_start_ms, r.window_seconds, r.grouping, r.dims)
        assert n.partial_id == ref_partial_id(r)


def open_state(folder: QualityFolder | RefFolder) -> list[tuple[Any, ...]]:
    return [(k, a.count, a.total, a.below) for k, a in folder._open.items()]


@pytest.mark.slow  # seconds long: run by `make test`, not by `make unit`
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs(), batches())
def test_fold_matches_the_loop(cfg: QualityConfig, plan: list[tuple[list[Scored], int]]) -> None:
    new, ref = QualityFolder(cfg), RefFolder(cfg)
    for scored, watermark in plan:
        got, want = new.fold(iter(scored)), ref.fold(scored)
        assert_same_partials(got, want)
        assert partials_table(got, EMITTED).equals(ref_table(want, EMITTED))
        assert (new.folded, new.late_for_alerts) == (ref.folded, ref.late_for_alerts)
        assert open_state(new) == open_state(ref)
        assert new.advance(watermark) == ref.advance(watermark)
        assert open_state(new) == open_state(ref)
    assert new.advance(2**62) == ref.advance(2**62)


def test_a_batch_like_the_worker_s() -> None:
    """Default specs and groupings, thousands of scores over a few minutes."""
    rng = np.random.default_rng(7)
    cfg = QualityConfig(
        (WindowSpec(60, 10), WindowSpec(300, 60)),
        tuple(GroupingSet.parse(g) for g in ("model", "service+model", "tenant")),
        signal_window_s=300,
        alert_delay_ms=60_000,
    )
    dims = [
        {"model": f"m{i % 4}", "service": f"s{i % 3}", "tenant": f"t{i % 5}"} for i in range(20)
    ]
    calls = [
        CallInfo(f"e{i}", T0 + int(rng.integers(0, 300_000)), dims[int(rng.integers(0, 20))])
        for i in range(2000)
    ]
    new, ref = QualityFolder(cfg), RefFolder(cfg)
    for b in range(3):
        scored: list[Scored] = [
            (
                ScoreRecord(f"s{b}-{i}", NAMES[i % 3], float(rng.random()), 0, "eval", c.event_id),
                c,
            )
            for i, c in enumerate(calls)
        ]
        got, want = new.fold(scored), ref.fold(scored)
        assert_same_partials(got, want)
        assert partials_table(got, EMITTED).equals(ref_table(want, EMITTED))
        wm = T0 + 200_000 * (b + 1)
        assert new.advance(wm) == ref.advance(wm)
        assert open_state(new) == open_state(ref)
        assert new.late_for_alerts == ref.late_for_alerts


def test_codes_that_would_overflow_are_made_dense() -> None:
    a = np.array([2**40, 5, 2**40], dtype=np.int64)
    b = np.array([3, 2**40, 3], dtype=np.int64)
    code, n = combine(a, 2**41, b, 2**41)
    assert n == 2 and code[0] == code[2] != code[1]
    codes, n = dense(np.array([2**50, 0, 2**50], dtype=np.int64))
    assert n == 2 and codes.tolist() == [1, 0, 1]
    g = group(np.array([9, 3, 9, 1, 3], dtype=np.int64))
    assert g.of_row.tolist() == [0, 1, 0, 2, 1]
    assert g.first.tolist() == [0, 1, 3] and g.count.tolist() == [2, 2, 1]


def test_empty_inputs() -> None:
    cfg = QualityConfig((WindowSpec(60, 60),), (GroupingSet(("model",)),), signal_window_s=60)
    folder = QualityFolder(cfg)
    assert folder.fold([]) == []
    assert partials_table([], EMITTED).equals(ref_table([], EMITTED))
    assert (folder.folded, folder.open_windows) == (0, 0)
