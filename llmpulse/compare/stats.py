"""Two-sample statistics of a canary comparison. Pure numpy and scipy.

* ``mann_whitney``: rank test of two distributions (latency, TTFT), with the
  common-language effect size P(candidate > baseline).
* ``quantile_ci``: bootstrap confidence intervals of quantile differences. The
  bootstrap of a quantile is drawn exactly, without resampling rows: in a
  resample of n values the number at or below the j-th order statistic is
  Binomial(n, j/n), so the resampled q-quantile is x_(J) with
  P(J <= j) = P(Binomial(n, j/n) >= ceil(q n)). Drawing J from that law costs
  O(B log n) instead of O(B n), which makes 2,000 resamples of a million
  latencies instant, and works the same on a merged sketch (values with counts).
* ``two_proportions``: z-test of two shares with Newcombe's hybrid score interval
  of their difference (good coverage for rates near 0, unlike Wald).
* ``welch``: Welch's t-test of two means with Hedges' g.
* ``holm``: Holm's step-down adjustment for multiple comparisons.
* ``n_for_proportions`` / ``n_for_means``: sample size per arm for a power.

>>> rng = np.random.default_rng(0)
>>> a, b = rng.lognormal(5, 0.5, 4000), rng.lognormal(5.3, 0.5, 4000)
>>> r = mann_whitney(a, b)
>>> bool(r.p_value < 1e-10), round(r.cles, 2)
(True, 0.67)
>>> [round(p, 3) for p in holm([0.01, 0.04, 0.03, 0.5])]
[0.04, 0.09, 0.09, 0.5]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special, stats

from llmpulse._types import FloatArray, IntArray


@dataclass(frozen=True)
class RankTest:
    statistic: float
    p_value: float
    cles: float  # P(candidate > baseline) + P(tie) / 2: 0.5 means no shift


def mann_whitney(baseline: FloatArray, candidate: FloatArray) -> RankTest:
    """Two-sided Mann-Whitney U test (normal approximation with tie correction)."""
    a = np.asarray(baseline, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return RankTest(math.nan, 1.0, 0.5)
    res = stats.mannwhitneyu(b, a, alternative="two-sided", method="asymptotic")
    u = float(res.statistic)
    p = float(res.pvalue)
    return RankTest(u, 1.0 if math.isnan(p) else p, u / (a.size * b.size))


def quantile_index(n: int, q: float) -> int:
    """0-based index of the inverted-CDF q-quantile among n sorted values."""
    return min(n - 1, max(0, math.ceil(q * n) - 1))


def bootstrap_quantile_indices(n: int, q: float, draws: int, rng: np.random.Generator) -> IntArray:
    """0-based order-statistic indices of ``draws`` bootstrap q-quantiles (exact law).

    >>> idx = bootstrap_quantile_indices(1000, 0.5, 4000, np.random.default_rng(1))
    >>> 480 < float(np.mean(idx)) < 520 and 10 < float(np.std(idx)) < 22
    True
    """
    if n <= 0:
        return np.zeros(draws, dtype=np.int64)
    m = math.ceil(q * n)
    sd = math.sqrt(n * q * (1.0 - q))
    lo = max(1, int(m - 10 * sd) - 2)
    hi = min(n, int(m + 10 * sd) + 2)
    j = np.arange(lo, hi + 1, dtype=np.float64)
    # P(resampled quantile <= x_(j)) = P(#draws <= x_(j) >= m)
    cdf = stats.binom.sf(m - 1, n, j / n)
    u = rng.random(draws)
    pos = np.searchsorted(cdf, u, side="left")
    out: IntArray = (np.clip(pos, 0, j.size - 1) + lo - 1).astype(np.int64)
    return out


@dataclass(frozen=True)
class Sample:
    """Sorted distinct values with their counts: raw rows (counts 1) or a sketch."""

    values: FloatArray
    cum: IntArray  # cumulative counts

    @property
    def n(self) -> int:
        return int(self.cum[-1]) if self.cum.size else 0

    @classmethod
    def of(cls, x: FloatArray) -> Sample:
        v = np.sort(np.asarray(x, dtype=np.float64))
        return cls(v, np.arange(1, v.size + 1, dtype=np.int64))

    @classmethod
    def from_counts(cls, values: FloatArray, counts: IntArray) -> Sample:
        order = np.argsort(values)
        c = np.asarray(counts, dtype=np.int64)[order]
        return cls(np.asarray(values, dtype=np.float64)[order], np.cumsum(c))

    def at(self, index: IntArray | int) -> Any:
        """The value of 0-based order statistic(s) ``index``."""
        pos = np.searchsorted(self.cum, np.asarray(index) + 1, side="left")
        return self.values[pos]

    def quantile(self, q: float) -> float:
        return float(self.at(quantile_index(self.n, q)))


@dataclass(frozen=True)
class QuantileDiff:
    q: float
    baseline: float
    candidate: float
    relative: float  # candidate / baseline - 1
    ci_low: float
    ci_high: float


def quantile_ci(
    baseline: Sample,
    candidate: Sample,
    qs: Sequence[float],
    *,
    draws: int,
    rng: np.random.Generator,
    level: float = 0.95,
) -> list[QuantileDiff]:
    """Relative differences of quantiles with percentile bootstrap intervals."""
    out = []
    tail = (1.0 - level) / 2.0
    for q in qs:
        a, b = baseline.quantile(q), candidate.quantile(q)
        ra = baseline.at(bootstrap_quantile_indices(baseline.n, q, draws, rng))
        rb = candidate.at(bootstrap_quantile_indices(candidate.n, q, draws, rng))
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = rb / ra - 1.0
        rel = rel[np.isfinite(rel)]
        lo, hi = (
            (float(np.quantile(rel, tail)), float(np.quantile(rel, 1.0 - tail)))
            if rel.size
            else (math.nan, math.nan)
        )
        out.append(QuantileDiff(q, a, b, b / a - 1.0 if a > 0 else math.nan, lo, hi))
    return out


@dataclass(frozen=True)
class ProportionTest:
    baseline: float
    candidate: float
    diff: float  # candidate - baseline
    ci_low: float
    ci_high: float
    p_value: float


def _wilson(x: int, n: int, z: float) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = x / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportions(x1: int, n1: int, x2: int, n2: int, level: float = 0.95) -> ProportionTest:
    """Pooled two-proportion z-test and Newcombe's interval of p2 - p1.

    >>> r = two_proportions(10, 1000, 40, 1000)
    >>> round(r.diff, 3), r.ci_low > 0, r.p_value < 1e-4
    (0.03, True, True)
    """
    if n1 == 0 or n2 == 0:
        return ProportionTest(math.nan, math.nan, math.nan, math.nan, math.nan, 1.0)
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se > 0:
        p = float(special.erfc(abs(p2 - p1) / se / math.sqrt(2)))
    else:
        p = 1.0 if p1 == p2 else 0.0
    z = float(special.ndtri(1 - (1 - level) / 2))
    l1, u1 = _wilson(x1, n1, z)
    l2, u2 = _wilson(x2, n2, z)
    d = p2 - p1
    lo = d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    hi = d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return ProportionTest(p1, p2, d, lo, hi, p)


@dataclass(frozen=True)
class MeanTest:
    baseline: float
    candidate: float
    diff: float
    ci_low: float  # of the difference of means
    ci_high: float
    p_value: float
    hedges_g: float
    sd: float  # pooled standard deviation


def welch(baseline: FloatArray, candidate: FloatArray, level: float = 0.95) -> MeanTest:
    """Welch's unequal-variance t-test of candidate - baseline, with Hedges' g.

    >>> rng = np.random.default_rng(1)
    >>> r = welch(rng.normal(1.0, 1, 2000), rng.normal(1.2, 1, 2000))
    >>> round(r.hedges_g, 1), r.p_value < 1e-6, r.ci_low < 0.2 < r.ci_high
    (0.2, True, True)
    """
    a = np.asarray(baseline, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    na, nb = a.size, b.size
    if na < 2 or nb < 2:
        nan = math.nan
        return MeanTest(nan, nan, nan, nan, nan, 1.0, nan, nan)
    ma, mb = float(a.mean()), float(b.mean())
    va, vb = float(a.var(ddof=1)), float(b.var(ddof=1))
    d = mb - ma
    se2 = va / na + vb / nb
    sd = math.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
    if se2 <= 0:
        p = 1.0 if d == 0 else 0.0
        return MeanTest(ma, mb, d, d, d, p, 0.0 if d == 0 else math.copysign(math.inf, d), sd)
    se = math.sqrt(se2)
    df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    t = d / se
    p = float(2 * stats.t.sf(abs(t), df))
    crit = float(stats.t.ppf(1 - (1 - level) / 2, df))
    g = d / sd * (1 - 3 / (4 * (na + nb) - 9)) if sd > 0 else 0.0
    return MeanTest(ma, mb, d, d - crit * se, d + crit * se, p, g, sd)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (monotone, capped at 1), in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def _z(alpha: float, power: float) -> float:
    return float(special.ndtri(1 - alpha / 2) + special.ndtri(power))


def n_for_proportions(p1: float, delta: float, *, alpha: float, power: float) -> int:
    """Calls per arm for a two-sided two-proportion test to see p1 -> p1 + delta.

    >>> n_for_proportions(0.01, 0.01, alpha=0.05, power=0.8)
    2319
    """
    p1 = min(max(p1, 1e-4), 1 - 1e-4)
    p2 = min(max(p1 + delta, 1e-4), 1 - 1e-4)
    pbar = (p1 + p2) / 2
    za = float(special.ndtri(1 - alpha / 2))
    zb = float(special.ndtri(power))
    num = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(num**2 / (p2 - p1) ** 2)


def n_for_means(sd: float, delta: float, *, alpha: float, power: float) -> int:
    """Calls per arm for a two-sided two-sample t-test to see a shift of ``delta``.

    >>> n_for_means(1.0, 0.2, alpha=0.05, power=0.8)
    393
    """
    if delta <= 0 or not math.isfinite(sd):
        return 0
    return math.ceil(2 * (_z(alpha, power) * sd / delta) ** 2)
