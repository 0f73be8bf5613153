"""The reference of one drift series: what "normal" embeddings looked like.

A ``Reference`` is fitted once, from the first N embeddings of a series
(warm-up) or from a pinned matrix (``llmpulse baseline set``), and then only
read; a restarted worker restores it from ``drift_baselines`` instead of
relearning. It holds:

* geometry, fitted on the first half of the rows: the centroid of the
  unit-normalised embeddings, the top-k principal directions of their spread
  and the standard deviation along each, and a seeded random projection;
* null statistics, measured on the other half: mean, standard deviation and
  quantiles of the per-event scalars, and mean and covariance of the random
  Fourier features used by the windowed test.

Why two halves: principal directions fitted on a sample fit that sample's
noise, so the sample's own residuals are smaller than those of new events
(about 0.3 standard deviations at 384 dimensions and N=500, measured). Null
statistics measured on the same rows would make every new window look
drifted; on held-out rows they are unbiased.

Inputs are normalised to unit length first: embedding models encode meaning in
direction, and cosine is what every consumer of embeddings compares.

The low-dimensional view the windowed test works on has ``2 + k + p``
coordinates: the cosine distance to the centroid, the residual norm outside
the principal subspace, the k principal coordinates and a p-dimensional random
projection. The first ones see topic-mix and spread changes, the random ones
see shifts in directions the reference never varied in.

>>> rng = np.random.default_rng(0)
>>> ref = Reference.fit(rng.normal(size=(300, 32)), k=4, seed=1)
>>> (ref.n, ref.dim, ref.k, ref.null_n, len(ref.baseline_id))
(300, 32, 4, 150, 16)
>>> Reference.from_dict(ref.to_dict()).baseline_id == ref.baseline_id
True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import orjson

from llmpulse._types import BoolArray, FloatArray
from llmpulse.errors import ConfigError

PAYLOAD_VERSION = 1
# Per-event scalars fed to the online detectors, in column order.
SCALAR_NAMES: tuple[str, ...] = ("cos_distance", "residual", "energy")
QUANTILE_LEVELS: tuple[float, ...] = tuple(i / 20 for i in range(21))
MIN_ROWS = 40
_EPS = 1e-12


def unit_rows(x: FloatArray) -> tuple[FloatArray, BoolArray]:
    """Rows scaled to unit length, and which rows were usable (finite, non-zero).

    >>> u, ok = unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    >>> u.tolist(), ok.tolist()
    ([[0.6, 0.8], [0.0, 0.0]], [True, False])
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a matrix of embeddings, got shape {x.shape}")
    with np.errstate(invalid="ignore", over="ignore"):
        norms = np.linalg.norm(x, axis=1)
    ok = np.isfinite(norms) & (norms > _EPS)
    out = np.zeros_like(x)
    np.divide(x, norms[:, None], out=out, where=ok[:, None])
    return out, ok


def _projection(seed: int, dim: int, p: int) -> FloatArray:
    # Regenerated from the seed rather than stored: it would dominate the payload
    # (dim x p floats). ``projection_check`` catches a generator that changed.
    rng = np.random.default_rng([seed, dim, p, 0x5EED])
    out: FloatArray = rng.standard_normal((dim, p)) / np.sqrt(p)
    return out


def _check(mat: FloatArray) -> float:
    return float(np.round(mat[:4, :4].sum(), 9))


@dataclass(frozen=True, eq=False)
class Reference:
    """Fitted reference of one drift series (immutable; build with ``fit``)."""

    n: int  # rows the reference was built from
    dim: int
    seed: int
    centroid: FloatArray  # (dim,) mean of unit rows, not renormalised
    components: FloatArray  # (k, dim) orthonormal rows
    component_scale: FloatArray  # (k,) std along each component
    projection_dim: int
    projection_check: float
    view_mean: FloatArray  # (2 + k + p,) standardisation of the low-dim view
    view_scale: FloatArray
    bandwidth: float  # RBF bandwidth (median heuristic) in the standardised view
    rff_freq: FloatArray  # (2 + k + p, D), divided by the bandwidth
    rff_phase: FloatArray  # (D,)
    scalar_mean: FloatArray  # (len(SCALAR_NAMES),) on held-out rows
    scalar_std: FloatArray
    scalar_quantiles: FloatArray  # (len(SCALAR_NAMES), len(QUANTILE_LEVELS))
    feature_mean: FloatArray  # (D,) RFF mean under the null
    feature_cov: FloatArray  # (D, D)
    null_n: int  # events behind feature_mean / feature_cov
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # -- construction ---------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        embeddings: FloatArray,
        *,
        k: int = 8,
        projection_dim: int = 16,
        rff_features: int = 48,
        seed: int = 0,
    ) -> Reference:
        """Fit a reference on a matrix of embeddings (one per row, any dimension).

        Rows that are not finite or are all zeros are ignored. The first half of
        the usable rows fits the geometry, the second half the null statistics.
        """
        u, ok = unit_rows(embeddings)
        u = u[ok]
        n, dim = u.shape
        if n < MIN_ROWS:
            raise ConfigError(
                "drift.warmup", f"a reference needs {MIN_ROWS} usable embeddings, got {n}"
            )
        half = n // 2
        a, b = u[:half], u[half:]
        centroid = a.mean(axis=0)
        _, s, vt = np.linalg.svd(a - centroid, full_matrices=False)
        k_eff = max(1, min(k, half - 1, dim))
        floor = max(float(s[0]) / np.sqrt(half - 1) * 1e-6, _EPS)
        scale = np.maximum(s[:k_eff] / np.sqrt(half - 1), floor)
        proj = _projection(seed, dim, projection_dim)
        width = 2 + k_eff + projection_dim
        base = cls(
            n=n,
            dim=dim,
            seed=seed,
            centroid=centroid,
            components=np.ascontiguousarray(vt[:k_eff]),
            component_scale=scale,
            projection_dim=projection_dim,
            projection_check=_check(proj),
            view_mean=np.zeros(width),
            view_scale=np.ones(width),
            bandwidth=1.0,
            rff_freq=np.zeros((width, rff_features)),
            rff_phase=np.zeros(rff_features),
            scalar_mean=np.zeros(len(SCALAR_NAMES)),
            scalar_std=np.ones(len(SCALAR_NAMES)),
            scalar_quantiles=np.zeros((len(SCALAR_NAMES), len(QUANTILE_LEVELS))),
            feature_mean=np.zeros(rff_features),
            feature_cov=np.eye(rff_features),
            null_n=0,
        )
        raw, view = base._raw(b)
        view_mean = view.mean(axis=0)
        view_scale = np.maximum(view.std(axis=0, ddof=1), _EPS)
        vs = (view - view_mean) / view_scale
        # Median heuristic: the bandwidth only has to be the right order of
        # magnitude, so 400 rows (80,000 pairs) are plenty.
        sub = vs[:400]
        d2 = ((sub[:, None, :] - sub[None, :, :]) ** 2).sum(axis=-1)
        bandwidth = float(
            np.sqrt(max(float(np.median(d2[np.triu_indices(sub.shape[0], 1)])), _EPS))
        )
        rng = np.random.default_rng([seed, dim, width, rff_features, 0xFEA7])
        freq = rng.standard_normal((width, rff_features)) / bandwidth
        phase = rng.uniform(0.0, 2.0 * np.pi, size=rff_features)
        feats = np.cos(vs @ freq + phase)
        sd = raw.std(axis=0, ddof=1)
        return replace(
            base,
            view_mean=view_mean,
            view_scale=view_scale,
            bandwidth=bandwidth,
            rff_freq=freq,
            rff_phase=phase,
            scalar_mean=raw.mean(axis=0),
            scalar_std=np.maximum(sd, np.maximum(np.abs(raw.mean(axis=0)) * 1e-6, _EPS)),
            scalar_quantiles=np.quantile(raw, QUANTILE_LEVELS, axis=0).T,
            feature_mean=feats.mean(axis=0),
            feature_cov=np.cov(feats, rowvar=False),
            null_n=int(feats.shape[0]),
            _cache={},
        )

    def with_null(
        self, feature_sum: FloatArray, feature_sqsum: FloatArray, count: int
    ) -> Reference:
        """A copy whose RFF null statistics also count ``count`` more events.

        ``feature_sum`` and ``feature_sqsum`` are the sum of feature rows and of
        their outer products. A larger null sample makes every window's p-value
        trustworthy for this particular reference, not only on average over
        references (see ``windowed``).
        """
        if count <= 0:
            return self
        n0 = self.null_n
        m0 = self.feature_mean
        s0 = self.feature_cov * (n0 - 1) + n0 * np.outer(m0, m0)
        n = n0 + count
        mean = (n0 * m0 + feature_sum) / n
        cov = (s0 + feature_sqsum - n * np.outer(mean, mean)) / (n - 1)
        return replace(self, feature_mean=mean, feature_cov=(cov + cov.T) / 2, null_n=n, _cache={})

    # -- derived state ----------------------------------------------------------------

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    @property
    def rff_features(self) -> int:
        return int(self.rff_freq.shape[1])

    @property
    def view_dim(self) -> int:
        return int(self.view_mean.shape[0])

    def _basis(self) -> FloatArray:
        got: FloatArray | None = self._cache.get("basis")
        if got is None:
            # One matmul gives both the principal and the random projections.
            proj = _projection(self.seed, self.dim, self.projection_dim)
            got = np.ascontiguousarray(np.hstack([self.components.T, proj]))
            self._cache["basis"] = got
        return got

    def whitener(self) -> FloatArray:
        """Symmetric inverse square root of the null feature covariance."""
        got: FloatArray | None = self._cache.get("whitener")
        if got is None:
            vals, vecs = np.linalg.eigh(self.feature_cov)
            # Directions with (numerically) no variance on the reference would
            # turn rounding noise into evidence; floor them.
            vals = np.maximum(vals, max(float(vals.max()), _EPS) * 1e-6)
            got = (vecs / np.sqrt(vals)) @ vecs.T
            self._cache["whitener"] = got
        return got

    # -- transforms ---------------------------------------------------------------------

    def _raw(self, u: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(raw scalars, raw low-dim view) for unit rows."""
        r = u - self.centroid
        both = r @ self._basis()
        k = self.k
        pc = both[:, :k]
        cnorm = max(float(np.linalg.norm(self.centroid)), _EPS)
        cos_dist = 1.0 - (u @ self.centroid) / cnorm
        inside = np.einsum("ij,ij->i", pc, pc)
        total = np.einsum("ij,ij->i", r, r)
        residual = np.sqrt(np.maximum(total - inside, 0.0))
        z = pc / self.component_scale
        energy = np.einsum("ij,ij->i", z, z) / k
        scalars = np.column_stack([cos_dist, residual, energy])
        view = np.column_stack([cos_dist, residual, z, both[:, k:]])
        return scalars, view

    def transform(self, u: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """For unit rows: (standardised scalars, raw scalars, RFF features).

        Standardised scalars have mean 0 and standard deviation 1 on the
        reference. The RFF features' window mean, compared with
        ``feature_mean`` in the metric of ``feature_cov``, is the windowed test.
        """
        raw, view = self._raw(u)
        vs = (view - self.view_mean) / self.view_scale
        feats = np.cos(vs @ self.rff_freq + self.rff_phase)
        return (raw - self.scalar_mean) / self.scalar_std, raw, feats

    # -- storage ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able payload (floats kept exact, so ``from_dict`` round-trips bit for bit)."""
        out: dict[str, Any] = {"version": PAYLOAD_VERSION}
        for name in _FIELDS:
            value = getattr(self, name)
            out[name] = value.tolist() if isinstance(value, np.ndarray) else value
        return out

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Reference:
        if payload.get("version") != PAYLOAD_VERSION:
            raise ConfigError(
                "drift_baselines.payload", f"unknown version {payload.get('version')!r}"
            )
        kwargs: dict[str, Any] = {}
        for name in _FIELDS:
            if name not in payload:
                raise ConfigError("drift_baselines.payload", f"missing {name!r}")
            value = payload[name]
            kwargs[name] = np.asarray(value, dtype=np.float64) if name in _ARRAYS else value
        for name in ("n", "dim", "seed", "projection_dim", "null_n"):
            kwargs[name] = int(kwargs[name])
        for name in ("bandwidth", "projection_check"):
            kwargs[name] = float(kwargs[name])
        ref = cls(**kwargs)
        if (
            abs(_check(_projection(ref.seed, ref.dim, ref.projection_dim)) - ref.projection_check)
            > 1e-6
        ):
            raise ConfigError(
                "drift_baselines.payload",
                "the random projection regenerated from the seed differs from the stored one "
                "(numpy's generator changed?): re-baseline this series",
            )
        return ref

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> Reference:
        payload = orjson.loads(text)
        if not isinstance(payload, dict):
            raise ConfigError("drift_baselines.payload", "not a JSON object")
        return cls.from_dict(payload)

    @property
    def baseline_id(self) -> str:
        """Deterministic id of the content: the same reference always gets the same id."""
        got = self._cache.get("baseline_id")
        if got is None:
            got = hashlib.blake2b(self.to_json().encode(), digest_size=8).hexdigest()
            self._cache["baseline_id"] = got
        return str(got)


_FIELDS: tuple[str, ...] = (
    "n",
    "dim",
    "seed",
    "centroid",
    "components",
    "component_scale",
    "projection_dim",
    "projection_check",
    "view_mean",
    "view_scale",
    "bandwidth",
    "rff_freq",
    "rff_phase",
    "scalar_mean",
    "scalar_std",
    "scalar_quantiles",
    "feature_mean",
    "feature_cov",
    "null_n",
)
# Every field but these scalars is a float64 array.
_ARRAYS = frozenset(_FIELDS) - {
    "n",
    "dim",
    "seed",
    "projection_dim",
    "projection_check",
    "bandwidth",
    "null_n",
}
