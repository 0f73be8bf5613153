"""Two-sample tests of a window of events against the reference.

Embeddings: a kernel two-sample test on the reference's low-dimensional view
(see ``reference``). The RBF-kernel MMD is approximated with random Fourier
features (Rahimi and Recht, 2007): MMD² is then the squared distance between
the mean feature vectors of the window and of the reference. Studentising that
difference by the reference feature covariance gives a Hotelling T², as in the
smooth characteristic function test of Chwialkowski et al. (2015): under "no
drift" it follows a scaled F distribution, so the p-value is analytic and costs
microseconds. A permutation p-value of a quadratic-time MMD needs a thousand
kernel sums per window to resolve p = 0.001, a thousand times the cost.

The F law assumes the window mean is Gaussian and accounts for the
reference's own sampling error through ``null_n``. Measured on stationary
384-dimensional streams (null_n = 2,000): windows of 200 events fall below
p = 0.001 at 0.10 % (nominal), windows of 32 to 128 events at 0.14 to 0.19 %,
and below 0.00025 at about 0.07 %: the tail of short windows is two to three
times heavier than nominal, which the combination rule absorbs (the short
windows only ever confirm an online alarm). The law is also a statement
averaged over references: a reference whose mean happens to be off makes all
its windows look a little drifted. That error shrinks as ``null_n`` grows,
which is why the detector keeps adding events to the null statistics after the
warm-up (``DriftDetector(null_target=...)``); with 250 held-out events some
references rejected 5 % of their windows at p = 0.001.

Scalars: a z-test of a window mean against the reference mean and spread, and
exact tests of a window's category shares against the reference's.

>>> rng = np.random.default_rng(0)
>>> from llmpulse.detectors.reference import Reference, unit_rows
>>> ref = Reference.fit(rng.normal(size=(600, 24)), seed=0)
>>> test = MMDTest(ref)
>>> same = test.test(ref.transform(unit_rows(rng.normal(size=(200, 24)))[0])[2])
>>> moved = rng.normal(size=(200, 24)) + 0.5
>>> other = test.test(ref.transform(unit_rows(moved)[0])[2])
>>> bool(same.p_value > 1e-3), bool(other.p_value < 1e-6)
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import special, stats

from llmpulse._types import FloatArray
from llmpulse.detectors.reference import Reference


@dataclass(frozen=True, slots=True)
class TestResult:
    """One two-sample test: its statistic, p-value and the events it saw."""

    statistic: float
    p_value: float
    n: int


def f_pvalue(t2: float, dim: int, null_n: int) -> float:
    """p-value of a two-sample Hotelling T² whose covariance came from ``null_n`` rows.

    >>> round(f_pvalue(32.0, 32, 1000), 2)
    0.52
    """
    if null_n <= dim:
        return 1.0
    f = t2 * (null_n - dim) / (dim * (null_n - 1))
    return float(special.fdtrc(dim, null_n - dim, f))


@lru_cache(maxsize=4096)
def f_critical(p: float, dim: int, null_n: int) -> float:
    """T² above which ``f_pvalue`` is below ``p``."""
    if null_n <= dim:
        return math.inf
    f = float(stats.f.isf(p, dim, null_n - dim))
    return f * dim * (null_n - 1) / (null_n - dim)


class MMDTest:
    """Studentised random-feature MMD of a window against a ``Reference``.

    ``statistic`` is T² = n_eff · |W (m_window − m_ref)|² with W the whitener of
    the reference feature covariance and n_eff = 1 / (1/n + 1/null_n).
    """

    name = "mmd"

    def __init__(self, reference: Reference) -> None:
        self.reference = reference
        self._mean = reference.feature_mean
        self._white = reference.whitener()
        self.dim = reference.rff_features
        self.null_n = reference.null_n

    def t2(self, feature_mean: FloatArray, n: int) -> float:
        v = (feature_mean - self._mean) @ self._white
        return float(v @ v) / (1.0 / n + 1.0 / self.null_n)

    def from_mean(self, feature_mean: FloatArray, n: int) -> TestResult:
        t2 = self.t2(feature_mean, n)
        return TestResult(t2, f_pvalue(t2, self.dim, self.null_n), n)

    def test(self, features: FloatArray) -> TestResult:
        """Test a matrix of RFF feature rows (``Reference.transform(...)[2]``)."""
        n = int(features.shape[0])
        if n == 0:
            return TestResult(0.0, 1.0, 0)
        return self.from_mean(features.mean(axis=0), n)

    def critical(self, p: float) -> float:
        return f_critical(p, self.dim, self.null_n)

    def mmd2(self, feature_mean: FloatArray) -> float:
        """Plain (unstudentised) MMD² estimate with the RBF kernel, for display."""
        d = feature_mean - self._mean
        return float(d @ d) * 2.0 / self.dim


def z_test(mean: float, n: int, ref_mean: float, ref_std: float, ref_n: int) -> TestResult:
    """Two-sided z-test of a window mean against the reference (spread from the reference).

    Using the reference's spread, not the window's, keeps the test honest for
    rare 0/1 scores, where a window with no positive has zero variance.

    >>> r = z_test(1.0, 100, 0.0, 1.0, 1000)
    >>> round(r.statistic, 2), r.p_value < 1e-15
    (9.53, True)
    """
    se = ref_std * math.sqrt(1.0 / n + 1.0 / ref_n)
    z = (mean - ref_mean) / se if se > 0 else 0.0
    return TestResult(z, float(math.erfc(abs(z) / math.sqrt(2.0))), n)


def z_critical(p: float) -> float:
    return float(special.ndtri(1.0 - p / 2.0))


def category_test(
    window: Sequence[float] | FloatArray,
    reference: Sequence[float] | FloatArray,
) -> TestResult:
    """Has the share of any category changed? Fisher's exact test per category
    (this category against all others, window against reference), Bonferroni
    over the categories present.

    A chi-square test needs about five expected events per cell: in a window of
    200 events a 1 % error rate expects two, so the chi-square law no longer
    holds and pooling the rare cells hides exactly the change that matters.
    The exact test also accounts for the reference's own sampling error.
    ``statistic`` is -log10 of the p-value.

    >>> category_test([100, 100], [500, 500]).p_value
    1.0
    >>> category_test([188, 12], [1980, 20]).p_value < 1e-4  # errors 1 % -> 6 %
    True
    """
    w = np.rint(np.asarray(window, dtype=np.float64))
    r = np.rint(np.asarray(reference, dtype=np.float64))
    nw, nr = float(w.sum()), float(r.sum())
    present = (w + r) > 0
    if nw <= 0 or nr <= 0 or int(present.sum()) < 2:
        return TestResult(0.0, 1.0, int(nw))
    w, r = w[present], r[present]
    total, hits = nw + nr, w + r
    up = stats.hypergeom.sf(w - 1, total, hits, nw)
    down = stats.hypergeom.cdf(w, total, hits, nw)
    per = np.minimum(1.0, 2.0 * np.minimum(up, down))
    p = float(min(1.0, float(per.min()) * w.shape[0]))
    return TestResult(-math.log10(max(p, 1e-300)), p, int(nw))
