"""A DDSketch-style logarithmic histogram with a hard relative-error bound on quantiles.

Values are counted in buckets whose bounds grow geometrically by ``gamma``: bucket ``k``
holds the values in ``(gamma**(k-1), gamma**k]`` and answers with ``2 * gamma**k /
(gamma + 1)``, which is within ``alpha`` relative error of every value in the bucket.
Exact zeros are counted apart (their answer is ``0.0``). Merging two sketches adds
their bucket counts, so per-pane sketches merge into per-window sketches exactly.

Quantile target, defined precisely: for ``n`` values sorted as ``x_(0) <= ... <=
x_(n-1)``, ``quantile(q)`` estimates the order statistic ``x_(k)`` with ``k =
floor(q * (n - 1))`` -- numpy's ``np.quantile(x, q, method="lower")``. The answer is
within ``alpha`` relative error of ``x_(k)``; it is exactly the tracked ``min`` when
``k == 0`` and exactly the tracked ``max`` when ``k == n - 1``. (The bound holds for
zero and every normal double; subnormals below 2.2e-308 are accepted but carry too
few bits to hold 1 % themselves.)

>>> import numpy as np
>>> h = LogHistogram(relative_accuracy=0.01)
>>> h.update_many(np.array([0.0, 1.0, 2.0, 3.0, 1000.0]))
>>> h.count, h.zero_count, h.min, h.max
(5, 1, 0.0, 1000.0)
>>> exact = float(np.quantile([0.0, 1.0, 2.0, 3.0, 1000.0], 0.5, method="lower"))
>>> exact, abs(h.quantile(0.5) - exact) / exact <= 0.01
(2.0, True)
>>> h.quantile(1.0)
1000.0
>>> other = LogHistogram()
>>> other.update(2.5)
>>> h.merge(other)
>>> h.count
6
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_ALPHA",
    "ZERO_KEY",
    "LogHistogram",
    "SketchColumns",
    "SketchParams",
    "bucket_keys",
    "representatives",
    "sketch_params",
]

DEFAULT_ALPHA: Final = 0.01

# Sentinel key for exact zeros in columnar code (windows, SQL rows): it sorts before
# every real key, so cumulative counts over sorted keys keep zeros first, as they are.
ZERO_KEY: Final = int(np.iinfo(np.int32).min)

# At a bucket edge the representative is exactly alpha away from the value, so a
# rounding error of one ulp in log() or exp() could push the error just past alpha.
# Buckets are therefore built for an accuracy a hair tighter than the one promised;
# the cost is invisible (1e-7 relative more buckets) and the bound becomes hard.
_EDGE_SAFETY: Final = 1e-7
_PENDING_LIMIT: Final = 4096

KeyArray = npt.NDArray[np.int32]
CountArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SketchParams:
    """Bucket geometry for one promised relative accuracy ``alpha``."""

    alpha: float
    gamma: float
    log_gamma: float
    inv_log_gamma: float
    rep_factor: float  # 2 / (gamma + 1): representative = gamma**k * rep_factor


@functools.lru_cache(maxsize=32)
def sketch_params(alpha: float = DEFAULT_ALPHA) -> SketchParams:
    """The bucket geometry for relative accuracy ``alpha`` (0 < alpha < 1).

    >>> p = sketch_params(0.01)
    >>> round(p.gamma, 6)
    1.020202
    """
    if not (isinstance(alpha, float | int) and 0.0 < alpha < 1.0):
        raise ValueError(f"relative accuracy must be in (0, 1), got {alpha!r}")
    a = float(alpha) * (1.0 - _EDGE_SAFETY)
    gamma = (1.0 + a) / (1.0 - a)
    log_gamma = math.log(gamma)
    return SketchParams(float(alpha), gamma, log_gamma, 1.0 / log_gamma, 2.0 / (gamma + 1.0))


def bucket_keys(values: npt.NDArray[np.float64], params: SketchParams) -> KeyArray:
    """Bucket keys ``ceil(log_gamma(x))`` of finite values ``> 0`` (no check here)."""
    return np.ceil(np.log(values) * params.inv_log_gamma).astype(np.int32)


def representatives(keys: npt.NDArray[np.integer], params: SketchParams) -> npt.NDArray[np.float64]:
    """The answer value of each bucket key; ``ZERO_KEY`` answers ``0.0``.

    Computed as ``exp(k * log(gamma)) * 2 / (gamma + 1)`` -- the same expression the
    SQL function uses, so Python and ClickHouse agree to the last few ulps.
    """
    k = np.asarray(keys, dtype=np.float64)
    with np.errstate(over="ignore"):
        reps = np.exp(k * params.log_gamma) * params.rep_factor
    return np.where(np.asarray(keys) == ZERO_KEY, 0.0, reps)


def _merge_sorted(
    k1: KeyArray, c1: CountArray, k2: KeyArray, c2: CountArray
) -> tuple[KeyArray, CountArray]:
    """Union of two sorted sparse histograms, adding counts of equal keys exactly."""
    if k2.size == 0:
        return k1, c1
    if k1.size == 0:
        return k2, c2
    keys = np.concatenate((k1, k2))
    counts = np.concatenate((c1, c2))
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    counts = counts[order]
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    return keys[starts], np.add.reduceat(counts, starts)


_A = TypeVar("_A", bound="np.ndarray[Any, Any]")


def _frozen(a: _A) -> _A:
    # Bucket arrays are shared between sketches (merged window results hand out
    # views); making them read-only turns any in-place write into an error.
    a.flags.writeable = False
    return a


_EMPTY_KEYS: Final[KeyArray] = np.zeros(0, dtype=np.int32)
_EMPTY_COUNTS: Final[CountArray] = np.zeros(0, dtype=np.int64)
_EMPTY_KEYS.flags.writeable = False
_EMPTY_COUNTS.flags.writeable = False


class LogHistogram:
    """Sparse logarithmic histogram of values ``>= 0`` with relative accuracy ``alpha``.

    Storage is two sorted numpy arrays (keys ``int32``, counts ``int64``) plus a small
    buffer of single ``update`` values folded in on the next read. The arrays are never
    written in place, so sketches may share them safely.
    """

    __slots__ = (
        "_counts",
        "_cum",
        "_keys",
        "_max",
        "_min",
        "_n",
        "_params",
        "_pending",
        "_sum",
        "_zeros",
    )

    def __init__(self, relative_accuracy: float = DEFAULT_ALPHA) -> None:
        self._params = sketch_params(relative_accuracy)
        self._keys: KeyArray = _EMPTY_KEYS
        self._counts: CountArray = _EMPTY_COUNTS
        self._cum: CountArray | None = None
        self._zeros = 0
        self._n = 0
        self._min = math.inf
        self._max = -math.inf
        self._sum = 0.0
        self._pending: list[float] = []

    # -- construction from parts -------------------------------------------------

    @classmethod
    def _from_parts(
        cls,
        params: SketchParams,
        keys: KeyArray,
        counts: CountArray,
        *,
        zeros: int,
        n: int,
        lo: float,
        hi: float,
        total: float,
    ) -> LogHistogram:
        """Trusted constructor for code that already holds sorted, reduced, read-only arrays."""
        h = cls.__new__(cls)
        h._params = params
        h._keys = keys
        h._counts = counts
        h._cum = None
        h._zeros = zeros
        h._n = n
        h._min = lo
        h._max = hi
        h._sum = total
        h._pending = []
        return h

    @classmethod
    def from_arrays(
        cls,
        keys: npt.ArrayLike,
        counts: npt.ArrayLike,
        zero_count: int = 0,
        alpha: float = DEFAULT_ALPHA,
        *,
        min: float | None = None,
        max: float | None = None,
        sum: float | None = None,
    ) -> LogHistogram:
        """Rebuild a sketch from ``to_arrays()`` output (for example a stored row).

        Keys may come unsorted or repeated (their counts are added). When ``min``,
        ``max`` or ``sum`` are not given they are estimated from the buckets, within
        ``alpha`` relative error instead of exact.

        >>> h = LogHistogram.from_arrays([0, 35], [2, 1], zero_count=1, min=0.0, max=2.0)
        >>> h.count, h.quantile(0.0), h.quantile(1.0)
        (4, 0.0, 2.0)
        """
        params = sketch_params(alpha)
        k = np.asarray(keys)
        c = np.asarray(counts)
        if k.shape != c.shape or k.ndim != 1:
            raise ValueError("keys and counts must be 1-D arrays of the same length")
        integer = np.issubdtype(k.dtype, np.integer) and np.issubdtype(c.dtype, np.integer)
        if k.size and not integer:
            raise ValueError("keys and counts must be integer arrays")
        k64 = k.astype(np.int64)
        c64 = c.astype(np.int64)
        if k.size and (k64.min() <= ZERO_KEY or k64.max() > np.iinfo(np.int32).max):
            raise ValueError("bucket keys out of int32 range")
        if k.size and c64.min() < 0:
            raise ValueError("bucket counts must be >= 0")
        if zero_count < 0:
            raise ValueError("zero_count must be >= 0")
        keep = c64 > 0
        sk, sc = _reduce(k64[keep].astype(np.int32), c64[keep])
        n = int(sc.sum()) + int(zero_count)
        reps = representatives(sk, params)
        if n == 0:
            lo, hi, total = math.inf, -math.inf, 0.0
        else:
            lo = float(min) if min is not None else (0.0 if zero_count else float(reps[0]))
            hi = float(max) if max is not None else float(reps[-1]) if sk.size else 0.0
            total = float(sum) if sum is not None else float(np.dot(reps, sc.astype(np.float64)))
            if lo > hi:
                raise ValueError(f"min {lo!r} is greater than max {hi!r}")
        return cls._from_parts(
            params, _frozen(sk), _frozen(sc), zeros=int(zero_count), n=n, lo=lo, hi=hi, total=total
        )

    def copy(self) -> LogHistogram:
        """An independent sketch with the same contents."""
        self._flush()
        return LogHistogram._from_parts(
            self._params,
            self._keys,
            self._counts,
            zeros=self._zeros,
            n=self._n,
            lo=self._min,
            hi=self._max,
            total=self._sum,
        )

    # -- properties ----------------------------------------------------------------

    @property
    def alpha(self) -> float:
        """The promised relative accuracy."""
        return self._params.alpha

    @property
    def gamma(self) -> float:
        """Ratio between consecutive bucket bounds."""
        return self._params.gamma

    @property
    def params(self) -> SketchParams:
        return self._params

    @property
    def count(self) -> int:
        return self._n

    @property
    def zero_count(self) -> int:
        return self._zeros

    @property
    def min(self) -> float:
        """Exact smallest value seen (NaN when empty)."""
        return self._min if self._n else math.nan

    @property
    def max(self) -> float:
        """Exact largest value seen (NaN when empty)."""
        return self._max if self._n else math.nan

    @property
    def sum(self) -> float:
        """Sum of the values seen (float; merge order may change the last bits)."""
        return self._sum

    @property
    def bucket_count(self) -> int:
        """Number of non-empty buckets (zeros excluded): the size of the sketch."""
        self._flush()
        return int(self._keys.size)

    # -- updates -------------------------------------------------------------------

    def update(self, x: float) -> None:
        """Add one value (finite, ``>= 0``)."""
        v = float(x)
        if not (v >= 0.0 and v != math.inf):
            raise ValueError(f"sketch values must be finite and >= 0, got {x!r}")
        self._n += 1
        self._sum += v
        self._min = min(self._min, v)
        self._max = max(self._max, v)
        if v == 0.0:
            self._zeros += 1
            return
        # Buffered so a stream of single updates costs one vectorised pass per 4096.
        self._pending.append(v)
        if len(self._pending) >= _PENDING_LIMIT:
            self._flush()

    def update_many(self, values: npt.ArrayLike) -> None:
        """Add many values at once (vectorised); all must be finite and ``>= 0``."""
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size == 0:
            return
        bad = ~(x >= 0.0) | (x == np.inf)
        if bad.any():
            raise ValueError(f"sketch values must be finite and >= 0, got {float(x[bad][0])!r}")
        self._n += int(x.size)
        with np.errstate(over="ignore"):  # a sum past 1.8e308 is inf, as in Python
            self._sum += float(x.sum())
        self._min = min(self._min, float(x.min()))
        self._max = max(self._max, float(x.max()))
        positive = x[x > 0.0]
        self._zeros += int(x.size - positive.size)
        self._add_positive(positive)

    def _add_positive(self, positive: npt.NDArray[np.float64]) -> None:
        if positive.size == 0:
            return
        keys, counts = np.unique(bucket_keys(positive, self._params), return_counts=True)
        k, c = _merge_sorted(
            self._keys, self._counts, keys.astype(np.int32), counts.astype(np.int64)
        )
        self._keys = _frozen(k)
        self._counts = _frozen(c)
        self._cum = None

    def _flush(self) -> None:
        if self._pending:
            pending = np.array(self._pending, dtype=np.float64)
            self._pending = []
            self._add_positive(pending)

    def merge(self, other: LogHistogram) -> None:
        """Add every value of ``other`` into this sketch (same ``alpha`` required)."""
        if other._params.alpha != self._params.alpha:
            raise ValueError(f"cannot merge sketches of accuracy {self.alpha} and {other.alpha}")
        if other is self:
            other = other.copy()
        self._flush()
        other._flush()
        if other._n == 0:
            return
        k, c = _merge_sorted(self._keys, self._counts, other._keys, other._counts)
        self._keys = _frozen(k)
        self._counts = _frozen(c)
        self._cum = None
        self._zeros += other._zeros
        self._n += other._n
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    # -- queries -------------------------------------------------------------------

    def _rank(self, q: float) -> int:
        if not (0.0 <= q <= 1.0):
            raise ValueError(f"quantile must be in [0, 1], got {q!r}")
        # float64 product, floored: exactly how numpy's method="lower" picks its index
        return math.floor(float(q) * (self._n - 1))

    def _bucket_value(self, k: int) -> float:
        if k < self._zeros:
            return 0.0
        if self._cum is None:
            self._cum = np.cumsum(self._counts)
        idx = int(np.searchsorted(self._cum, k - self._zeros, side="right"))
        return float(representatives(self._keys[idx : idx + 1], self._params)[0])

    def quantile(self, q: float) -> float:
        """Estimate of ``x_(floor(q*(n-1)))``, within ``alpha`` relative error (NaN if empty)."""
        self._flush()
        if self._n == 0:
            self._rank(q)
            return math.nan
        k = self._rank(q)
        if k == 0:
            return self._min
        if k == self._n - 1:
            return self._max
        # Clamping can only move the answer towards the true order statistic.
        return min(max(self._bucket_value(k), self._min), self._max)

    def quantiles(self, qs: Iterable[float]) -> list[float]:
        """``quantile`` for several levels."""
        return [self.quantile(q) for q in qs]

    def bucket_quantile(self, q: float) -> float:
        """The bucket answer for ``q`` without the exact min/max refinements.

        This is what the SQL function ``llmpulse_sketch_quantile`` computes from the
        stored buckets alone; it is also within ``alpha`` of ``x_(k)``.
        """
        self._flush()
        if self._n == 0:
            self._rank(q)
            return math.nan
        return self._bucket_value(self._rank(q))

    def to_arrays(self) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.uint64]]:
        """Sorted bucket keys (``int32``) and counts (``uint64``); zeros are in ``zero_count``."""
        self._flush()
        return self._keys.copy(), self._counts.astype(np.uint64)

    def __len__(self) -> int:
        return self._n

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LogHistogram):
            return NotImplemented
        self._flush()
        other._flush()
        return (
            self._params.alpha == other._params.alpha
            and self._n == other._n
            and self._zeros == other._zeros
            and (self._n == 0 or (self._min == other._min and self._max == other._max))
            and self._sum == other._sum
            and np.array_equal(self._keys, other._keys)
            and np.array_equal(self._counts, other._counts)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"LogHistogram(alpha={self.alpha}, count={self._n}, zeros={self._zeros}, "
            f"buckets={self.bucket_count}, min={self.min}, max={self.max})"
        )


def _reduce(keys: KeyArray, counts: CountArray) -> tuple[KeyArray, CountArray]:
    """Sort keys and add the counts of repeated keys (exact int64)."""
    if keys.size == 0:
        return _EMPTY_KEYS, _EMPTY_COUNTS
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    c = counts[order]
    starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
    return k[starts], np.add.reduceat(c, starts)


class SketchColumns:
    """Many sketches held column-wise: sketch ``j`` is rows ``starts[j]:ends[j]`` of
    the shared ``keys``/``counts`` (sorted, reduced; an exact-zero row, key
    ``ZERO_KEY``, first) with its count ``n``, exact ``lo``/``hi`` and ``total``.

    ``quantiles`` answers for all of them at once, exactly as ``LogHistogram.quantile``
    would; ``sketch(j)`` builds the LogHistogram of one, viewing the shared arrays
    (made read-only for that).

    >>> cols = SketchColumns(
    ...     sketch_params(0.01), np.array([ZERO_KEY, 35, 70], np.int32), np.array([1, 2, 1]),
    ...     starts=np.array([0, 3]), ends=np.array([3, 3]), n=np.array([4, 0]),
    ...     lo=np.array([0.0, np.inf]), hi=np.array([4.0, -np.inf]), total=np.array([6.0, 0.0]))
    >>> cols.quantiles([0.5]).round(3).tolist()
    [[1.994, nan]]
    >>> h = cols.sketch(0)
    >>> h.count, h.zero_count, round(h.quantile(0.5), 3), h.to_arrays()[0].tolist()
    (4, 1, 1.994, [35, 70])
    """

    __slots__ = (
        "_rows",
        "counts",
        "ends",
        "hi",
        "keys",
        "lo",
        "n",
        "params",
        "starts",
        "total",
        "zeros",
    )

    def __init__(
        self,
        params: SketchParams,
        keys: KeyArray,
        counts: CountArray,
        *,
        starts: npt.NDArray[np.int64],
        ends: npt.NDArray[np.int64],
        n: npt.NDArray[np.int64],
        lo: npt.NDArray[np.float64],
        hi: npt.NDArray[np.float64],
        total: npt.NDArray[np.float64],
    ) -> None:
        self.params = params
        self.keys = _frozen(keys)
        self.counts = _frozen(counts)
        self.starts = starts
        self.ends = ends
        self.n = n
        self.lo = lo
        self.hi = hi
        self.total = total
        zeros = np.zeros(n.size, dtype=np.int64)
        if keys.size:
            first = np.minimum(starts, keys.size - 1)
            has_zero = (ends > starts) & (keys[first] == ZERO_KEY)
            zeros[has_zero] = counts[first[has_zero]]
        self.zeros = zeros
        self._rows: list[tuple[int, int, int, int, float, float, float]] | None = None

    @property
    def size(self) -> int:
        return int(self.n.size)

    def quantiles(self, qs: Iterable[float]) -> npt.NDArray[np.float64]:
        """``(len(qs), size)`` answers; NaN for empty sketches."""
        levels = np.asarray(list(qs), dtype=np.float64)[:, None]
        out = np.full((levels.shape[0], self.size), np.nan)
        valid = self.n > 0
        if not valid.any() or self.keys.size == 0:
            return out
        cum = np.cumsum(self.counts)
        before = np.where(self.starts > 0, cum[np.maximum(self.starts - 1, 0)], 0)
        # same float64 product and floor as LogHistogram._rank, for all levels at once
        k = np.floor(levels * (self.n.astype(np.float64) - 1.0)).astype(np.int64)
        idx = np.minimum(np.searchsorted(cum, before + k, side="right"), self.keys.size - 1)
        v = np.minimum(np.maximum(representatives(self.keys[idx], self.params), self.lo), self.hi)
        v = np.where(k == 0, self.lo, v)
        v = np.where(k == self.n - 1, self.hi, v)
        return np.where(valid, v, np.nan)

    def sketch(self, j: int) -> LogHistogram:
        """Sketch ``j`` as a LogHistogram (viewing the shared arrays)."""
        if self._rows is None:
            # Everything a sketch needs, as Python numbers, converted in one pass.
            self._rows = list(
                zip(
                    self.starts.tolist(),
                    self.ends.tolist(),
                    self.zeros.tolist(),
                    self.n.tolist(),
                    self.lo.tolist(),
                    self.hi.tolist(),
                    self.total.tolist(),
                    strict=True,
                )
            )
        a, b, zeros, n, lo, hi, total = self._rows[j]
        if n == 0:
            return LogHistogram(self.params.alpha)
        first = a + 1 if zeros else a  # the zero bucket is kept apart
        return LogHistogram._from_parts(
            self.params,
            self.keys[first:b],
            self.counts[first:b],
            zeros=zeros,
            n=n,
            lo=lo,
            hi=hi,
            total=total,
        )
