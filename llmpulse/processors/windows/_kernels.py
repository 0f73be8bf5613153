"""Vectorised helpers of the aggregator: per-event features, codes, group sums."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from llmpulse._types import FloatArray, IntArray
from llmpulse.processors.windows._config import (
    COST,
    ERR,
    EXACT_FLOAT_INT,
    IN_TOK,
    LAT,
    MAX_CODES,
    N_INTS,
    OUT_TOK,
    REQ,
    TTFT,
    TTFT_N,
    UNPRICED,
)
from llmpulse.processors.windows._panes import (
    NO_ROWS,
    BucketRows,
)


@dataclass
class Features:
    """Per-event values derived once per batch and shared by every grouping."""

    p: IntArray
    cut: IntArray  # 0 = on time for every window of its pane, else first open end
    lat: FloatArray
    lat_kb: IntArray  # bucket key - ZERO_KEY (0 for a zero)
    ttft: FloatArray  # NaN replaced by 0 for sums
    ttft_ok: npt.NDArray[np.bool_]
    ttft_kb: IntArray
    err: npt.NDArray[np.bool_]
    in_tok: IntArray
    out_tok: IntArray
    cost_pico: IntArray
    unpriced: npt.NDArray[np.bool_]

    def __post_init__(self) -> None:
        # Events in bucket order, computed once and shared by every grouping.
        self.lat_order = _key_order(self.lat_kb, None)
        self.ttft_order = _key_order(self.ttft_kb, self.ttft_ok)

    def take(self, idx: IntArray) -> Features:
        return Features(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


# --- vectorised helpers --------------------------------------------------------------


class Codes:
    """Integer codes of the values of one dimension, kept from batch to batch.

    A dimension column holds Python strings; mapping them through one lasting dict
    costs a lookup per event, where finding each batch's distinct values first
    (then a dict of them) would cost two passes. ``codes`` renumbers the codes of a
    batch densely, so combined keys stay small whatever the dict has grown to.
    """

    __slots__ = ("_index", "_names")

    def __init__(self) -> None:
        self._index: dict[Any, int] = {}
        self._names: list[str] = []

    def codes(self, col: npt.NDArray[Any]) -> tuple[IntArray, list[str]]:
        """Batch-local codes ``0..k-1`` of ``col`` and the name of each code."""
        values = col.tolist()
        n = len(values)
        if len(self._index) > MAX_CODES:
            self._index.clear()  # codes never outlive a batch: safe to start over
            self._names.clear()
        index = self._index
        try:
            codes = np.fromiter(map(index.__getitem__, values), dtype=np.int64, count=n)
        except KeyError:
            for v in dict.fromkeys(values):
                if v not in index:
                    index[v] = len(self._names)
                    self._names.append(v if isinstance(v, str) else "" if v is None else str(v))
            codes = np.fromiter(map(index.__getitem__, values), dtype=np.int64, count=n)
        size = len(self._names)
        if size <= 4 * n + 4096:
            used = occupied(codes, size)
            lut = np.empty(size, dtype=np.int64)
            lut[used] = np.arange(used.size)
            codes = lut[codes]
        else:
            used, codes = np.unique(codes, return_inverse=True)
        names = self._names
        return codes, [names[c] for c in used.tolist()]


def occupied(index: IntArray, size: int) -> IntArray:
    """Sorted distinct values of ``index`` (all in ``[0, size)``).

    Marking a boolean array and scanning it is several times faster than
    ``flatnonzero`` on the int/float counts of the same size.
    """
    mark = np.zeros(size, dtype=np.bool_)
    mark[index] = True
    return np.flatnonzero(mark)


def group_stats(
    f: Features, gi: IntArray, ng: int
) -> tuple[IntArray, FloatArray, FloatArray, FloatArray]:
    """Counters, sums, minima and maxima of the events of each group ``gi``."""
    ints = np.empty((N_INTS, ng), dtype=np.int64)
    ints[REQ] = np.bincount(gi, minlength=ng)
    ints[ERR] = np.bincount(gi, weights=f.err, minlength=ng)
    ints[IN_TOK] = _int_sums(gi, f.in_tok, ng)
    ints[OUT_TOK] = _int_sums(gi, f.out_tok, ng)
    ints[COST] = _int_sums(gi, f.cost_pico, ng)
    ints[UNPRICED] = np.bincount(gi, weights=f.unpriced, minlength=ng)
    ints[TTFT_N] = np.bincount(gi, weights=f.ttft_ok, minlength=ng)
    sums = np.empty((2, ng))
    sums[LAT] = np.bincount(gi, weights=f.lat, minlength=ng)
    sums[TTFT] = np.bincount(gi, weights=f.ttft, minlength=ng)
    mins = np.full((2, ng), np.inf)
    maxs = np.full((2, ng), -np.inf)
    np.minimum.at(mins[LAT], gi, f.lat)
    np.maximum.at(maxs[LAT], gi, f.lat)
    if f.ttft_ok.any():
        np.minimum.at(mins[TTFT], gi, np.where(f.ttft_ok, f.ttft, np.inf))
        np.maximum.at(maxs[TTFT], gi, np.where(f.ttft_ok, f.ttft, -np.inf))
    return ints, sums, mins, maxs


def _int_sums(gi: IntArray, values: IntArray, ng: int) -> IntArray:
    """Exact int64 group sums: bincount (float) while every sum fits in 2**53."""
    if int(values.sum()) < EXACT_FLOAT_INT:
        return np.bincount(gi, weights=values, minlength=ng).astype(np.int64)
    out = np.zeros(ng, dtype=np.int64)
    np.add.at(out, gi, values)
    return out


def _key_order(kb: IntArray, mask: npt.NDArray[np.bool_] | None) -> IntArray:
    """Indices of the (masked) events in bucket order, stable.

    Keys of one batch span a few hundred buckets, so they usually fit 16 bits and
    numpy sorts them with a linear-time radix sort.
    """
    idx = np.arange(kb.size) if mask is None else np.flatnonzero(mask)
    k = kb[idx]
    if k.size == 0:
        return idx
    kmax = int(k.max())
    kmin = int(np.min(k, where=k > 0, initial=kmax)) if kmax else 1
    if kmax - kmin + 1 < 2**16:
        small = np.where(k > 0, k - (kmin - 1), 0).astype(np.uint16)
        return idx[np.argsort(small, kind="stable")]
    return idx[np.argsort(k, kind="stable")]


def group_rows(
    gi: IntArray, ng: int, kb: IntArray, order: IntArray, group_series: IntArray
) -> tuple[IntArray, BucketRows]:
    """Bucket rows of one batch: (group of each row, rows), sorted by (group, key).

    ``order`` lists the events in bucket order; a stable sort by group on top of it
    gives (group, bucket) order, by radix sort when there are under 65,536 groups.
    """
    if order.size == 0:
        return np.zeros(0, dtype=np.int64), NO_ROWS
    g = gi[order]
    by_group = np.argsort(g.astype(np.uint16) if ng < 2**16 else g, kind="stable")
    g = g[by_group]
    k = kb[order[by_group]]
    new = np.empty(g.size, dtype=np.bool_)
    new[0] = True
    np.not_equal(g[1:], g[:-1], out=new[1:])
    new[1:] |= k[1:] != k[:-1]
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, g.size))
    group = g[starts]
    return group, BucketRows(group_series[group], k[starts], counts)
