"""LogHistogram: the 1 % relative-error guarantee, exact merges and the array round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmpulse.processors.sketch import (
    ZERO_KEY,
    LogHistogram,
    SketchColumns,
    bucket_keys,
    representatives,
    sketch_params,
)

ALPHA = 0.01
LEVELS = (0.5, 0.9, 0.95, 0.99)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _numpy_values(kind: str, seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "lognormal":
        return rng.lognormal(mean=rng.uniform(-3, 8), sigma=rng.uniform(0.1, 3.0), size=n)
    if kind == "pareto":
        return (rng.pareto(rng.uniform(0.5, 3.0), size=n) + 1.0) * rng.uniform(1e-3, 1e3)
    if kind == "ties":
        return rng.choice(np.array([0.0, 1e-9, 1.0, 2.0, 250.0, 1e9]), size=n)
    if kind == "wide":
        return 10.0 ** rng.uniform(-9, 9, size=n)
    raise AssertionError(kind)


# Hand-made lists shrink well (tiny, huge, zero, ties); numpy draws cover heavy tails.
finite_values = st.one_of(
    st.just(0.0),
    st.sampled_from([1e-9, 1e9, 1.0, 0.5, 123.456]),
    st.floats(min_value=1e-9, max_value=1e9, allow_nan=False, allow_infinity=False),
    # subnormal doubles are excluded: they cannot hold 1 % precision themselves
    st.floats(
        min_value=0.0,
        max_value=1e300,
        allow_nan=False,
        allow_infinity=False,
        allow_subnormal=False,
    ),
)
value_arrays = st.one_of(
    st.lists(finite_values, min_size=1, max_size=300).map(lambda v: np.array(v, dtype=np.float64)),
    st.builds(
        _numpy_values,
        st.sampled_from(["lognormal", "pareto", "ties", "wide"]),
        st.integers(0, 2**32 - 1),
        st.integers(1, 3000),
    ),
)


def rel_err(estimate: float, exact: float) -> float:
    if exact == 0.0:
        return 0.0 if estimate == 0.0 else math.inf
    return abs(estimate - exact) / exact


def sketch_of(values: np.ndarray) -> LogHistogram:
    h = LogHistogram(ALPHA)
    h.update_many(values)
    return h


@SETTINGS
@given(values=value_arrays, extra_q=st.floats(min_value=0.0, max_value=1.0))
def test_quantiles_within_alpha_of_lower_order_statistic(
    values: np.ndarray, extra_q: float
) -> None:
    h = sketch_of(values)
    for q in (*LEVELS, extra_q, 0.0, 1.0):
        exact = float(np.quantile(values, q, method="lower"))
        assert rel_err(h.quantile(q), exact) <= ALPHA, (q, h.quantile(q), exact)
        assert (
            rel_err(h.bucket_quantile(q), exact) <= ALPHA
            or exact == 0.0
            or math.isinf(h.bucket_quantile(q))
        )
    assert h.quantile(0.0) == values.min()
    assert h.quantile(1.0) == values.max()
    assert (h.count, h.min, h.max) == (values.size, values.min(), values.max())
    assert h.zero_count == int((values == 0).sum())


@SETTINGS
@given(parts=st.lists(value_arrays, min_size=1, max_size=5))
def test_merge_equals_sketch_of_concatenation(parts: list[np.ndarray]) -> None:
    merged = LogHistogram(ALPHA)
    for p in parts:
        merged.merge(sketch_of(p))
    whole = sketch_of(np.concatenate(parts))
    mk, mc = merged.to_arrays()
    wk, wc = whole.to_arrays()
    assert np.array_equal(mk, wk) and np.array_equal(mc, wc)
    assert (merged.count, merged.zero_count, merged.min, merged.max) == (
        whole.count,
        whole.zero_count,
        whole.min,
        whole.max,
    )
    assert merged.sum == pytest.approx(whole.sum, rel=1e-9)
    for q in (*LEVELS, 0.0, 0.3, 1.0):
        assert merged.quantile(q) == whole.quantile(q)


@SETTINGS
@given(values=value_arrays)
def test_single_updates_match_update_many(values: np.ndarray) -> None:
    one_by_one = LogHistogram(ALPHA)
    for v in values[:500].tolist():
        one_by_one.update(v)
    batch = sketch_of(values[:500])
    assert one_by_one.to_arrays()[0].tolist() == batch.to_arrays()[0].tolist()
    assert one_by_one.to_arrays()[1].tolist() == batch.to_arrays()[1].tolist()
    assert [one_by_one.quantile(q) for q in LEVELS] == [batch.quantile(q) for q in LEVELS]


@SETTINGS
@given(values=value_arrays)
def test_arrays_round_trip(values: np.ndarray) -> None:
    h = sketch_of(values)
    keys, counts = h.to_arrays()
    assert keys.dtype == np.int32 and counts.dtype == np.uint64
    assert np.all(np.diff(keys) > 0)
    back = LogHistogram.from_arrays(
        keys, counts, h.zero_count, ALPHA, min=h.min, max=h.max, sum=h.sum
    )
    assert back == h
    for q in (*LEVELS, 0.0, 1.0):
        assert back.quantile(q) == h.quantile(q)
    # without min/max the answers still keep the guarantee (bucket answers)
    loose = LogHistogram.from_arrays(keys, counts, h.zero_count, ALPHA)
    for q in LEVELS:
        exact = float(np.quantile(values, q, method="lower"))
        assert rel_err(loose.quantile(q), exact) <= ALPHA


def test_every_value_in_a_bucket_is_within_alpha_of_its_representative() -> None:
    params = sketch_params(ALPHA)
    # values at and around bucket edges over the whole range of normal doubles
    ks = np.arange(-35_300, 35_400, 3, dtype=np.float64)
    edges = np.exp(ks * params.log_gamma)
    values = np.concatenate([edges, np.nextafter(edges, 0), np.nextafter(edges, np.inf)])
    normal = np.finfo(np.float64).smallest_normal
    values = values[(values >= normal) & np.isfinite(values)]
    reps = representatives(bucket_keys(values, params), params)
    ok = np.isfinite(reps)
    assert np.all(np.abs(reps[ok] - values[ok]) / values[ok] <= ALPHA)


def test_extreme_values_keep_the_guarantee() -> None:
    tiny, huge = 5e-324, np.finfo(np.float64).max
    # a lone subnormal is the exact min; interior values are normal doubles
    values = np.array([tiny, 1e-300, 3e-300, 1.0, 1e300, huge / 2, huge])
    h = sketch_of(values)
    for q in np.linspace(0, 1, 41):
        exact = float(np.quantile(values, q, method="lower"))
        assert rel_err(h.quantile(float(q)), exact) <= ALPHA


def test_single_value_and_zeros() -> None:
    h = sketch_of(np.array([42.0]))
    assert h.quantile(0.5) == 42.0
    z = sketch_of(np.zeros(5))
    assert z.quantile(0.99) == 0.0 and z.zero_count == 5 and z.bucket_count == 0
    mixed = sketch_of(np.array([0.0, 0.0, 0.0, 7.0]))
    assert mixed.quantile(0.5) == 0.0  # k = floor(0.5 * 3) = 1 is a zero
    assert mixed.quantile(0.99) == 0.0  # k = 2, still a zero
    assert mixed.quantile(1.0) == 7.0


def test_empty_sketch_answers_nan() -> None:
    h = LogHistogram()
    assert math.isnan(h.quantile(0.5)) and math.isnan(h.min) and math.isnan(h.max)
    assert h.count == 0 and h.to_arrays()[0].size == 0


@pytest.mark.parametrize("bad", [-1.0, -1e-300, math.nan, math.inf, -math.inf])
def test_invalid_values_raise(bad: float) -> None:
    h = LogHistogram()
    with pytest.raises(ValueError):
        h.update(bad)
    with pytest.raises(ValueError):
        h.update_many(np.array([1.0, bad]))
    assert h.count == 0


def test_invalid_arguments_raise() -> None:
    with pytest.raises(ValueError):
        LogHistogram(0.0)
    with pytest.raises(ValueError):
        LogHistogram(1.5)
    with pytest.raises(ValueError):
        LogHistogram(0.01).merge(LogHistogram(0.02))
    with pytest.raises(ValueError):
        sketch_of(np.array([1.0])).quantile(1.5)
    with pytest.raises(ValueError):
        LogHistogram.from_arrays([1, 2], [1])
    with pytest.raises(ValueError):
        LogHistogram.from_arrays([1], [-1])
    with pytest.raises(ValueError):
        LogHistogram.from_arrays([ZERO_KEY], [1])


def test_from_arrays_adds_repeated_keys_and_drops_empty_buckets() -> None:
    h = LogHistogram.from_arrays([5, 3, 5, 9], [1, 2, 3, 0], zero_count=1)
    keys, counts = h.to_arrays()
    assert keys.tolist() == [3, 5] and counts.tolist() == [2, 4] and h.count == 7


def test_shared_arrays_are_read_only() -> None:
    a = sketch_of(np.array([1.0, 2.0, 3.0]))
    b = a.copy()
    b.update(1000.0)
    assert a.count == 3 and b.count == 4
    assert a.quantile(1.0) == 3.0 and b.quantile(1.0) == 1000.0
    a.merge(a)  # merging with itself doubles every count
    assert a.count == 6


def test_other_accuracy() -> None:
    rng = np.random.default_rng(3)
    x = rng.lognormal(3, 2, 5000)
    h = LogHistogram(0.05)
    h.update_many(x)
    for q in LEVELS:
        assert rel_err(h.quantile(q), float(np.quantile(x, q, method="lower"))) <= 0.05
    assert h.bucket_count < sketch_of(x).bucket_count


def columns_of(sketches: list[LogHistogram], order: list[int]) -> SketchColumns:
    """SketchColumns holding ``sketches``, their rows laid out in ``order``."""
    keys, counts = [], []
    starts = np.zeros(len(sketches), dtype=np.int64)
    ends = np.zeros(len(sketches), dtype=np.int64)
    offset = 0
    for j in order:
        h = sketches[j]
        k, c = h.to_arrays()
        if h.zero_count:
            k = np.concatenate(([ZERO_KEY], k)).astype(np.int32)
            c = np.concatenate(([h.zero_count], c))
        keys.append(k.astype(np.int32))
        counts.append(c.astype(np.int64))
        starts[j], ends[j] = offset, offset + k.size
        offset += k.size
    return SketchColumns(
        sketch_params(ALPHA),
        np.concatenate(keys) if keys else np.zeros(0, np.int32),
        np.concatenate(counts) if counts else np.zeros(0, np.int64),
        starts=starts,
        ends=ends,
        n=np.array([h.count for h in sketches], dtype=np.int64),
        lo=np.array([h.min if h.count else math.inf for h in sketches]),
        hi=np.array([h.max if h.count else -math.inf for h in sketches]),
        total=np.array([h.sum for h in sketches]),
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(st.one_of(st.just(np.zeros(0)), value_arrays), min_size=1, max_size=6),
    data=st.data(),
)
def test_sketch_columns_answer_as_each_sketch(parts: list[np.ndarray], data: st.DataObject) -> None:
    sketches = [sketch_of(p) for p in parts]
    order = data.draw(st.permutations(range(len(sketches))))
    cols = columns_of(sketches, list(order))
    levels = (*LEVELS, 0.0, 0.37, 1.0)
    got = cols.quantiles(levels)
    assert got.shape == (len(levels), len(sketches))
    for j, h in enumerate(sketches):
        want = [h.quantile(q) for q in levels]
        assert np.array_equal(got[:, j], np.array(want), equal_nan=True), (j, got[:, j], want)
        rebuilt = cols.sketch(j)
        assert rebuilt == h
        assert [rebuilt.quantile(q) for q in levels] == pytest.approx(want, nan_ok=True)
    with pytest.raises(ValueError):
        cols.keys[:1] = 0  # shared, so read-only
