"""Drift of a cheap per-event scalar of one series: ``ScalarDriftDetector``.

One algorithm per module (as in river): numeric values are tested by their
mid-rank in the reference (or counted when they are 0/1), categorical ones by
each category's share; the shared engine (``evidence``) does the rest.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any, Unpack

import numpy as np

from llmpulse._types import FloatArray, IntArray
from llmpulse.detectors.evidence import DetectorOptions, TimeLike, _Evidence, _times
from llmpulse.detectors.results import DriftEvent
from llmpulse.detectors.windowed import TestResult, category_test, z_critical, z_test
from llmpulse.errors import ConfigError
from llmpulse.schemas.batch import to_ms

__all__ = ["ScalarDriftDetector"]


class ScalarDriftDetector(_Evidence):
    """Drift of a cheap per-event scalar of one series.

    ``kind="numeric"`` (output length, a score...): each value becomes its
    mid-rank in the reference sample, u = F_ref(x) in [0, 1]. Without drift u
    has mean 1/2 whatever the shape of the distribution, so the online detector
    (ADWIN's bound is derived for values in [0, 1]) and the window test (a
    z-test of the mean rank: Mann-Whitney against the reference) keep their
    false alarm rates on skewed and heavy-tailed scores; on raw values a
    lognormal score raised about 100 false alarms per million events. Values
    that were all 0 or 1 during warm-up (a "hallucinated" flag) are counted and
    tested exactly instead. Ranks ignore any monotone transform, so token
    counts need no log scale.

    ``kind="categorical"`` (finish_reason, status...): an exact test of each
    category's share, online detectors on the indicator of each frequent one.

    ``None`` and non-finite values are skipped.

    >>> det = ScalarDriftDetector("output_tokens", warmup=300, null_target=600, seed=0)
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> det.update_many(rng.lognormal(5, 0.5, 3000).tolist(), np.arange(3000))
    []
    >>> hits = det.update_many(rng.lognormal(5.4, 0.5, 600).tolist(), 3000 + np.arange(600))
    >>> hits[0].signal, hits[0].detector, bool(to_ms(hits[0].event_time) - 3000 < 150)
    ('output_tokens', 'combined', True)
    """

    def __init__(
        self,
        signal: str,
        *,
        kind: str = "numeric",
        max_categories: int = 12,
        categories: Sequence[str] | None = None,
        **options: Unpack[DetectorOptions],
    ) -> None:
        if kind not in ("numeric", "categorical"):
            raise ConfigError("drift.kind", f"must be numeric or categorical, got {kind!r}")
        self.kind = kind
        self.max_categories = max_categories
        self._fixed_categories = tuple(categories) if categories else None
        self.skipped = 0
        self._warm: list[Any] = []
        self._binary = False
        # numeric: sorted reference values (the online one stays the warm-up's)
        self._online_sorted = np.zeros(0)
        self._ref_sorted = np.zeros(0)
        self._u_std = 0.5
        self._cal_values: list[FloatArray] = []
        # counted (categorical or 0/1)
        self.categories: tuple[str, ...] = ()
        self._index: dict[str, int] = {}
        self._ref_counts = np.zeros(0)
        self._watch: tuple[int, ...] = ()
        self._n0 = 0
        self.window_detector = "ztest" if kind == "numeric" else "fisher"
        self.min_segment = 32 if kind == "numeric" else 64
        super().__init__(signal, **options)

    @property
    def _ranked(self) -> bool:
        return self.kind == "numeric" and not self._binary

    @property
    def reference_summary(self) -> dict[str, Any]:
        """The reference as plain data (quantiles or category counts)."""
        if self._ranked:
            q = np.quantile(self._ref_sorted, (0.05, 0.25, 0.5, 0.75, 0.95)).tolist()
            return {"n": self._n0, "quantiles": q, "rank_std": self._u_std}
        return {"categories": [*self.categories, "__other__"], "counts": self._ref_counts.tolist()}

    def _baseline_id(self) -> str:
        if not self._active:
            return ""
        key = f"{self.signal}|{self.kind}|" + repr(self.reference_summary)
        return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()

    def _on_rebaseline(self) -> None:
        self._warm = []
        self._binary = False
        self._cal_values = []
        self.window_detector = "ztest" if self.kind == "numeric" else "fisher"

    def _channels(self) -> Sequence[str]:
        if self.kind == "numeric":
            return ("rank",) if self._ranked else ("value",)
        return tuple(
            self.categories[c] if c < len(self.categories) else "__other__" for c in self._watch
        )

    def _null_n(self) -> int:
        return self._n0

    @staticmethod
    def _midrank(ref: FloatArray, x: FloatArray) -> FloatArray:
        lo = np.searchsorted(ref, x, side="left")
        hi = np.searchsorted(ref, x, side="right")
        out: FloatArray = (lo + hi) / (2.0 * ref.shape[0])
        return out

    def _set_ranked_reference(self, values: FloatArray) -> None:
        ref = np.sort(values)
        self._ref_sorted = ref
        self._n0 = int(ref.shape[0])
        # Ties (ratings, token limits) shrink the spread of mid-ranks below 1/sqrt(12).
        self._u_std = float(max(self._midrank(ref, ref).std(ddof=1), 1e-6))

    def _start(self) -> None:
        if self.kind == "numeric":
            arr = np.array(self._warm, dtype=np.float64)
            if bool(np.isin(arr, (0.0, 1.0)).all()):
                # 0/1 values are counts of events: tested exactly, fed raw to ADWIN.
                self._binary = True
                self.window_detector = "fisher"
                self.categories = ("0", "1")
                self._ref_counts = np.array([float((arr == 0).sum()), float((arr == 1).sum())])
                self._n0 = int(arr.shape[0])
            else:
                self._online_sorted = np.sort(arr)
                self._set_ranked_reference(arr)
        else:
            counts = Counter(str(v) for v in self._warm)
            if self._fixed_categories is not None:
                cats = self._fixed_categories
            else:
                cats = tuple(c for c, _ in counts.most_common(self.max_categories))
            self.categories = cats
            self._index = {c: i for i, c in enumerate(cats)}
            ref = np.zeros(len(cats) + 1)
            for c, m in counts.items():
                ref[self._index.get(c, len(cats))] += m
            self._ref_counts = ref
            self._n0 = int(ref.sum())
            # Watch the frequent categories online (and the rest as one),
            # at most 6 channels: each one is another chance of a false alarm.
            share = ref / max(ref.sum(), 1.0)
            order = [int(i) for i in np.argsort(-share) if share[i] >= 0.01 or i == len(cats)]
            self._watch = tuple(order[:6]) if len(order) > 1 else (0,)
        self._warm = []
        self._activate()

    def _calibrate(self, rows: FloatArray) -> None:
        if not self._ranked:
            super()._calibrate(rows)
            return
        need = self.null_target - self._n0 - self._null_count
        if need <= 0 or rows.shape[0] == 0:
            return
        part = rows[:need, 1].copy()
        self._cal_values.append(part)
        self._null_count += part.shape[0]
        if self._n0 + self._null_count >= self.null_target:
            self._set_ranked_reference(np.concatenate([self._ref_sorted, *self._cal_values]))
            self._cal_values = []
            self._null_count = 0

    def _absorb_null(self, total: FloatArray, sq: FloatArray, count: int) -> None:
        self._ref_counts = self._ref_counts + total
        self._n0 = int(self._ref_counts.sum())

    def _test(self, seg_sum: FloatArray, n: int) -> TestResult:
        if self._ranked:
            r = z_test(float(seg_sum[0]) / n, n, 0.5, self._u_std, self._n0)
            # Unsigned, so that "statistic > threshold" means "rejects" for every
            # detector; the direction is in the detection's details.
            return TestResult(abs(r.statistic), r.p_value, r.n)
        return category_test(seg_sum, self._ref_counts)

    def _describe(self, seg_sum: FloatArray, n: int) -> dict[str, Any]:
        if self._ranked:
            rank = float(seg_sum[0]) / n
            return {"mean_rank": rank, "direction": "up" if rank > 0.5 else "down"}
        share = seg_sum / n
        ref = self._ref_counts / max(float(self._ref_counts.sum()), 1.0)
        c = int(np.argmax(np.abs(share - ref)))
        names = [*self.categories, "__other__"]
        return {
            "category": names[c] if c < len(names) else "__other__",
            "share": float(share[c]),
            "reference_share": float(ref[c]),
            "direction": "up" if share[c] > ref[c] else "down",
        }

    def _critical(self, p: float, result: TestResult) -> float:
        if self._ranked:
            return z_critical(p)
        return -math.log10(p)  # the exact test's statistic is -log10 p

    def _window_value(self, seg_sum: FloatArray, n: int, value_mean: float) -> float:
        if self.kind == "numeric":
            return value_mean
        ref = self._ref_counts / max(self._ref_counts.sum(), 1.0)
        # Total variation distance between the window mix and the reference mix.
        return float(0.5 * np.abs(seg_sum / n - ref).sum())

    # -- updates ------------------------------------------------------------------------------

    def update(
        self, value: Any, event_time: TimeLike, event_id: str | None = None
    ) -> DriftEvent | None:
        found = self.update_many(
            [value],
            np.array([to_ms(event_time)], dtype=np.int64),
            None if event_id is None else [event_id],
        )
        return found[0] if found else None

    def update_many(
        self,
        values: Sequence[Any],
        times: Sequence[TimeLike] | IntArray,
        ids: Sequence[str] | None = None,
    ) -> list[DriftEvent]:
        tms = _times(times, len(values))
        self.n_seen += len(values)
        keep = [
            i
            for i, v in enumerate(values)
            if v is not None
            and (self.kind != "numeric" or (isinstance(v, int | float) and math.isfinite(v)))
        ]
        if len(keep) != len(values):
            self.skipped += len(values) - len(keep)
            values = [values[i] for i in keep]
            tms = tms[np.asarray(keep, dtype=np.int64)] if keep else tms[:0]
            ids = [ids[i] for i in keep] if ids is not None else None
        found: list[DriftEvent] = []
        start, n = 0, len(values)
        while start < n:
            if not self._active:
                take = min(self.warmup - len(self._warm), n - start)
                self._warm.extend(values[start : start + take])
                start += take
                if len(self._warm) >= self.warmup:
                    self._start()
                continue
            part = values[start:]
            if self.kind == "numeric":
                x = shown = np.asarray(part, dtype=np.float64)
                if self._binary:
                    rows = np.column_stack([1.0 - x, x])
                    chans = x[:, None]
                else:
                    rows = np.column_stack([self._midrank(self._ref_sorted, x), x])
                    chans = self._midrank(self._online_sorted, x)[:, None]
            else:
                other = len(self.categories)
                codes = np.fromiter(
                    (self._index.get(str(v), other) for v in part), dtype=np.int64, count=len(part)
                )
                rows = np.zeros((len(part), other + 1))
                rows[np.arange(len(part)), codes] = 1.0
                shown = np.zeros(len(part))
                chans = rows[:, list(self._watch)]
            got, used = self._run(chans, rows, shown, tms[start:], ids, start)
            found.extend(got)
            start += used
        return found
