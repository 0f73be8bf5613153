"""Event-time hopping windows of per-series latency percentiles, errors, tokens and cost.

State is explicit and time is always injected: event time comes from the events, wall
time only through ``advance_wall_clock(now_s)``; nothing here reads a clock.

How it works
------------
* Every hop of every spec is a multiple of one *base pane* (the gcd of the hops). Each
  event is aggregated once per grouping into the base pane that holds its timestamp;
  a window ``[start, end)`` is the merge of the panes it covers, so a 300 s window and
  a 60 s window read the same panes and an event costs the same whatever the specs.
* Per batch the work is vectorised: the (pane, series) groups come from one
  ``bincount``/``unique`` over combined integer keys, sums from ``bincount`` and the
  sketch buckets from one ``unique`` over (group, bucket) keys.
* Watermark = max event time seen - allowed lateness (or later, see idleness and
  ``restore_watermark``). A window is emitted once ``watermark >= end``.
* Lateness is judged per event against the watermark in force just *before* that event
  (the running maximum of the earlier events), never against the watermark at the end
  of its batch. Each event records the first window end still open when it arrived
  (its *cutoff*); a window only reads pane contributions whose cutoff is ``<= end``.
  That makes the output independent of how the stream is cut into batches: an event
  that was partly late when it arrived joins only the windows still open then.
* An event whose windows of a spec are all closed is late for that spec: it is counted
  against its series and reported in ``late_events`` of the next window emitted for
  that series (first window with end after the event arrived), and in the totals.

>>> agg = WindowAggregator(specs=[WindowSpec(60, 60)], groupings=[GroupingSet(("model",))],
...                        allowed_lateness_s=0)
>>> batch = EventBatch.from_records([
...     {"ts_ms": 1_000, "latency_ms": 120.0, "model": "m1", "cost_usd": 0.5},
...     {"ts_ms": 2_000, "latency_ms": 80.0, "model": "m1", "is_error": True},
... ])
>>> agg.add(batch)
[]
>>> [r] = agg.flush_all()
>>> r.window_seconds, r.dims["model"], r.requests, r.errors, r.unpriced_requests, r.cost_usd
(60, 'm1', 2, 1, 1, 0.5)
>>> r.latency_p50_ms, r.latency_max_ms
(80.0, 120.0)
"""

from __future__ import annotations

import hashlib
import heapq
import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from llmpulse.errors import ConfigError, FieldProblem, ValidationError
from llmpulse.processors.sketch import (
    DEFAULT_ALPHA,
    ZERO_KEY,
    LogHistogram,
    SketchParams,
    bucket_keys,
    representatives,
    sketch_params,
)
from llmpulse.schemas.event import DIMENSIONS

__all__ = [
    "DEFAULT_GROUPINGS",
    "DEFAULT_SPECS",
    "DIMENSIONS",
    "LATENCY_QUANTILES",
    "OTHER",
    "TTFT_QUANTILES",
    "EventBatch",
    "GroupingSet",
    "WindowAggregator",
    "WindowResult",
    "WindowSpec",
    "window_id",
]

OTHER: Final = "__other__"
LATENCY_QUANTILES: Final = (0.5, 0.9, 0.95, 0.99)
TTFT_QUANTILES: Final = (0.5, 0.95, 0.99)
_ALL_QUANTILES: Final = tuple(sorted(set(LATENCY_QUANTILES) | set(TTFT_QUANTILES)))
_LAT_Q_ROWS: Final = [_ALL_QUANTILES.index(q) for q in LATENCY_QUANTILES]
_TTFT_Q_ROWS: Final = [_ALL_QUANTILES.index(q) for q in TTFT_QUANTILES]

# "No watermark yet": far below any epoch-ms, yet safe to subtract lateness from.
_NEG: Final = -(2**62)
# Sketch rows are packed as series << 32 | (key - ZERO_KEY): one int64 sorts by
# (series, key) with the zero bucket first in each series.
_KEY_SHIFT: Final = 32
_KEY_MASK: Final = (1 << 32) - 1
_KEY_BIAS: Final = -ZERO_KEY
# Cost is summed in integer pico-dollars so the total does not depend on how events
# are split into batches or in which order panes merge (float sums would).
_PICO: Final = 1e12
_MAX_COST_USD: Final = 1e6
_EXACT_FLOAT_INT: Final = 2**53
_MAX_CHUNKS: Final = 8  # bucket-row chunks a pane holds before merging them
_EMIT_CHUNK: Final = 64  # windows computed together in one emission pass

# Rows of the integer pane counters.
_REQ, _ERR, _IN_TOK, _OUT_TOK, _COST, _UNPRICED, _TTFT_N = range(7)
_N_INTS: Final = 7
_LAT, _TTFT = 0, 1

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


# --- configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class WindowSpec:
    """A hopping window: ``length_s`` long, starting every ``hop_s`` (epoch aligned)."""

    length_s: int
    hop_s: int

    def __post_init__(self) -> None:
        for name, value in (("length_s", self.length_s), ("hop_s", self.hop_s)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"window.{name}", f"must be a positive integer, got {value!r}")
        if self.length_s % self.hop_s:
            raise ConfigError(
                "window.length_s", f"{self.length_s} is not a multiple of hop {self.hop_s}"
            )

    @property
    def length_ms(self) -> int:
        return self.length_s * 1000

    @property
    def hop_ms(self) -> int:
        return self.hop_s * 1000

    @property
    def name(self) -> str:
        return f"{self.length_s}s/{self.hop_s}s"


DEFAULT_SPECS: Final = (WindowSpec(60, 10), WindowSpec(300, 60))


@dataclass(frozen=True)
class GroupingSet:
    """A set of DIMENSIONS that defines a series, named like ``service+endpoint+model``.

    Dimensions are kept in DIMENSIONS order so one set has exactly one name.

    >>> GroupingSet(("model", "service")).name
    'service+model'
    >>> GroupingSet.parse("tenant").dims
    ('tenant',)
    """

    dims: tuple[str, ...]

    def __post_init__(self) -> None:
        dims = tuple(self.dims)
        unknown = [d for d in dims if d not in DIMENSIONS]
        if not dims or unknown or len(set(dims)) != len(dims):
            raise ConfigError(
                "grouping",
                f"needs distinct dimensions among {', '.join(DIMENSIONS)}, got {dims!r}",
            )
        object.__setattr__(self, "dims", tuple(d for d in DIMENSIONS if d in dims))

    @property
    def name(self) -> str:
        return "+".join(self.dims)

    @classmethod
    def parse(cls, name: str) -> GroupingSet:
        return cls(tuple(part.strip() for part in name.split("+")))

    def __str__(self) -> str:
        return self.name


DEFAULT_GROUPINGS: Final = (
    GroupingSet(("service", "endpoint", "model")),
    GroupingSet(("model",)),
    GroupingSet(("tenant",)),
)


# --- input ---------------------------------------------------------------------------


@dataclass
class EventBatch:
    """Parsed events as columns. ``ttft_ms``/``cost_usd`` use NaN for missing/unpriced,
    tokens 0 for missing, dimensions "" for missing (absent dimensions are filled)."""

    ts_ms: IntArray
    latency_ms: FloatArray
    ttft_ms: FloatArray
    is_error: npt.NDArray[np.bool_]
    input_tokens: IntArray
    output_tokens: IntArray
    cost_usd: FloatArray
    dims: dict[str, npt.NDArray[Any]]

    def __post_init__(self) -> None:
        self.ts_ms = np.asarray(self.ts_ms, dtype=np.int64)
        n = self.ts_ms.shape[0]
        self.latency_ms = np.asarray(self.latency_ms, dtype=np.float64)
        self.ttft_ms = np.asarray(self.ttft_ms, dtype=np.float64)
        self.is_error = np.asarray(self.is_error, dtype=np.bool_)
        self.input_tokens = np.asarray(self.input_tokens, dtype=np.int64)
        self.output_tokens = np.asarray(self.output_tokens, dtype=np.int64)
        self.cost_usd = np.asarray(self.cost_usd, dtype=np.float64)
        unknown = sorted(set(self.dims) - set(DIMENSIONS))
        if unknown:
            raise ValidationError([FieldProblem("dims", "unknown dimension", unknown)])
        dims: dict[str, npt.NDArray[Any]] = {}
        for d in DIMENSIONS:
            col = self.dims.get(d)
            dims[d] = np.full(n, "", dtype=object) if col is None else np.asarray(col)
        self.dims = dims
        for name in ("latency_ms", "ttft_ms", "is_error", "input_tokens", "output_tokens"):
            self._check_length(name, getattr(self, name), n)
        self._check_length("cost_usd", self.cost_usd, n)
        for d, col in dims.items():
            self._check_length(d, col, n)

    @staticmethod
    def _check_length(name: str, col: npt.NDArray[Any], n: int) -> None:
        if col.shape != (n,):
            raise ValidationError([FieldProblem(name, f"must be a 1-D column of {n}", col.shape)])

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> EventBatch:
        """Columns from dict-like events (keys as the field names and DIMENSIONS)."""

        def num(r: Mapping[str, Any], key: str, missing: float) -> float:
            v = r.get(key)
            return missing if v is None else float(v)

        for i, r in enumerate(records):
            for key in ("ts_ms", "latency_ms"):
                if r.get(key) is None:
                    raise ValidationError([FieldProblem(f"[{i}].{key}", "is required")])
        return cls(
            ts_ms=np.array([int(r["ts_ms"]) for r in records], dtype=np.int64),
            latency_ms=np.array([float(r["latency_ms"]) for r in records], dtype=np.float64),
            ttft_ms=np.array([num(r, "ttft_ms", math.nan) for r in records], dtype=np.float64),
            is_error=np.array([bool(r.get("is_error", False)) for r in records], dtype=np.bool_),
            input_tokens=np.array([int(r.get("input_tokens") or 0) for r in records], np.int64),
            output_tokens=np.array([int(r.get("output_tokens") or 0) for r in records], np.int64),
            cost_usd=np.array([num(r, "cost_usd", math.nan) for r in records], dtype=np.float64),
            dims={
                d: np.array([str(r.get(d) or "") for r in records], dtype=object)
                for d in DIMENSIONS
            },
        )

    def select(self, index: slice | npt.NDArray[Any]) -> EventBatch:
        """The events at ``index`` (a slice, boolean mask or integer indices)."""
        return EventBatch(
            ts_ms=self.ts_ms[index],
            latency_ms=self.latency_ms[index],
            ttft_ms=self.ttft_ms[index],
            is_error=self.is_error[index],
            input_tokens=self.input_tokens[index],
            output_tokens=self.output_tokens[index],
            cost_usd=self.cost_usd[index],
            dims={d: col[index] for d, col in self.dims.items()},
        )

    @classmethod
    def concat(cls, batches: Iterable[EventBatch]) -> EventBatch:
        parts = list(batches)
        if not parts:
            return cls.from_records([])
        return cls(
            ts_ms=np.concatenate([b.ts_ms for b in parts]),
            latency_ms=np.concatenate([b.latency_ms for b in parts]),
            ttft_ms=np.concatenate([b.ttft_ms for b in parts]),
            is_error=np.concatenate([b.is_error for b in parts]),
            input_tokens=np.concatenate([b.input_tokens for b in parts]),
            output_tokens=np.concatenate([b.output_tokens for b in parts]),
            cost_usd=np.concatenate([b.cost_usd for b in parts]),
            dims={d: np.concatenate([b.dims[d] for b in parts]) for d in DIMENSIONS},
        )

    def validate(self) -> None:
        """Raise ValidationError naming the first value that breaks the numeric contract."""
        checks: tuple[tuple[str, npt.NDArray[Any], npt.NDArray[np.bool_], str], ...] = (
            ("latency_ms", self.latency_ms, _finite_nonneg(self.latency_ms), "finite and >= 0"),
            (
                "ttft_ms",
                self.ttft_ms,
                np.isnan(self.ttft_ms) | _finite_nonneg(self.ttft_ms),
                "NaN (missing) or finite and >= 0",
            ),
            ("input_tokens", self.input_tokens, self.input_tokens >= 0, ">= 0"),
            ("output_tokens", self.output_tokens, self.output_tokens >= 0, ">= 0"),
            (
                "cost_usd",
                self.cost_usd,
                np.isnan(self.cost_usd)
                | (_finite_nonneg(self.cost_usd) & (self.cost_usd <= _MAX_COST_USD)),
                f"NaN (unpriced) or between 0 and {_MAX_COST_USD:g}",
            ),
        )
        problems = []
        for name, col, ok, rule in checks:
            if not ok.all():
                first = int(np.argmin(ok))
                problems.append(
                    FieldProblem(f"{name}[{first}]", f"must be {rule}", col[first].item())
                )
        if problems:
            raise ValidationError(problems)


def _finite_nonneg(x: FloatArray) -> npt.NDArray[np.bool_]:
    return (x >= 0.0) & (x < np.inf)  # NaN fails the first test


# --- output --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class WindowResult:
    """One closed window of one series. Percentiles estimate ``x_(floor(q*(n-1)))``
    within the sketch accuracy; ttft percentiles are NaN when no event had a ttft.
    Compare results with ``window_id`` or field by field (NaN and sketches make
    ``==`` meaningless, so it is identity)."""

    window_start: datetime
    window_end: datetime
    window_seconds: int
    hop_seconds: int
    grouping: str
    dims: dict[str, str]
    requests: int
    errors: int
    error_rate: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    ttft_p99_ms: float
    input_tokens: int
    output_tokens: int
    cost_usd: float
    unpriced_requests: int
    late_events: int
    latency_sketch: LogHistogram
    ttft_sketch: LogHistogram

    @property
    def window_start_ms(self) -> int:
        return round(self.window_start.timestamp() * 1000)


def window_id(result: WindowResult) -> str:
    """Deterministic id of a window row (start, length, grouping, dims): a dedup key.

    >>> a = window_id_of(0, 60, "model", {"model": "m"})
    >>> len(a), a == window_id_of(0, 60, "model", {"model": "m", "tenant": ""})
    (32, True)
    """
    return window_id_of(result.window_start_ms, result.window_seconds, result.grouping, result.dims)


def window_id_of(start_ms: int, window_seconds: int, grouping: str, dims: Mapping[str, str]) -> str:
    """``window_id`` from the raw fields (for rows read back from the store)."""
    parts = [str(int(start_ms)), str(int(window_seconds)), grouping]
    parts.extend(str(dims.get(d, "")) for d in DIMENSIONS)
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


# --- series registry -----------------------------------------------------------------


class _SeriesRegistry:
    """Dense ids for the series of one grouping, with a cap and id reuse."""

    __slots__ = (
        "_dims",
        "_free",
        "_ids",
        "_keys",
        "_max",
        "_other",
        "_rank",
        "_real",
        "_templates",
        "overflow_events",
    )

    def __init__(self, dims: tuple[str, ...], max_series: int) -> None:
        self._dims = dims
        self._max = max_series
        self._ids: dict[tuple[str, ...], int] = {}
        self._keys: list[tuple[str, ...] | None] = []
        self._templates: list[dict[str, str] | None] = []
        self._free: list[int] = []
        self._rank: IntArray | None = None
        self._real = 0
        self._other = (OTHER,) * len(dims)
        self.overflow_events = 0

    @property
    def capacity(self) -> int:
        return len(self._keys)

    @property
    def active(self) -> int:
        return len(self._ids)

    def assign(self, combos: list[tuple[str, ...]], counts: IntArray) -> IntArray:
        ids = np.empty(len(combos), dtype=np.int64)
        for i, combo in enumerate(combos):
            sid = self._ids.get(combo)
            if sid is None:
                key = combo
                if key != self._other and self._real >= self._max:
                    self.overflow_events += int(counts[i])
                    key = self._other
                    sid = self._ids.get(key)
                if sid is None:
                    sid = self._register(key)
            ids[i] = sid
        return ids

    def _register(self, combo: tuple[str, ...]) -> int:
        if self._free:
            sid = heapq.heappop(self._free)
            self._keys[sid] = combo
            self._templates[sid] = None
        else:
            sid = len(self._keys)
            self._keys.append(combo)
            self._templates.append(None)
        self._ids[combo] = sid
        if combo != self._other:
            self._real += 1
        self._rank = None
        return sid

    def release(self, ids: Iterable[int]) -> None:
        for sid in ids:
            combo = self._keys[sid]
            if combo is None:
                continue
            del self._ids[combo]
            if combo != self._other:
                self._real -= 1
            self._keys[sid] = None
            self._templates[sid] = None
            heapq.heappush(self._free, sid)
            self._rank = None

    def registered(self) -> IntArray:
        return np.fromiter(self._ids.values(), dtype=np.int64, count=len(self._ids))

    def rank(self) -> IntArray:
        """Position of each id in dims order: output order must not depend on ids,
        which depend on when series were first seen and freed."""
        if self._rank is None or self._rank.size != len(self._keys):
            order = sorted(
                range(len(self._keys)), key=lambda i: (self._keys[i] is None, self._keys[i] or ())
            )
            rank = np.empty(len(order), dtype=np.int64)
            rank[np.asarray(order, dtype=np.int64)] = np.arange(len(order), dtype=np.int64)
            self._rank = rank
        return self._rank

    def template(self, sid: int) -> dict[str, str]:
        t = self._templates[sid]
        if t is None:
            combo = self._keys[sid]
            assert combo is not None
            values = dict(zip(self._dims, combo, strict=True))
            t = {d: values.get(d, "") for d in DIMENSIONS}
            self._templates[sid] = t
        return t


# --- panes ---------------------------------------------------------------------------


class _Pane:
    """Aggregates of one base pane (and one cutoff) for every series of a grouping."""

    __slots__ = ("ints", "lat_rows", "maxs", "mins", "sums", "ttft_rows")

    def __init__(self, width: int) -> None:
        self.ints: IntArray = np.zeros((_N_INTS, width), dtype=np.int64)
        self.sums: FloatArray = np.zeros((2, width), dtype=np.float64)
        self.mins: FloatArray = np.full((2, width), np.inf)
        self.maxs: FloatArray = np.full((2, width), -np.inf)
        self.lat_rows: list[_Rows] = []
        self.ttft_rows: list[_Rows] = []

    @property
    def width(self) -> int:
        return int(self.ints.shape[1])

    def ensure(self, width: int) -> None:
        old = self.width
        if width <= old:
            return
        new = max(width, 2 * old)
        grow = new - old
        self.ints = np.concatenate((self.ints, np.zeros((_N_INTS, grow), np.int64)), axis=1)
        self.sums = np.concatenate((self.sums, np.zeros((2, grow))), axis=1)
        self.mins = np.concatenate((self.mins, np.full((2, grow), np.inf)), axis=1)
        self.maxs = np.concatenate((self.maxs, np.full((2, grow), -np.inf)), axis=1)

    def add_rows(self, lat: _Rows, ttft: _Rows) -> None:
        # Merging every few batches keeps a busy pane at about (series x buckets)
        # rows instead of one chunk per batch.
        for rows, new in ((self.lat_rows, lat), (self.ttft_rows, ttft)):
            if new.kb.size:
                rows.append(new)
                if len(rows) >= _MAX_CHUNKS:
                    self.compact(rows, self.width)

    @staticmethod
    def compact(rows: list[_Rows], width: int) -> _Rows | None:
        """The pane's bucket rows as one reduced chunk (merged once, then reused by
        every window that covers the pane)."""
        if not rows:
            return None
        if len(rows) > 1:
            rows[:] = [_combine(rows, width)]
        return rows[0]


class _Rows:
    """Sketch bucket rows of many series, sorted by (series, key): ``series`` id,
    ``kb`` = key - ZERO_KEY (so 0 is the zero bucket) and ``cnt``."""

    __slots__ = ("cnt", "kb", "series")

    def __init__(self, series: IntArray, kb: IntArray, cnt: IntArray) -> None:
        self.series = series
        self.kb = kb
        self.cnt = cnt

    def slice(self, a: int, b: int) -> _Rows:
        return _Rows(self.series[a:b], self.kb[a:b], self.cnt[a:b])


_NO_ROWS: Final = _Rows(*(np.zeros(0, dtype=np.int64) for _ in range(3)))


def _combine(parts: list[_Rows], n_series: int, series_shift: Sequence[int] | None = None) -> _Rows:
    """Add up the bucket rows of several chunks (series ids below ``n_series``).

    ``series_shift`` offsets the series of each chunk (used to lay the latency and
    ttft rows of one window side by side). Two strategies, same result:
    dense data (more rows than (series, key) cells) is counted on a grid with
    ``bincount``; sparse data is merge-sorted, cheap because every chunk is sorted.
    """
    series = np.concatenate([r.series for r in parts])
    if series_shift is not None:
        sizes = [r.series.size for r in parts]
        series += np.repeat(np.asarray(series_shift, dtype=np.int64), sizes)
    kb = np.concatenate([r.kb for r in parts])
    cnt = np.concatenate([r.cnt for r in parts])
    kmax = int(kb.max())
    kmin = int(np.min(kb, where=kb > 0, initial=kmax)) if kmax else 1
    width = max(kmax, 1) - kmin + 2  # column 0 holds the zero bucket
    if n_series * width <= 2 * kb.size and int(cnt.sum()) < _EXACT_FLOAT_INT:
        col_in = np.where(kb > 0, kb - (kmin - 1), 0)
        grid = np.bincount(series * width + col_in, weights=cnt, minlength=n_series * width)
        mark = np.zeros((n_series, width), dtype=np.bool_)
        mark[series, col_in] = True
        row, col = np.nonzero(mark)  # row-major order, no division needed
        counts = grid.reshape(n_series, width)[row, col].astype(np.int64)
        return _Rows(row.astype(np.int64), np.where(col > 0, col + (kmin - 1), 0), counts)
    packed = (series << _KEY_SHIFT) | kb
    order = np.argsort(packed, kind="stable")
    packed = packed[order]
    cnt = cnt[order]
    new = np.empty(packed.size, dtype=np.bool_)
    new[:1] = True
    np.not_equal(packed[1:], packed[:-1], out=new[1:])
    if not new.all():
        if int(cnt.sum()) < _EXACT_FLOAT_INT:
            cnt = np.bincount(np.cumsum(new) - 1, weights=cnt).astype(np.int64)
        else:
            cnt = np.add.reduceat(cnt, np.flatnonzero(new))
        packed = packed[new]
    return _Rows(packed >> _KEY_SHIFT, packed & _KEY_MASK, cnt)


def _merge_panes(panes: list[_Pane], width: int) -> _Pane:
    merged = _Pane(width)
    for p in panes:
        p.ensure(width)
        merged.ints += p.ints[:, :width]
        merged.sums += p.sums[:, :width]
        np.minimum(merged.mins, p.mins[:, :width], out=merged.mins)
        np.maximum(merged.maxs, p.maxs[:, :width], out=merged.maxs)
    for target, sources in (
        (merged.lat_rows, [p.lat_rows for p in panes]),
        (merged.ttft_rows, [p.ttft_rows for p in panes]),
    ):
        chunks = [c for rows in sources if (c := _Pane.compact(rows, width)) is not None]
        if chunks:
            target.append(_combine(chunks, width) if len(chunks) > 1 else chunks[0])
    return merged


class _Grouping:
    """Everything held for one grouping: the series registry, panes and late counts."""

    __slots__ = (
        "block_heap",
        "blocks",
        "late_dense",
        "late_rows",
        "pane_heap",
        "panes",
        "registry",
        "spec",
    )

    def __init__(self, spec: GroupingSet, n_specs: int, max_series: int) -> None:
        self.spec = spec
        self.registry = _SeriesRegistry(spec.dims, max_series)
        self.panes: dict[int, dict[int, _Pane]] = {}
        self.pane_heap: list[int] = []  # pane indices, oldest first, to drop in order
        # Merged on-time panes of one hop of a longer spec, keyed (hop in panes, index).
        # On-time panes stop changing once the watermark passes them (anything later
        # goes to a cutoff pane), and windows only read them after that, so a block
        # is built once and shared by every window that covers it.
        self.blocks: dict[tuple[int, int], _Pane | None] = {}
        self.block_heap: list[tuple[int, int, int]] = []  # (last pane, hop, index)
        # Late events per window spec: rows (series, cutoff) from the current round,
        # then folded into per-series totals once every window they could precede
        # has been emitted.
        self.late_rows: list[list[tuple[IntArray, IntArray]]] = [[] for _ in range(n_specs)]
        self.late_dense: list[IntArray] = [np.zeros(0, np.int64) for _ in range(n_specs)]

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

    def block(self, hop: int, index: int, width: int) -> _Pane | None:
        key = (hop, index)
        if key not in self.blocks:
            parts = [
                by_cut[0]
                for p in range(index * hop, (index + 1) * hop)
                if (by_cut := self.panes.get(p)) is not None and 0 in by_cut
            ]
            self.blocks[key] = _merge_panes(parts, width) if parts else None
            heapq.heappush(self.block_heap, ((index + 1) * hop - 1, hop, index))
        return self.blocks[key]


# --- the aggregator ------------------------------------------------------------------


@dataclass
class _Features:
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

    def take(self, idx: IntArray) -> _Features:
        return _Features(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


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
        self._groups = [_Grouping(g, len(self._specs), max_series) for g in self._groupings_spec]
        self._max_ts: int | None = None
        self._floor_ms = _NEG  # raised by restore_watermark and flush_all
        self._idle_wm_ms = _NEG  # raised by advance_wall_clock
        self._skip_until_ms = _NEG
        self._external = False  # watermarks come from the caller (see add)
        self._external_wm_ms = _NEG
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
        return None if w <= _NEG else w

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
        """
        if watermark_ms is not None:
            self._external = True
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
        for g in self._groups:
            series = self._series_ids(g, batch, cols)
            for i, lm in enumerate(late_masks):
                if lm is not None and count_late:
                    g.late_rows[i].append((series[lm], cut_all[lm]))
            if agg_idx is None:
                self._accumulate(g, feats, series)
            elif agg_idx.size:
                self._accumulate(g, feats.take(agg_idx), series[agg_idx])
        top = int(batch.ts_ms.max())
        self._max_ts = top if self._max_ts is None else max(self._max_ts, top)
        if watermark_ms is not None:
            self._external_wm_ms = max(self._external_wm_ms, int(watermark_ms))
        return self._emit()

    def _features(
        self, batch: EventBatch, count_late: bool = True
    ) -> tuple[_Features, IntArray, IntArray | None, list[npt.NDArray[np.bool_] | None]]:
        ts = batch.ts_ms
        n = ts.size
        base = self._base_ms
        # The watermark each event saw on arrival: the state before the batch raised by
        # the running max of the events before it in this batch.
        if self._external:
            wm = np.full(n, self._watermark(), dtype=np.int64)
        else:
            before = np.empty(n, dtype=np.int64)
            before[0] = _NEG if self._max_ts is None else self._max_ts
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
        cost_pico = np.rint(np.where(unpriced, 0.0, batch.cost_usd) * _PICO).astype(np.int64)
        feats = _Features(
            p=p,
            cut=cut,
            lat=lat,
            lat_kb=lat_key.astype(np.int64) + _KEY_BIAS,
            ttft=ttft,
            ttft_ok=ttft_ok,
            ttft_kb=ttft_key.astype(np.int64) + _KEY_BIAS,
            err=batch.is_error,
            in_tok=batch.input_tokens,
            out_tok=batch.output_tokens,
            cost_pico=cost_pico,
            unpriced=unpriced,
        )
        return feats, cut_all, agg_idx, late_masks

    def _series_ids(
        self, g: _Grouping, batch: EventBatch, cols: dict[str, tuple[IntArray, list[str]]]
    ) -> IntArray:
        """Series id of every event for grouping ``g`` (registering new series)."""
        n = len(batch)
        comp: IntArray | None = None
        size = 1
        for d in g.spec.dims:
            if d not in cols:
                cols[d] = _factorize(batch.dims[d])
            codes, uniq = cols[d]
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
            uniq_comp = _occupied(comp, size)
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
            per_dim.append([uniq[c] for c in codes[first].tolist()])
        combos = list(zip(*per_dim, strict=True))
        ids = g.registry.assign(combos, counts)
        return ids[inverse]

    def _accumulate(self, g: _Grouping, f: _Features, series: IntArray) -> None:
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
        if total <= 4 * n + 4096:
            requests = np.bincount(comp, minlength=total)
            groups = _occupied(comp, total)
            lut = np.empty(total, dtype=np.int64)
            lut[groups] = np.arange(groups.size)
            gi = lut[comp]
            requests = requests[groups]
        else:
            groups, gi, requests = np.unique(comp, return_inverse=True, return_counts=True)
        ng = groups.size
        ints = np.empty((_N_INTS, ng), dtype=np.int64)
        ints[_REQ] = requests
        ints[_ERR] = np.bincount(gi, weights=f.err, minlength=ng)
        ints[_IN_TOK] = _int_sums(gi, f.in_tok, ng)
        ints[_OUT_TOK] = _int_sums(gi, f.out_tok, ng)
        ints[_COST] = _int_sums(gi, f.cost_pico, ng)
        ints[_UNPRICED] = np.bincount(gi, weights=f.unpriced, minlength=ng)
        ints[_TTFT_N] = np.bincount(gi, weights=f.ttft_ok, minlength=ng)
        sums = np.empty((2, ng))
        sums[_LAT] = np.bincount(gi, weights=f.lat, minlength=ng)
        sums[_TTFT] = np.bincount(gi, weights=f.ttft, minlength=ng)
        mins = np.full((2, ng), np.inf)
        maxs = np.full((2, ng), -np.inf)
        np.minimum.at(mins[_LAT], gi, f.lat)
        np.maximum.at(maxs[_LAT], gi, f.lat)
        if f.ttft_ok.any():
            np.minimum.at(mins[_TTFT], gi, np.where(f.ttft_ok, f.ttft, np.inf))
            np.maximum.at(maxs[_TTFT], gi, np.where(f.ttft_ok, f.ttft, -np.inf))

        group_series = groups % width

        group_pane = groups // width
        bounds = np.flatnonzero(np.concatenate(([True], group_pane[1:] != group_pane[:-1], [True])))
        lat_group, lat_rows = _group_rows(gi, ng, f.lat_kb, f.lat_order, group_series)
        ttft_group, ttft_rows = _group_rows(gi, ng, f.ttft_kb, f.ttft_order, group_series)
        lat_bounds = np.searchsorted(lat_group, bounds)
        ttft_bounds = np.searchsorted(ttft_group, bounds)
        for j in range(bounds.size - 1):
            a, b = int(bounds[j]), int(bounds[j + 1])
            key = int(group_pane[a])
            pane = g.pane(pmin + key // n_cut, int(cut_values[key % n_cut]), width)
            sidx = group_series[a:b]
            pane.ints[:, sidx] += ints[:, a:b]
            pane.sums[:, sidx] += sums[:, a:b]
            pane.mins[:, sidx] = np.minimum(pane.mins[:, sidx], mins[:, a:b])
            pane.maxs[:, sidx] = np.maximum(pane.maxs[:, sidx], maxs[:, a:b])
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

    def restore_watermark(self, ms: int) -> None:
        """After a restart: windows ending at or before ``ms`` were already written.
        They are never emitted again, and events for them count as late."""
        self._floor_ms = max(self._floor_ms, int(ms))
        self._skip_until_ms = max(self._skip_until_ms, int(ms))
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
        if w <= _NEG:
            return []
        fu = w // self._base_ms
        present = sorted({p for g in self._groups for p in g.panes})
        work = sorted(
            (e, i) for i in range(len(self._specs)) for e in self._closing_ends(i, present, fu)
        )
        work = [(e, i) for e, i in work if e * self._base_ms > self._skip_until_ms]
        out: list[WindowResult] = []
        # Windows closing together are computed together: one set of array
        # operations per round (in chunks, to bound memory on a flush).
        for a in range(0, len(work), _EMIT_CHUNK):
            chunk = work[a : a + _EMIT_CHUNK]
            per_grouping = [self._windows(g, chunk) for g in self._groups]
            for t in range(len(chunk)):
                for results in per_grouping:
                    out.extend(results[t])
        for g in self._groups:
            self._settle(g, fu)
        return out

    def _settle(self, g: _Grouping, fu: int) -> None:
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
        while g.block_heap and self._last_end_any(g.block_heap[0][0]) <= fu:
            _, hop, index = heapq.heappop(g.block_heap)
            del g.blocks[(hop, index)]
        if not dropped:
            return
        live = np.zeros(width, dtype=np.bool_)
        held = [pane for by_cut in g.panes.values() for pane in by_cut.values()]
        held += [b for b in g.blocks.values() if b is not None]
        for pane in held:
            w = min(width, pane.width)
            live[:w] |= pane.ints[_REQ, :w] > 0
        for dense in g.late_dense:
            live[: dense.size] |= dense[:width] > 0
        ids = g.registry.registered()
        g.registry.release(ids[~live[ids]].tolist())

    def _windows(self, g: _Grouping, work: Sequence[tuple[int, int]]) -> list[list[WindowResult]]:
        """The results of grouping ``g`` for each closed window ``(end, spec)`` in ``work``."""
        width = g.registry.capacity
        chosen: list[list[_Pane]] = []
        for e, i in work:
            hop, start = self._hop_u[i], e - self._len_u[i]
            late_parts = [
                pane
                for p in range(start, e)
                if (by_cut := g.panes.get(p))
                for cutoff, pane in by_cut.items()
                if cutoff <= e and (cutoff or hop == 1)
            ]
            if hop > 1:
                blocks = (g.block(hop, k, width) for k in range(start // hop, e // hop))
                late_parts += [b for b in blocks if b is not None]
            chosen.append(late_parts)
        out: list[list[WindowResult]] = [[] for _ in work]
        panes = list({id(p): p for ps in chosen for p in ps}.values())
        if not panes:
            return out
        index = {id(p): k for k, p in enumerate(panes)}
        for p in panes:
            p.ensure(width)  # panes made before the last new series are narrower
        ints_all = np.stack([p.ints[:, :width] for p in panes])
        sums_all = np.stack([p.sums[:, :width] for p in panes])
        mins_all = np.stack([p.mins[:, :width] for p in panes])
        maxs_all = np.stack([p.maxs[:, :width] for p in panes])
        n_items = len(work)
        ints = np.zeros((n_items, _N_INTS, width), dtype=np.int64)
        sums = np.zeros((n_items, 2, width))
        mins = np.full((n_items, 2, width), np.inf)
        maxs = np.full((n_items, 2, width), -np.inf)
        rank = g.registry.rank()
        items: list[IntArray] = []
        present_of: list[IntArray] = []
        late_of: list[IntArray] = []
        parts: list[_Rows] = []
        shifts: list[int] = []
        for t, ((e, i), ps) in enumerate(zip(work, chosen, strict=True)):
            if not ps:
                continue
            idx = [index[id(p)] for p in ps]
            ints[t] = ints_all[idx].sum(axis=0)
            sums[t] = sums_all[idx].sum(axis=0)
            mins[t] = mins_all[idx].min(axis=0)
            maxs[t] = maxs_all[idx].max(axis=0)
            present = np.flatnonzero(ints[t, _REQ])
            if present.size == 0:
                continue
            present = present[np.argsort(rank[present], kind="stable")]
            present_of.append(present)
            items.append(np.full(present.size, t, dtype=np.int64))
            late_of.append(self._take_late(g, i, e, present))
            # lay each window's latency rows at series + 2*width*t, ttft rows after them
            for p in ps:
                lat, ttft = _Pane.compact(p.lat_rows, width), _Pane.compact(p.ttft_rows, width)
                if lat is not None:
                    parts.append(lat)
                    shifts.append(2 * width * t)
                if ttft is not None:
                    parts.append(ttft)
                    shifts.append(2 * width * t + width)
        if not items:
            return out
        item = np.concatenate(items)
        sid = np.concatenate(present_of)
        late = np.concatenate(late_of)
        m = sid.size
        rows = _combine(parts, 2 * width * n_items, shifts) if parts else _NO_ROWS
        keys = (rows.kb - _KEY_BIAS).astype(np.int32)
        keys.flags.writeable = False
        counts = rows.cnt
        counts.flags.writeable = False
        slots = np.concatenate((2 * width * item + sid, 2 * width * item + width + sid))
        both = np.concatenate((item, item)), np.concatenate((sid, sid))
        which = np.repeat([_LAT, _TTFT], m)
        sketches = _MergedSketches(
            keys,
            counts,
            starts=np.searchsorted(rows.series, slots, side="left"),
            ends=np.searchsorted(rows.series, slots, side="right"),
            n=np.concatenate((ints[item, _REQ, sid], ints[item, _TTFT_N, sid])),
            total=sums[both[0], which, both[1]],
            lo=mins[both[0], which, both[1]],
            hi=maxs[both[0], which, both[1]],
            params=self._params,
        )
        q_all = sketches.quantiles(_ALL_QUANTILES)
        all_sketches = sketches.sketches()
        sel = ints[item, :, sid].T  # (fields, m)
        starts_ms = [(e - self._len_u[i]) * self._base_ms for e, i in work]
        bounds = [
            (
                datetime.fromtimestamp(start / 1000, tz=UTC),
                datetime.fromtimestamp(e * self._base_ms / 1000, tz=UTC),
                self._specs[i].length_s,
                self._specs[i].hop_s,
            )
            for start, (e, i) in zip(starts_ms, work, strict=True)
        ]
        columns = zip(
            item.tolist(),
            sid.tolist(),
            sel[_REQ].tolist(),
            sel[_ERR].tolist(),
            (sel[_ERR] / sel[_REQ]).tolist(),
            *q_all[_LAT_Q_ROWS, :m].tolist(),
            maxs[item, _LAT, sid].tolist(),
            *q_all[_TTFT_Q_ROWS, m:].tolist(),
            sel[_IN_TOK].tolist(),
            sel[_OUT_TOK].tolist(),
            (sel[_COST] / _PICO).tolist(),
            sel[_UNPRICED].tolist(),
            late.tolist(),
            all_sketches[:m],
            all_sketches[m:],
            strict=True,
        )
        template = g.registry.template
        name = g.spec.name
        for (
            t,
            s_id,
            n_req,
            n_err,
            err_rate,
            lp50,
            lp90,
            lp95,
            lp99,
            lmax,
            tp50,
            tp95,
            tp99,
            in_tok,
            out_tok,
            cost,
            unpriced,
            n_late,
            lat_sketch,
            ttft_sketch,
        ) in columns:
            start, end, length_s, hop_s = bounds[t]
            out[t].append(
                WindowResult(
                    window_start=start,
                    window_end=end,
                    window_seconds=length_s,
                    hop_seconds=hop_s,
                    grouping=name,
                    dims=dict(template(s_id)),
                    requests=n_req,
                    errors=n_err,
                    error_rate=err_rate,
                    latency_p50_ms=lp50,
                    latency_p90_ms=lp90,
                    latency_p95_ms=lp95,
                    latency_p99_ms=lp99,
                    latency_max_ms=lmax,
                    ttft_p50_ms=tp50,
                    ttft_p95_ms=tp95,
                    ttft_p99_ms=tp99,
                    input_tokens=in_tok,
                    output_tokens=out_tok,
                    cost_usd=cost,
                    unpriced_requests=unpriced,
                    late_events=n_late,
                    latency_sketch=lat_sketch,
                    ttft_sketch=ttft_sketch,
                )
            )
        return out

    def _take_late(self, g: _Grouping, i: int, e: int, present: IntArray) -> IntArray:
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


# --- vectorised helpers --------------------------------------------------------------


def _factorize(col: npt.NDArray[Any]) -> tuple[IntArray, list[str]]:
    """Batch-local integer codes of a string column (dict lookups beat sorting objects)."""
    values = col.tolist()
    uniq = list(dict.fromkeys(values))
    if len(uniq) == 1:
        codes = np.zeros(len(values), dtype=np.int64)
    else:
        index = {v: k for k, v in enumerate(uniq)}
        codes = np.fromiter(map(index.__getitem__, values), dtype=np.int64, count=len(values))
    names = [v if isinstance(v, str) else ("" if v is None else str(v)) for v in uniq]
    return codes, names


def _occupied(index: IntArray, size: int) -> IntArray:
    """Sorted distinct values of ``index`` (all in ``[0, size)``).

    Marking a boolean array and scanning it is several times faster than
    ``flatnonzero`` on the int/float counts of the same size.
    """
    mark = np.zeros(size, dtype=np.bool_)
    mark[index] = True
    return np.flatnonzero(mark)


def _int_sums(gi: IntArray, values: IntArray, ng: int) -> IntArray:
    """Exact int64 group sums: bincount (float) while every sum fits in 2**53."""
    if int(values.sum()) < _EXACT_FLOAT_INT:
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


def _group_rows(
    gi: IntArray, ng: int, kb: IntArray, order: IntArray, group_series: IntArray
) -> tuple[IntArray, _Rows]:
    """Bucket rows of one batch: (group of each row, rows), sorted by (group, key).

    ``order`` lists the events in bucket order; a stable sort by group on top of it
    gives (group, bucket) order, by radix sort when there are under 65,536 groups.
    """
    if order.size == 0:
        return np.zeros(0, dtype=np.int64), _NO_ROWS
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
    return group, _Rows(group_series[group], k[starts], counts)


class _MergedSketches:
    """The merged bucket rows of one window for many series, with vectorised quantiles
    that reproduce ``LogHistogram.quantile`` exactly."""

    def __init__(
        self,
        keys: npt.NDArray[np.int32],
        counts: IntArray,
        *,
        starts: IntArray,
        ends: IntArray,
        n: IntArray,
        total: FloatArray,
        lo: FloatArray,
        hi: FloatArray,
        params: SketchParams,
    ) -> None:
        self.keys = keys
        self.counts = counts
        self.starts = starts
        self.ends = ends
        self.n = n
        self.total = total
        self.lo = lo
        self.hi = hi
        self.params = params
        self._n_l = n.tolist()
        self._starts_l = starts.tolist()
        self._ends_l = ends.tolist()
        self._lo_l = lo.tolist()
        self._hi_l = hi.tolist()
        self._total_l = total.tolist()
        zeros = np.zeros(n.size, dtype=np.int64)
        if keys.size:
            # the zero bucket, when a series has one, is its first row
            first = np.minimum(starts, keys.size - 1)
            has_zero = (ends > starts) & (keys[first] == ZERO_KEY)
            zeros[has_zero] = counts[first[has_zero]]
        self._zeros_l = zeros.tolist()

    def quantiles(self, qs: Sequence[float]) -> FloatArray:
        out = np.full((len(qs), self.n.size), np.nan)
        valid = self.n > 0
        if not valid.any() or self.keys.size == 0:
            return out
        cum = np.cumsum(self.counts)
        before = np.where(self.starts > 0, cum[np.maximum(self.starts - 1, 0)], 0)
        levels = np.asarray(qs, dtype=np.float64)[:, None]
        # same float64 product and floor as LogHistogram.quantile, for all levels at once
        k = np.floor(levels * (self.n.astype(np.float64) - 1.0)).astype(np.int64)
        idx = np.minimum(np.searchsorted(cum, before + k, side="right"), self.keys.size - 1)
        v = np.minimum(np.maximum(representatives(self.keys[idx], self.params), self.lo), self.hi)
        v = np.where(k == 0, self.lo, v)
        v = np.where(k == self.n - 1, self.hi, v)
        return np.where(valid, v, np.nan)

    def sketches(self) -> list[LogHistogram]:
        """One independent LogHistogram per series; they share the read-only arrays."""
        make = LogHistogram._from_parts
        params, keys, counts = self.params, self.keys, self.counts
        out = []
        for a, b, zeros, n, lo, hi, total in zip(
            self._starts_l,
            self._ends_l,
            self._zeros_l,
            self._n_l,
            self._lo_l,
            self._hi_l,
            self._total_l,
            strict=True,
        ):
            if n == 0:
                out.append(LogHistogram(params.alpha))
                continue
            first = a + 1 if zeros else a  # the zero bucket is kept apart
            out.append(
                make(
                    params,
                    keys[first:b],
                    counts[first:b],
                    zeros=zeros,
                    n=n,
                    lo=lo,
                    hi=hi,
                    total=total,
                )
            )
        return out
