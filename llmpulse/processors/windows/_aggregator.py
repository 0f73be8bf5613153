"""The event-time window aggregator."""

from __future__ import annotations

import heapq
import itertools
import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from llmpulse._types import IntArray
from llmpulse.errors import ConfigError
from llmpulse.processors.sketch import (
    DEFAULT_ALPHA,
    ZERO_KEY,
    SketchColumns,
    SketchParams,
    bucket_keys,
    sketch_params,
)
from llmpulse.processors.windows._batch import (
    EventBatch,
)
from llmpulse.processors.windows._config import (
    ALL_QUANTILES,
    COST,
    DEFAULT_GROUPINGS,
    DEFAULT_SPECS,
    EMIT_CHUNK,
    ERR,
    IN_TOK,
    KEY_BIAS,
    LAT,
    LAT_Q_ROWS,
    NEG,
    OUT_TOK,
    PICO,
    REQ,
    TTFT,
    TTFT_N,
    TTFT_Q_ROWS,
    UNPRICED,
    GroupingSet,
    WindowSpec,
)
from llmpulse.processors.windows._kernels import (
    Codes,
    Features,
    group_rows,
    group_stats,
    occupied,
)
from llmpulse.processors.windows._panes import (
    Grouping,
    bucket_rows,
    window_cells,
)
from llmpulse.processors.windows._results import (
    LAT_Q_FIELDS,
    TTFT_Q_FIELDS,
    Emission,
    WindowResult,
    build_results,
)
from llmpulse.schemas.event import DIMENSIONS

# --- the aggregator ------------------------------------------------------------------


class WindowAggregator:
    """Sliding event-time windows per grouping and series; see the module docstring.

    ``add`` returns the windows closed by the watermark advance of that batch,
    ``advance_wall_clock`` closes windows of a quiet stream, ``flush_all`` closes
    everything (end of a replay) and ``restore_watermark`` skips windows already
    written before a restart.
    """

    def __init__(
        self,
        specs: Sequence[WindowSpec] = DEFAULT_SPECS,
        groupings: Sequence[GroupingSet] = DEFAULT_GROUPINGS,
        *,
        allowed_lateness_s: float = 30,
        idle_timeout_s: float | None = None,
        max_series: int = 10_000,
        alpha: float = DEFAULT_ALPHA,
    ) -> None:
        self._specs = tuple(dict.fromkeys(specs))
        self._groupings_spec = tuple(dict.fromkeys(groupings))
        if not self._specs:
            raise ConfigError("window.specs", "at least one window spec is needed")
        if not self._groupings_spec:
            raise ConfigError("window.groupings", "at least one grouping is needed")
        if not allowed_lateness_s >= 0:
            raise ConfigError(
                "window.allowed_lateness_s", f"must be >= 0, got {allowed_lateness_s!r}"
            )
        if idle_timeout_s is not None and not idle_timeout_s > 0:
            raise ConfigError("window.idle_timeout_s", f"must be > 0, got {idle_timeout_s!r}")
        if isinstance(max_series, bool) or not isinstance(max_series, int) or max_series < 1:
            raise ConfigError(
                "window.max_series", f"must be a positive integer, got {max_series!r}"
            )
        self._params: SketchParams = sketch_params(alpha)
        self._lateness_ms = round(allowed_lateness_s * 1000)
        self._idle_timeout_s = float(
            allowed_lateness_s if idle_timeout_s is None else idle_timeout_s
        )
        self._base_ms = math.gcd(*(s.hop_ms for s in self._specs))
        self._hop_u = [s.hop_ms // self._base_ms for s in self._specs]
        self._len_u = [s.length_ms // self._base_ms for s in self._specs]
        self._groups = [Grouping(g, len(self._specs), max_series) for g in self._groupings_spec]
        self._codes = {d: Codes() for d in DIMENSIONS}
        self._max_ts: int | None = None
        self._floor_ms = NEG  # raised by restore_watermark and flush_all
        self._idle_wm_ms = NEG  # raised by advance_wall_clock
        self._skip_until_ms = [NEG] * len(self._specs)
        self._external = False  # watermarks come from the caller (see add)
        self._external_wm_ms = NEG
        self._next_end: list[int | None] = [None] * len(self._specs)
        self._late_all = 0
        self._late_by_spec = [0] * len(self._specs)
        self._last_event_wall_s: float | None = None
        self._events_since_tick = False

    # -- properties ----------------------------------------------------------------

    @property
    def specs(self) -> tuple[WindowSpec, ...]:
        return self._specs

    @property
    def groupings(self) -> tuple[GroupingSet, ...]:
        return self._groupings_spec

    @property
    def watermark_ms(self) -> int | None:
        """Current watermark in epoch ms (None before any event or restore)."""
        w = self._watermark()
        return None if w <= NEG else w

    @property
    def late_events(self) -> int:
        """Events too late for every window spec (aggregated nowhere, counted only)."""
        return self._late_all

    @property
    def late_events_by_spec(self) -> dict[WindowSpec, int]:
        """Events whose windows of that spec were all closed when they arrived."""
        return dict(zip(self._specs, self._late_by_spec, strict=True))

    @property
    def overflow_events(self) -> int:
        """Events folded into the ``__other__`` series by the cardinality cap (all groupings)."""
        return sum(g.registry.overflow_events for g in self._groups)

    @property
    def overflow_by_grouping(self) -> dict[str, int]:
        return {g.spec.name: g.registry.overflow_events for g in self._groups}

    @property
    def active_series(self) -> int:
        """Series currently held, summed over groupings."""
        return sum(g.registry.active for g in self._groups)

    @property
    def active_by_grouping(self) -> dict[str, int]:
        return {g.spec.name: g.registry.active for g in self._groups}

    @property
    def open_panes(self) -> int:
        return sum(g.pane_count() for g in self._groups)

    def _watermark(self) -> int:
        if self._external or self._max_ts is None:
            from_events = self._external_wm_ms
        else:
            from_events = self._max_ts - self._lateness_ms
        return max(from_events, self._floor_ms, self._idle_wm_ms)

    # -- input ---------------------------------------------------------------------

    def add(
        self,
        batch: EventBatch,
        wall_now_s: float | None = None,
        watermark_ms: int | None = None,
        *,
        count_late: bool = True,
        owned: npt.NDArray[np.bool_] | None = None,
    ) -> list[WindowResult]:
        """Aggregate a batch; return the windows its watermark advance closed.

        ``wall_now_s`` (optional) is the wall time the batch arrived, for idleness;
        without it the next ``advance_wall_clock`` call stands in for the arrival time.

        ``watermark_ms`` (optional) is a watermark computed by the caller, for example
        the minimum over Kafka partitions so a partition read late does not see its
        events declared late. Once one is given the aggregator follows the caller's
        watermarks (never moving back) instead of max event time - lateness; the
        events of a batch are judged against the watermark in force before it.

        ``count_late=False`` drops events for closed windows without counting them:
        for rebuilding state after a restart from events that were counted when
        they first arrived.

        ``owned`` (rows x groupings, optional) says which rows this aggregator
        owns for each grouping: with several workers, a row's series of one
        grouping may belong to another worker, which aggregates it there.
        """
        if watermark_ms is not None:
            self._external = True
        if owned is not None:
            # Rows no grouping owns here are another worker's: not even late here.
            mine = owned.any(axis=1)
            if not mine.all():
                keep_rows = np.flatnonzero(mine)
                batch, owned = batch.select(keep_rows), owned[keep_rows]
        n = len(batch)
        if n == 0:
            if watermark_ms is None:
                return []
            self._external_wm_ms = max(self._external_wm_ms, int(watermark_ms))
            return self._emit()
        batch.validate()
        if wall_now_s is not None:
            self._last_event_wall_s = float(wall_now_s)
            self._events_since_tick = False
        else:
            self._events_since_tick = True
        feats, cut_all, agg_idx, late_masks = self._features(batch, count_late)
        cols: dict[str, tuple[IntArray, list[str]]] = {}
        for k, g in enumerate(self._groups):
            own = None if owned is None or owned[:, k].all() else np.flatnonzero(owned[:, k])
            if own is not None and not own.size:
                continue
            series = self._series_ids(g, batch, cols, own)
            for i, lm in enumerate(late_masks):
                if lm is not None and count_late:
                    lm_g = lm if own is None else lm[own]
                    cut_g = cut_all if own is None else cut_all[own]
                    g.late_rows[i].append((series[lm_g], cut_g[lm_g]))
            if own is None:
                if agg_idx is None:
                    self._accumulate(g, feats, series)
                elif agg_idx.size:
                    self._accumulate(g, feats.take(agg_idx), series[agg_idx])
                continue
            # Rows owned here and not late for every spec, as positions in ``own``.
            keep = (
                np.arange(own.size)
                if agg_idx is None
                else np.flatnonzero(np.isin(own, agg_idx, assume_unique=True))
            )
            if keep.size:
                self._accumulate(g, feats.take(own[keep]), series[keep])
        top = int(batch.ts_ms.max())
        self._max_ts = top if self._max_ts is None else max(self._max_ts, top)
        if watermark_ms is not None:
            self._external_wm_ms = max(self._external_wm_ms, int(watermark_ms))
        return self._emit()

    def _features(
        self, batch: EventBatch, count_late: bool = True
    ) -> tuple[Features, IntArray, IntArray | None, list[npt.NDArray[np.bool_] | None]]:
        ts = batch.ts_ms
        n = ts.size
        base = self._base_ms
        # The watermark each event saw on arrival: the state before the batch raised by
        # the running max of the events before it in this batch.
        if self._external:
            wm = np.full(n, self._watermark(), dtype=np.int64)
        else:
            before = np.empty(n, dtype=np.int64)
            before[0] = NEG if self._max_ts is None else self._max_ts
            if n > 1:
                np.maximum(np.maximum.accumulate(ts[:-1]), before[0], out=before[1:])
            wm = np.maximum(before - self._lateness_ms, self._watermark())
        cut_all = wm // base + 1  # first pane-unit window end still open for the event
        p = ts // base
        late_masks: list[npt.NDArray[np.bool_] | None] = []
        all_late: npt.NDArray[np.bool_] | None = None
        for i in range(len(self._specs)):
            last_end = (p // self._hop_u[i]) * self._hop_u[i] + self._len_u[i]
            lm = last_end < cut_all
            if lm.any():
                late_masks.append(lm)
                if count_late:
                    self._late_by_spec[i] += int(lm.sum())
                all_late = lm if all_late is None else all_late & lm
            else:
                late_masks.append(None)
                all_late = np.zeros(n, dtype=np.bool_)
        if all_late is not None and all_late.any():
            if count_late:
                self._late_all += int(all_late.sum())
            agg_idx: IntArray | None = np.flatnonzero(~all_late)
        else:
            agg_idx = None
        # Cutoffs matter only for events that arrived after some window of their pane
        # closed; everything else is stored under cutoff 0 (the common pane).
        cut = np.where(cut_all > p + 1, cut_all, 0)

        lat = batch.latency_ms
        lat_pos = lat > 0.0
        lat_key = np.where(
            lat_pos, bucket_keys(np.where(lat_pos, lat, 1.0), self._params), ZERO_KEY
        )
        ttft_ok = ~np.isnan(batch.ttft_ms)
        ttft = np.where(ttft_ok, batch.ttft_ms, 0.0)
        ttft_pos = ttft > 0.0
        ttft_key = np.where(
            ttft_pos, bucket_keys(np.where(ttft_pos, ttft, 1.0), self._params), ZERO_KEY
        )
        unpriced = np.isnan(batch.cost_usd)
        cost_pico = np.rint(np.where(unpriced, 0.0, batch.cost_usd) * PICO).astype(np.int64)
        feats = Features(
            p=p,
            cut=cut,
            lat=lat,
            lat_kb=lat_key.astype(np.int64) + KEY_BIAS,
            ttft=ttft,
            ttft_ok=ttft_ok,
            ttft_kb=ttft_key.astype(np.int64) + KEY_BIAS,
            err=batch.is_error,
            in_tok=batch.input_tokens,
            out_tok=batch.output_tokens,
            cost_pico=cost_pico,
            unpriced=unpriced,
        )
        return feats, cut_all, agg_idx, late_masks

    def _series_ids(
        self,
        g: Grouping,
        batch: EventBatch,
        cols: dict[str, tuple[IntArray, list[str]]],
        rows: IntArray | None = None,
    ) -> IntArray:
        """Series id of every event (of ``rows`` only, when given) for grouping ``g``,
        registering new series."""
        n = len(batch) if rows is None else rows.size
        comp: IntArray | None = None
        size = 1
        for d in g.spec.dims:
            if d not in cols:
                cols[d] = self._codes[d].codes(batch.dims[d])
            codes, uniq = cols[d]
            if rows is not None:
                codes = codes[rows]
            if comp is None:
                comp, size = codes, len(uniq)
                continue
            if size * len(uniq) >= 2**62:
                # keep the combined key inside int64 by renumbering what we have
                _, comp = np.unique(comp, return_inverse=True)
                size = int(comp.max()) + 1
            comp = comp * len(uniq) + codes
            size *= len(uniq)
        assert comp is not None
        if size <= 4 * n + 4096:
            counts = np.bincount(comp, minlength=size)
            uniq_comp = occupied(comp, size)
            lut = np.empty(size, dtype=np.int64)
            lut[uniq_comp] = np.arange(uniq_comp.size)
            inverse = lut[comp]
            any_idx = np.empty(size, dtype=np.int64)
            any_idx[comp] = np.arange(n)  # any occurrence will do: all share the combo
            first = any_idx[uniq_comp]
            counts = counts[uniq_comp]
        else:
            _, first, inverse, counts = np.unique(
                comp, return_index=True, return_inverse=True, return_counts=True
            )
        per_dim = []
        for d in g.spec.dims:
            codes, uniq = cols[d]
            if rows is not None:
                codes = codes[rows]
            per_dim.append([uniq[c] for c in codes[first].tolist()])
        combos = list(zip(*per_dim, strict=True))
        ids = g.registry.assign(combos, counts)
        return ids[inverse]

    def _accumulate(self, g: Grouping, f: Features, series: IntArray) -> None:
        """Fold one batch (already restricted to events not late everywhere) into panes."""
        n = series.size
        width = g.registry.capacity
        pmin = int(f.p.min())
        prange = int(f.p.max()) - pmin + 1
        if f.cut.any():
            cut_values, cut_code = np.unique(f.cut, return_inverse=True)
            n_cut = cut_values.size
            pane_key = (f.p - pmin) * n_cut + cut_code
        else:
            cut_values, n_cut = np.zeros(1, np.int64), 1
            pane_key = f.p - pmin
        comp = pane_key * width + series
        total = prange * n_cut * width
        dense = total <= 4 * n + 4096
        if dense:
            # Few (pane, series) cells: every cell is a group, so each pane's
            # aggregates are a contiguous slice (no unique, no fancy indexing).
            groups, gi, ng = np.arange(total), comp, total
        else:
            groups, gi = np.unique(comp, return_inverse=True)
            ng = groups.size
        ints, sums, mins, maxs = group_stats(f, gi, ng)
        group_series = groups % width
        group_pane = groups // width
        lat_group, lat_rows = group_rows(gi, ng, f.lat_kb, f.lat_order, group_series)
        ttft_group, ttft_rows = group_rows(gi, ng, f.ttft_kb, f.ttft_order, group_series)
        if dense:
            keys = occupied(pane_key, prange * n_cut)
            bounds = np.append(keys * width, 0)
            bounds[-1] = bounds[-2] + width
        else:
            keys = None
            bounds = np.flatnonzero(
                np.concatenate(([True], group_pane[1:] != group_pane[:-1], [True]))
            )
        lat_bounds = np.searchsorted(lat_group, bounds).tolist()
        ttft_bounds = np.searchsorted(ttft_group, bounds).tolist()
        for j, a in enumerate(bounds[:-1].tolist()):
            key = int(group_pane[a])
            pane = g.pane(pmin + key // n_cut, int(cut_values[key % n_cut]), width)
            if dense:
                cols: slice | IntArray = slice(0, width)
                part = slice(a, a + width)
            else:
                part = slice(a, int(bounds[j + 1]))
                cols = group_series[part]
            pane.ints[:, cols] += ints[:, part]
            pane.sums[:, cols] += sums[:, part]
            pane.mins[:, cols] = np.minimum(pane.mins[:, cols], mins[:, part])
            pane.maxs[:, cols] = np.maximum(pane.maxs[:, cols], maxs[:, part])
            pane.add_rows(
                lat_rows.slice(lat_bounds[j], lat_bounds[j + 1]),
                ttft_rows.slice(ttft_bounds[j], ttft_bounds[j + 1]),
            )

    # -- time ----------------------------------------------------------------------

    def advance_wall_clock(self, now_s: float) -> list[WindowResult]:
        """Tell the wall time; after ``idle_timeout_s`` without events the watermark
        moves on by the wall time elapsed since the last event, closing windows of a
        quiet stream."""
        if self._max_ts is None:
            return []
        if self._last_event_wall_s is None or self._events_since_tick:
            # Events arrived since the last tick: this tick is their arrival time.
            self._last_event_wall_s = float(now_s)
            self._events_since_tick = False
            return []
        idle_s = float(now_s) - self._last_event_wall_s
        if idle_s < self._idle_timeout_s:
            return []
        target = self._max_ts - self._lateness_ms + math.floor(idle_s * 1000)
        if target <= self._idle_wm_ms:
            return []
        self._idle_wm_ms = target
        return self._emit()

    def flush_all(self) -> list[WindowResult]:
        """Close and return every window that holds data (end of a replay). The
        watermark moves past them, so events for them arriving later are late."""
        last = [self._last_end_any(p) for g in self._groups for p in g.panes]
        if not last:
            return []
        self._floor_ms = max(self._floor_ms, max(last) * self._base_ms)
        return self._emit()

    def restore_watermark(self, ms: int | Sequence[int | None]) -> None:
        """After a restart: windows ending at or before ``ms`` were already written.
        They are never emitted again, and events for them count as late.

        ``ms`` may also be one frontier per spec (None: nothing of that spec was
        written): specs are written up to different ends, and events still needed
        by the spec furthest behind are accepted.
        """
        per_spec = [int(ms)] * len(self._specs) if isinstance(ms, int) else list(ms)
        if len(per_spec) != len(self._specs):
            raise ValueError(f"{len(per_spec)} frontiers for {len(self._specs)} window specs")
        for i, f in enumerate(per_spec):
            if f is not None:
                self._skip_until_ms[i] = max(self._skip_until_ms[i], int(f))
        floor = min((NEG if f is None else int(f)) for f in per_spec)
        self._floor_ms = max(self._floor_ms, floor)
        self._emit()

    # -- emission ------------------------------------------------------------------

    def _first_end(self, p: int, i: int) -> int:
        """End (pane units) of the earliest window of spec ``i`` containing pane ``p``."""
        hop, length = self._hop_u[i], self._len_u[i]
        return ((p - length) // hop + 1) * hop + length

    def _last_end_any(self, p: int) -> int:
        return max((p // h) * h + ln for h, ln in zip(self._hop_u, self._len_u, strict=True))

    def _closing_ends(self, i: int, present: list[int], fu: int) -> list[int]:
        """Window ends (pane units) of spec ``i`` that closed and may hold data."""
        hop, length = self._hop_u[i], self._len_u[i]
        e = self._next_end[i]
        if e is None:
            if not present:
                return []
            e = self._first_end(present[0], i)
        first_open = (fu // hop + 1) * hop
        ends: list[int] = []
        while e <= fu:
            j = bisect_left(present, e - length)
            if j == len(present):
                e = first_open
                break
            # Skip windows that cover no pane (gaps in the stream).
            e = max(e, self._first_end(present[j], i))
            if e > fu:
                e = first_open
                break
            ends.append(e)
            e += hop
        # Never past the first open window: a pane still to come may fill it.
        self._next_end[i] = min(e, first_open)
        return ends

    def _emit(self) -> list[WindowResult]:
        w = self._watermark()
        if w <= NEG:
            return []
        fu = w // self._base_ms
        present = sorted({p for g in self._groups for p in g.panes})
        work = sorted(
            (e, i) for i in range(len(self._specs)) for e in self._closing_ends(i, present, fu)
        )
        work = [(e, i) for e, i in work if e * self._base_ms > self._skip_until_ms[i]]
        out: list[WindowResult] = []
        # Windows closing together are computed together: one set of array
        # operations per round (in chunks, to bound memory on a flush).
        for a in range(0, len(work), EMIT_CHUNK):
            chunk = work[a : a + EMIT_CHUNK]
            per_grouping = [self._windows(g, chunk) for g in self._groups]
            for t in range(len(chunk)):
                for results in per_grouping:
                    out.extend(results[t])
        for g in self._groups:
            self._settle(g, fu)
        return out

    def _settle(self, g: Grouping, fu: int) -> None:
        """After a round: fold late rows, drop panes no open window needs, free idle series."""
        width = g.registry.capacity
        for i, rows in enumerate(g.late_rows):
            dense = g.late_dense[i]
            if dense.size < width:
                dense = g.late_dense[i] = np.concatenate(
                    (dense, np.zeros(width - dense.size, np.int64))
                )
            if rows:
                series = np.concatenate([r[0] for r in rows])
                dense += np.bincount(series, minlength=dense.size)[: dense.size]
                rows.clear()
        # The last window needing a pane ends later for later panes: drop oldest first.
        dropped = []
        while g.pane_heap and self._last_end_any(g.pane_heap[0]) <= fu:
            dropped.append(heapq.heappop(g.pane_heap))
            del g.panes[dropped[-1]]
        if not dropped:
            return
        live = np.zeros(width, dtype=np.bool_)
        held = [pane for by_cut in g.panes.values() for pane in by_cut.values()]
        for pane in held:
            w = min(width, pane.width)
            live[:w] |= pane.ints[REQ, :w] > 0
        for dense in g.late_dense:
            live[: dense.size] |= dense[:width] > 0
        ids = g.registry.registered()
        g.registry.release(ids[~live[ids]].tolist())

    def _windows(self, g: Grouping, work: Sequence[tuple[int, int]]) -> list[list[WindowResult]]:
        """The results of grouping ``g`` for each closed window ``(end, spec)`` in ``work``."""
        width = g.registry.capacity
        out: list[list[WindowResult]] = [[] for _ in work]
        # A window reads every pane it covers whose cutoff it does not precede.
        chosen = [
            [
                pane
                for p in range(e - self._len_u[i], e)
                if (by_cut := g.panes.get(p))
                for cutoff, pane in by_cut.items()
                if cutoff <= e
            ]
            for e, i in work
        ]
        if not any(chosen):
            return out
        # Results in window order, series in dims order (ids depend on arrival).
        cells = window_cells(chosen, width, g.registry.rank())
        item, sid = cells.item, cells.sid
        if item.size == 0:
            return out
        first = np.searchsorted(item, np.arange(len(work) + 1)).tolist()
        late = np.zeros(sid.size, dtype=np.int64)
        for t, (e, i) in enumerate(work):
            a, b = first[t], first[t + 1]
            if b > a:
                late[a:b] = self._take_late(g, i, e, sid[a:b])
        m = sid.size
        keys, counts, starts, ends = bucket_rows(g, chosen, [i for _, i in work], item, sid, width)
        sketches = SketchColumns(
            self._params,
            keys,
            counts,
            starts=starts,
            ends=ends,
            n=np.concatenate((cells.ints[:, REQ], cells.ints[:, TTFT_N])),
            total=np.concatenate((cells.sums[:, LAT], cells.sums[:, TTFT])),
            lo=np.concatenate((cells.mins[:, LAT], cells.mins[:, TTFT])),
            hi=np.concatenate((cells.maxs[:, LAT], cells.maxs[:, TTFT])),
        )
        q_all = sketches.quantiles(ALL_QUANTILES)
        sel = cells.ints.T  # (fields, m)
        opens, closes, lengths, hops = zip(*(self._bounds(e, i) for e, i in work), strict=True)
        numbers: dict[str, npt.NDArray[Any]] = {
            "window_seconds": np.asarray(lengths, dtype=np.int64)[item],
            "hop_seconds": np.asarray(hops, dtype=np.int64)[item],
            "requests": sel[REQ],
            "errors": sel[ERR],
            "error_rate": sel[ERR] / sel[REQ],
            **dict(zip(LAT_Q_FIELDS, q_all[LAT_Q_ROWS, :m], strict=True)),
            "latency_max_ms": cells.maxs[:, LAT],
            **dict(zip(TTFT_Q_FIELDS, q_all[TTFT_Q_ROWS, m:], strict=True)),
            "input_tokens": sel[IN_TOK],
            "output_tokens": sel[OUT_TOK],
            "cost_usd": sel[COST] / PICO,
            "unpriced_requests": sel[UNPRICED],
            "late_events": late,
        }
        series, at = np.unique(sid, return_inverse=True)
        templates = [g.registry.template(s) for s in series.tolist()]
        dims = np.empty((series.size, len(DIMENSIONS)), dtype=object)
        dims[:] = [tuple(t[d] for d in DIMENSIONS) for t in templates]
        start_ms = np.asarray(
            [e * self._base_ms - self._specs[i].length_ms for e, i in work], dtype=np.int64
        )
        emission = Emission(sketches, g.spec.name, start_ms[item], numbers, at, dims)
        item_l = item.tolist()
        columns: dict[str, Iterable[Any]] = {
            "window_start": map(opens.__getitem__, item_l),
            "window_end": map(closes.__getitem__, item_l),
            "grouping": repeat(g.spec.name, m),
            "dims": map(templates.__getitem__, at.tolist()),
            **{name: values.tolist() for name, values in numbers.items()},
            "_emission": repeat(emission, m),
            "_index": range(m),
        }
        results = build_results(m, columns)
        return [results[a:b] for a, b in itertools.pairwise(first)]

    def _bounds(self, e: int, i: int) -> tuple[datetime, datetime, int, int]:
        """Start, end, length and hop of window ``(e, i)``."""
        spec = self._specs[i]
        end_ms = e * self._base_ms
        return (
            datetime.fromtimestamp((end_ms - spec.length_ms) / 1000, tz=UTC),
            datetime.fromtimestamp(end_ms / 1000, tz=UTC),
            spec.length_s,
            spec.hop_s,
        )

    def _take_late(self, g: Grouping, i: int, e: int, present: IntArray) -> IntArray:
        """Late counts owed to the windows being emitted: each late event goes to the
        first emitted window of its series that ends after the event arrived."""
        late = np.zeros(present.size, dtype=np.int64)
        dense = g.late_dense[i]
        if dense.size and dense.any():
            inside = present[present < dense.size]
            pos = np.flatnonzero(present < dense.size)
            late[pos] += dense[inside]
            dense[inside] = 0
        rows = g.late_rows[i]
        if rows:
            series = np.concatenate([r[0] for r in rows])
            cutoff = np.concatenate([r[1] for r in rows])
            where = np.full(max(g.registry.capacity, int(series.max()) + 1), -1, dtype=np.int64)
            where[present] = np.arange(present.size)
            owed = (cutoff <= e) & (where[series] >= 0)
            if owed.any():
                late += np.bincount(where[series[owed]], minlength=present.size)
                rows[:] = [(series[~owed], cutoff[~owed])] if not owed.all() else []
        return late
