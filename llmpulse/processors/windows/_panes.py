"""Pane aggregates and the merging of their sketch rows into windows."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from llmpulse._types import FloatArray, IntArray
from llmpulse.processors.sketch import (
    ZERO_KEY,
)
from llmpulse.processors.windows._config import (
    EXACT_FLOAT_INT,
    KEY_BIAS,
    KEY_MARGIN,
    KEY_MASK,
    KEY_SHIFT,
    MAX_CHUNKS,
    N_INTS,
    REQ,
    GroupingSet,
)
from llmpulse.processors.windows._series import (
    SeriesRegistry,
)

# Rows are summed on a dense (series x key) grid when it has at most this many cells
# per row (a cell costs well under a nanosecond to scan, a sorted row tens of them),
# in blocks of series of at most _MAX_GRID_CELLS cells (bounds the scratch memory).
_DENSE_CELLS_PER_ROW: Final = 32
_MAX_GRID_CELLS: Final = 1 << 21
# A window's counters are gathered cell by cell when fewer than this share of the
# (pane, series) grid it covers holds requests (see window_cells).
_GATHER_BELOW: Final = 0.25


# --- panes ---------------------------------------------------------------------------


class _Pane:
    """Aggregates of one base pane (and one cutoff) for every series of a grouping."""

    __slots__ = (
        "_cells",
        "_keys",
        "floats",
        "ints",
        "lat_rows",
        "maxs",
        "mins",
        "sums",
        "ttft_rows",
    )

    def __init__(self, width: int) -> None:
        self.ints: IntArray = np.zeros((N_INTS, width), dtype=np.int64)
        # sums, mins and maxs are views of one array, so a window merges them
        # with one stack of its panes instead of three
        self.floats: FloatArray = np.empty((6, width))
        self.floats[:2] = 0.0
        self.floats[2:4] = np.inf
        self.floats[4:] = -np.inf
        self._views()
        self.lat_rows: list[BucketRows] = []
        self.ttft_rows: list[BucketRows] = []
        # Derived from the rows on first use by the sliding grid (see _SlidingGrid).
        # A pane no longer changes once a window has read it, and it is read by
        # several windows, so these are worth keeping.
        self._keys: tuple[int, int, int, int] | None = None
        self._cells: (
            tuple[int, int, npt.NDArray[np.int32], npt.NDArray[np.int32] | IntArray] | None
        ) = None

    def _views(self) -> None:
        self.sums: FloatArray = self.floats[0:2]
        self.mins: FloatArray = self.floats[2:4]
        self.maxs: FloatArray = self.floats[4:6]

    @property
    def width(self) -> int:
        return int(self.ints.shape[1])

    def ensure(self, width: int) -> None:
        old = self.width
        if width <= old:
            return
        new = max(width, 2 * old)
        grow = new - old
        self.ints = np.concatenate((self.ints, np.zeros((N_INTS, grow), np.int64)), axis=1)
        fresh = np.empty((6, grow))
        fresh[:2], fresh[2:4], fresh[4:] = 0.0, np.inf, -np.inf
        self.floats = np.concatenate((self.floats, fresh), axis=1)
        self._views()

    def add_rows(self, lat: BucketRows, ttft: BucketRows) -> None:
        self._keys = self._cells = None
        # Merging every few batches keeps a busy pane at about (series x buckets)
        # rows instead of one chunk per batch.
        for rows, new in ((self.lat_rows, lat), (self.ttft_rows, ttft)):
            if new.kb.size:
                rows.append(new)
                if len(rows) >= MAX_CHUNKS:
                    self.compact(rows, self.width)

    def summary(self) -> tuple[int, int, int, int]:
        """Smallest positive ``kb``, largest ``kb`` (``2**33, 0`` when none), bucket
        rows and events, for sizing a ``_SlidingGrid``."""
        if self._keys is None:
            lo, hi, n_rows = 2**33, 0, 0
            chunks = [*self.lat_rows, *self.ttft_rows]
            if chunks:
                kb = np.concatenate([r.kb for r in chunks])
                n_rows, hi = kb.size, int(kb.max())
                lo = int(np.min(kb, where=kb > 0, initial=lo))
            self._keys = (lo, hi, n_rows, int(self.ints[REQ].sum()))
        return self._keys

    def cells(
        self, kmin: int, n_keys: int
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32] | IntArray]:
        """Grid cells and counts of the rows in a ``_SlidingGrid`` of that geometry.

        Chunks are not merged first: the grid adds repeated cells up anyway.
        """
        c = self._cells
        if c is None or c[0] != kmin or c[1] != n_keys:
            chunks = [*self.lat_rows, *self.ttft_rows]
            if chunks:
                kb = np.concatenate([r.kb for r in chunks])
                seg = np.concatenate([r.series for r in chunks]) * 2
                # ttft rows (type 1) follow the latency ones
                seg[sum(r.kb.size for r in self.lat_rows) :] += 1
                cells = (seg * n_keys + np.where(kb > 0, kb - (kmin - 1), 0)).astype(np.int32)
                counts = np.concatenate([r.cnt for r in chunks])
                if int(self.ints[REQ].sum()) < 2**31:  # as the grid, mostly int32
                    counts = counts.astype(np.int32)
            else:
                cells, counts = np.zeros(0, np.int32), np.zeros(0, np.int32)
            c = self._cells = (kmin, n_keys, cells, counts)
        return c[2], c[3]

    @staticmethod
    def compact(rows: list[BucketRows], width: int) -> BucketRows | None:
        """The pane's bucket rows as one reduced chunk (merged once, then reused by
        every window that covers the pane)."""
        if not rows:
            return None
        if len(rows) > 1:
            rows[:] = [_combine(rows, width)]
        return rows[0]


class BucketRows:
    """Sketch bucket rows of many series, sorted by (series, key): ``series`` id,
    ``kb`` = key - ZERO_KEY (so 0 is the zero bucket) and ``cnt``."""

    __slots__ = ("cnt", "kb", "series")

    def __init__(self, series: IntArray, kb: IntArray, cnt: IntArray) -> None:
        self.series = series
        self.kb = kb
        self.cnt = cnt

    def slice(self, a: int, b: int) -> BucketRows:
        return BucketRows(self.series[a:b], self.kb[a:b], self.cnt[a:b])


NO_ROWS: Final = BucketRows(*(np.zeros(0, dtype=np.int64) for _ in range(3)))


def _combine(parts: list[BucketRows], n_series: int) -> BucketRows:
    """Add up the bucket rows of several chunks (series ids below ``n_series``)."""
    if len(parts) == 1:
        return parts[0]
    return _sum_rows(
        np.concatenate([r.series for r in parts]),
        np.concatenate([r.kb for r in parts]),
        np.concatenate([r.cnt for r in parts]),
        n_series,
    )


@dataclass(frozen=True)
class WindowCells:
    """The non-empty (window, series) cells of an emission pass, in window order
    and, within a window, in the order of ``rank``: window ``item[j]`` of series
    ``sid[j]`` has counters ``ints[j]`` and latency/ttft sums, minima and maxima
    ``sums[j]``, ``mins[j]``, ``maxs[j]``."""

    item: IntArray
    sid: IntArray
    ints: IntArray
    sums: FloatArray
    mins: FloatArray
    maxs: FloatArray


def window_cells(chosen: Sequence[list[_Pane]], width: int, rank: IntArray) -> WindowCells:
    """Merge the panes ``chosen[t]`` of each window ``t``, for the series holding
    requests in them.

    A window merges its panes column by column, in pane order. With a few hundred
    series every pane holds most of them, and one dense stack per window is the
    cheapest way; with thousands of series each pane holds a few, and a window's
    cells are gathered from its panes' occupied columns and merged after one sort
    (a dense stack would copy panes x width per window, mostly zeros).
    """
    panes = list({id(p): p for ps in chosen for p in ps}.values())
    index = {id(p): k for k, p in enumerate(panes)}
    filled = [t for t, ps in enumerate(chosen) if ps]
    take = [index[id(p)] for t in filled for p in chosen[t]]
    if not take:
        return _no_cells()
    occupied = [np.flatnonzero(p.ints[REQ] > 0) for p in panes]
    n_cells = sum(occupied[k].size for k in take)
    item_of_take = np.repeat(filled, [len(chosen[t]) for t in filled])
    if n_cells < _GATHER_BELOW * len(take) * width:
        lens = [occupied[k].size for k in take]
        sid = np.concatenate([occupied[k] for k in take])
        ints = np.concatenate([panes[k].ints[:, occupied[k]] for k in take], axis=1).T
        floats = np.concatenate([panes[k].floats[:, occupied[k]] for k in take], axis=1).T
        item = np.repeat(item_of_take, lens)
    else:
        for p in panes:
            p.ensure(width)  # panes made before the last new series are narrower
        ints = np.stack([p.ints[:, :width].T for p in panes])[take].reshape(-1, N_INTS)
        floats = np.stack([p.floats[:, :width].T for p in panes])[take].reshape(-1, 6)
        sid = np.tile(np.arange(width), len(take))
        item = np.repeat(item_of_take, width)
        busy = ints[:, REQ] > 0
        ints, floats, sid, item = ints[busy], floats[busy], sid[busy], item[busy]
    # Stable: a cell's panes stay in pane order, so its sums add as a dense merge would.
    key = item * width + rank[sid]
    order = np.argsort(key, kind="stable")
    key = key[order]
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    floats = floats[order]
    return WindowCells(
        item=key[starts] // width,
        sid=sid[order][starts],
        ints=np.add.reduceat(ints[order], starts, axis=0),
        sums=np.add.reduceat(floats[:, 0:2], starts, axis=0),
        mins=np.minimum.reduceat(floats[:, 2:4], starts, axis=0),
        maxs=np.maximum.reduceat(floats[:, 4:6], starts, axis=0),
    )


def _no_cells() -> WindowCells:
    none = np.zeros(0, dtype=np.int64)
    empty = np.zeros((0, 2))
    return WindowCells(none, none, np.zeros((0, N_INTS), dtype=np.int64), empty, empty, empty)


def bucket_rows(
    g: Grouping,
    chosen: Sequence[list[_Pane]],
    spec_of: Sequence[int],
    item: IntArray,
    sid: IntArray,
    width: int,
) -> tuple[npt.NDArray[np.int32], IntArray, IntArray, IntArray]:
    """Merged bucket rows of the results of one emission pass: keys (``ZERO_KEY``
    for the zero bucket), counts, and rows ``starts[j]:ends[j]`` of the latency
    sketch of result ``j`` (window ``item[j]``, series ``sid[j]``) and
    ``starts[m + j]:ends[m + j]`` of its ttft sketch.

    The windows of one spec are consecutive, so a window differs from the one
    before it by a pane or two: a running grid adds the entering panes and takes
    off the leaving ones (``_SlidingGrid``). Where that grid would be too wide or
    too sparse, every window is merged from all its panes (``_window_rows``).
    """
    m = sid.size
    n_items = len(chosen)
    first = np.searchsorted(item, np.arange(n_items + 1)).tolist()  # results of item t
    starts = np.zeros(2 * m, dtype=np.int64)
    ends = np.zeros(2 * m, dtype=np.int64)
    keys: list[npt.NDArray[np.int32]] = []
    counts: list[IntArray] = []
    offset = 0
    for i in sorted(set(spec_of)):
        ts = [t for t in range(n_items) if spec_of[t] == i and first[t + 1] > first[t]]
        if not ts:
            continue
        grid = _SlidingGrid.fit(g, [chosen[t] for t in ts], width)
        if grid is not None:
            for t in ts:
                k, c, bounds = grid.step(chosen[t])
                a, b = first[t], first[t + 1]
                seg = 2 * sid[a:b]
                starts[a:b] = bounds[seg] + offset
                ends[a:b] = starts[m + a : m + b] = bounds[seg + 1] + offset
                ends[m + a : m + b] = bounds[seg + 2] + offset
                keys.append(k)
                counts.append(c)
                offset += k.size
            continue
        slot_of = np.full((n_items, width), -1, dtype=np.int64)
        js = np.concatenate([np.arange(first[t], first[t + 1]) for t in ts])
        slot_of[item[js], sid[js]] = js
        alone = set(ts)
        subset = [chosen[t] if t in alone else [] for t in range(n_items)]
        rows = _window_rows(subset, slot_of, m, width)
        bounds = np.searchsorted(rows.series, np.arange(2 * m + 1))
        both = np.concatenate((js, js + m))
        starts[both] = bounds[both] + offset
        ends[both] = bounds[both + 1] + offset
        keys.append((rows.kb - KEY_BIAS).astype(np.int32))
        counts.append(rows.cnt)
        offset += rows.kb.size
    return (
        np.concatenate(keys) if keys else np.zeros(0, np.int32),
        np.concatenate(counts) if counts else np.zeros(0, np.int64),
        starts,
        ends,
    )


class _SlidingGrid:
    """Bucket counts of one window at a time on a dense grid, moved from window to
    window by subtracting the panes that leave and adding those that enter.

    Cell ``(series * 2 + type) * n_keys + col`` counts bucket ``col`` (0 = zeros,
    else ``kb = kmin + col - 1``) of the latency (type 0) or ttft (type 1) sketch
    of a series. Counts are integers, so subtracting is exact and a bucket whose
    events all left is zero again.

    A grid lives for one emission pass of one spec (keeping it between passes
    saved ~2 % of the time for ~35 % more memory per series). Its size, at most
    ``_MAX_GRID_CELLS`` cells, is ``2 * n_keys`` int32 cells per series slot:
    about 4.8 KiB for 1 % keys over 1 ms..1 min.
    """

    __slots__ = ("_grid", "_held", "_key_of_col", "_kmin", "_n_keys")

    def __init__(self, kmin: int, n_keys: int, cells: int, wide: bool) -> None:
        self._kmin = kmin
        self._n_keys = n_keys
        self._grid = np.zeros(cells, dtype=np.int64 if wide else np.int32)
        key_of_col = np.arange(n_keys, dtype=np.int64) + (kmin - 1 - KEY_BIAS)
        key_of_col[0] = ZERO_KEY
        self._key_of_col = key_of_col.astype(np.int32)
        # The panes summed in the grid now (held, so their ids stay theirs), with
        # the cells and counts they added.
        self._held: dict[int, tuple[_Pane, npt.NDArray[np.int32], npt.NDArray[Any]]] = {}

    @classmethod
    def fit(cls, g: Grouping, windows: Sequence[list[_Pane]], width: int) -> _SlidingGrid | None:
        """A grid for these windows (in order), or None when it would be too large
        or mostly empty cells compared with the rows it saves merging.

        The key range of a grouping's grids only changes when the data leaves it
        (or needs less than half of it), so panes keep their cells from pass to pass.
        """
        panes = list({id(p): p for ps in windows for p in ps}.values())
        spans = [p.summary() for p in panes]
        kmin, kmax = g.key_grid
        lo = min(x[0] for x in spans)
        hi = max(x[1] for x in spans)
        if hi == 0:  # zero buckets only: any range holds them
            lo = hi = max(kmin, 1)
        wanted = (max(1, lo - KEY_MARGIN), hi + KEY_MARGIN)
        if lo < kmin or hi > kmax or 2 * (wanted[1] - wanted[0]) < kmax - kmin:
            kmin, kmax = g.key_grid = wanted
        n_keys = kmax - kmin + 2
        cells = width * 2 * n_keys
        rows = {id(p): x[2] for p, x in zip(panes, spans, strict=True)}
        rows_per_window = sum(rows[id(p)] for ps in windows for p in ps) / len(windows)
        if cells > _MAX_GRID_CELLS or cells > _DENSE_CELLS_PER_ROW * rows_per_window:
            return None
        # int32 cells while no window can hold 2**31 events (leaving panes are
        # subtracted before entering ones are added, so no sum exceeds a window).
        return cls(kmin, n_keys, cells, wide=sum(x[3] for x in spans) >= 2**31)

    def step(self, panes: list[_Pane]) -> tuple[npt.NDArray[np.int32], IntArray, IntArray]:
        """Move to the window made of ``panes``; its (keys, counts) rows and the row
        bounds of each (series, type) segment."""
        held = self._held
        ids = {id(p) for p in panes}
        idx: list[npt.NDArray[np.int32]] = []
        cnt: list[npt.NDArray[Any]] = []
        for k, (_, cells, counts) in held.items():
            if k not in ids:
                idx.append(cells)
                cnt.append(-counts)  # what was added, whatever the pane holds now
        now: dict[int, tuple[_Pane, npt.NDArray[np.int32], npt.NDArray[Any]]] = {}
        for p in panes:
            kept = held.get(id(p))
            if kept is None:
                kept = (p, *p.cells(self._kmin, self._n_keys))
                idx.append(kept[1])
                cnt.append(kept[2])
            now[id(p)] = kept
        self._held = now
        grid = self._grid
        n_keys = self._n_keys
        if idx:
            # leaving panes come first: no cell ever holds more than one window
            np.add.at(grid, np.concatenate(idx), np.concatenate(cnt).astype(grid.dtype, copy=False))
        flat = np.flatnonzero(grid != 0)
        bounds = np.searchsorted(flat, np.arange(0, grid.size + 1, n_keys))
        col = flat - (flat // n_keys) * n_keys
        return self._key_of_col[col], grid[flat].astype(np.int64), bounds


def _window_rows(chosen: list[list[_Pane]], slot_of: IntArray, m: int, width: int) -> BucketRows:
    """The merged bucket rows of every result of one emission pass.

    ``chosen[t]`` are the panes of window ``t`` and ``slot_of[t, series]`` the result
    of that series in it; latency rows go to slot ``j``, ttft rows to ``m + j``. The
    rows come back sorted by (slot, key), so each result's buckets are contiguous.
    """
    parts: list[BucketRows] = []
    offsets: list[int] = []
    shifts: list[int] = []
    for t, ps in enumerate(chosen):
        for p in ps:
            for rows, shift in (
                (_Pane.compact(p.lat_rows, width), 0),
                (_Pane.compact(p.ttft_rows, width), m),
            ):
                if rows is not None:
                    parts.append(rows)
                    offsets.append(t * width)
                    shifts.append(shift)
    if not parts:
        return NO_ROWS
    sizes = [r.series.size for r in parts]
    cell = np.concatenate([r.series for r in parts])
    cell += np.repeat(np.asarray(offsets, dtype=np.int64), sizes)
    slot = slot_of.ravel()[cell]
    slot += np.repeat(np.asarray(shifts, dtype=np.int64), sizes)
    kb = np.concatenate([r.kb for r in parts])
    cnt = np.concatenate([r.cnt for r in parts])
    return _sum_rows(slot, kb, cnt, 2 * m)


def _sum_rows(series: IntArray, kb: IntArray, cnt: IntArray, n_series: int) -> BucketRows:
    """Rows (series, kb, cnt) with repeats added up, sorted by (series, kb).

    Bucket keys of real data span a few hundred values, so the sum is usually taken
    on a dense (series x key) grid: a scatter-add per row and one scan per cell,
    far cheaper than sorting the rows. Sparse data (or keys spread over a range
    too wide for the grid) is sorted instead; both give the same rows.
    """
    if series.size == 0:
        return NO_ROWS
    kmax = int(kb.max())
    kmin = int(np.min(kb, where=kb > 0, initial=kmax)) if kmax else 1
    width = max(kmax, 1) - kmin + 2  # column 0 holds the zero bucket
    cells = n_series * width
    if cells > _DENSE_CELLS_PER_ROW * kb.size:
        return _sum_sorted(series, kb, cnt)
    col = np.where(kb > 0, kb - (kmin - 1), 0)
    per_block = max(1, _MAX_GRID_CELLS // width)
    if n_series <= per_block:
        return _sum_dense(series, col, cnt, n_series, width, kmin)
    # Too many cells for one grid: take the series in blocks (in order, so the
    # concatenated output stays sorted). A stable radix sort groups the rows.
    block = series // per_block
    n_blocks = -(-n_series // per_block)
    order = np.argsort(block.astype(np.uint16) if n_blocks <= 2**16 else block, kind="stable")
    edges = np.searchsorted(block[order], np.arange(n_blocks + 1))
    out = []
    for k in range(n_blocks):
        sel = order[edges[k] : edges[k + 1]]
        if sel.size:
            r = _sum_dense(series[sel] - k * per_block, col[sel], cnt[sel], per_block, width, kmin)
            r.series += k * per_block
            out.append(r)
    return BucketRows(
        *(np.concatenate([getattr(r, f) for r in out]) for f in ("series", "kb", "cnt"))
    )


def _sum_dense(
    series: IntArray, col: IntArray, cnt: IntArray, n_series: int, width: int, kmin: int
) -> BucketRows:
    """``_sum_rows`` on a grid of ``n_series x width`` cells (column 0 = zero bucket)."""
    small = int(cnt.sum()) < 2**31  # int32 cells halve the memory the scan reads
    grid = np.zeros(n_series * width, dtype=np.int32 if small else np.int64)
    np.add.at(grid, series * width + col, cnt.astype(grid.dtype))
    flat = np.flatnonzero(grid != 0)  # every row adds a positive count
    counts = grid[flat].astype(np.int64)
    row = flat // width
    col_out = flat - row * width
    return BucketRows(row, np.where(col_out > 0, col_out + (kmin - 1), 0), counts)


def _sum_sorted(series: IntArray, kb: IntArray, cnt: IntArray) -> BucketRows:
    """``_sum_rows`` by sorting packed (series, kb) keys."""
    packed = (series << KEY_SHIFT) | kb
    order = np.argsort(packed, kind="stable")
    packed = packed[order]
    cnt = cnt[order]
    new = np.empty(packed.size, dtype=np.bool_)
    new[:1] = True
    np.not_equal(packed[1:], packed[:-1], out=new[1:])
    if not new.all():
        if int(cnt.sum()) < EXACT_FLOAT_INT:
            cnt = np.bincount(np.cumsum(new) - 1, weights=cnt).astype(np.int64)
        else:
            cnt = np.add.reduceat(cnt, np.flatnonzero(new))
        packed = packed[new]
    return BucketRows(packed >> KEY_SHIFT, packed & KEY_MASK, cnt)


class Grouping:
    """Everything held for one grouping: the series registry, panes and late counts."""

    __slots__ = (
        "key_grid",
        "late_dense",
        "late_rows",
        "pane_heap",
        "panes",
        "registry",
        "spec",
    )

    def __init__(self, spec: GroupingSet, n_specs: int, max_series: int) -> None:
        self.spec = spec
        self.registry = SeriesRegistry(spec.dims, max_series)
        self.panes: dict[int, dict[int, _Pane]] = {}
        self.pane_heap: list[int] = []  # pane indices, oldest first, to drop in order
        # Late events per window spec: rows (series, cutoff) from the current round,
        # then folded into per-series totals once every window they could precede
        # has been emitted.
        self.late_rows: list[list[tuple[IntArray, IntArray]]] = [[] for _ in range(n_specs)]
        self.late_dense: list[IntArray] = [np.zeros(0, np.int64) for _ in range(n_specs)]
        self.key_grid = (1, 0)  # kb range (first, last) of the sliding grids

    def pane(self, p: int, cutoff: int, width: int) -> _Pane:
        by_cut = self.panes.get(p)
        if by_cut is None:
            by_cut = self.panes[p] = {}
            heapq.heappush(self.pane_heap, p)
        pane = by_cut.get(cutoff)
        if pane is None:
            pane = by_cut[cutoff] = _Pane(width)
        else:
            pane.ensure(width)
        return pane

    def pane_count(self) -> int:
        return sum(len(v) for v in self.panes.values())
