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
* Emission is per window result, and a sparse stream has ~0.1 result per event, so
  it is built for that: counters, sums, minima and maxima of all windows closing
  together come from one ``reduceat`` over their panes; the sketch buckets of the
  windows of one spec come from a dense (series x bucket) grid that moves from one
  window to the next by adding the panes entering and subtracting those leaving
  (``_SlidingGrid``; sparse data is merged by sorting instead); percentiles of all
  results at once from the merged rows (``SketchColumns``); the result objects are
  filled field by field for all results at once (``_build_results``).
* Results share what they can: the dims mapping of a series (read-only) and the
  bucket arrays of their emission; a result's LogHistogram objects are made on
  first read.
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
import itertools
import math
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from typing import TYPE_CHECKING, Any, Final, NoReturn

import numpy as np
import numpy.typing as npt

from llmpulse.errors import ConfigError, FieldProblem, ValidationError
from llmpulse.processors.sketch import (
    DEFAULT_ALPHA,
    ZERO_KEY,
    LogHistogram,
    SketchColumns,
    SketchParams,
    bucket_keys,
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
    "SketchRows",
    "WindowAggregator",
    "WindowResult",
    "WindowSpec",
    "sketch_rows",
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
# Rows are summed on a dense (series x key) grid when it has at most this many cells
# per row (a cell costs well under a nanosecond to scan, a sorted row tens of them),
# in blocks of series of at most _MAX_GRID_CELLS cells (bounds the scratch memory).
_DENSE_CELLS_PER_ROW: Final = 32
_MAX_GRID_CELLS: Final = 1 << 21
_KEY_MARGIN: Final = 16  # keys added on each side when a sliding grid's range moves
_EMIT_CHUNK: Final = 64  # windows computed together in one emission pass
_MAX_CODES: Final = 1 << 20  # distinct values of a dimension remembered across batches

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


class _SketchesOnDemand:
    """Lets a WindowResult hold its sketches as sketch ``j`` (latency; ttft is
    ``size // 2 + j``) of shared ``SketchColumns`` until first read.

    The aggregator builds ~100k results per million events; many consumers read
    a few fields only, and the two sketch objects would triple the allocations
    per result. The bucket rows themselves are computed either way (they are the
    ``SketchColumns``); only the LogHistogram objects wait.
    """

    __slots__ = ("_sketch_columns", "_sketch_index")
    _sketch_columns: SketchColumns
    _sketch_index: int

    if not TYPE_CHECKING:  # hidden from mypy, so misspelt fields stay errors

        def __getattr__(self, name: str) -> Any:
            # Python calls this only when a slot is unset: for a result from the
            # aggregator, that is one of the two sketches before its first read.
            if name not in ("latency_sketch", "ttft_sketch"):
                raise AttributeError(name)
            columns, j = self._sketch_columns, self._sketch_index
            _SET_SKETCH["latency_sketch"](self, columns.sketch(j))
            _SET_SKETCH["ttft_sketch"](self, columns.sketch(columns.size // 2 + j))
            return getattr(self, name)


@dataclass(frozen=True, slots=True, eq=False)
class WindowResult(_SketchesOnDemand):
    """One closed window of one series. Percentiles estimate ``x_(floor(q*(n-1)))``
    within the sketch accuracy; ttft percentiles are NaN when no event had a ttft.
    Compare results with ``window_id`` or field by field (NaN and sketches make
    ``==`` meaningless, so it is identity).

    ``dims`` is read-only when the aggregator built the result (one mapping is
    shared by every result of a series), and the sketches share the bucket arrays
    of their emission pass (they fill themselves on first use)."""

    window_start: datetime
    window_end: datetime
    window_seconds: int
    hop_seconds: int
    grouping: str
    dims: Mapping[str, str]
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


_LAT_Q_FIELDS: Final = tuple(f"latency_p{round(100 * q)}_ms" for q in LATENCY_QUANTILES)
_TTFT_Q_FIELDS: Final = tuple(f"ttft_p{round(100 * q)}_ms" for q in TTFT_QUANTILES)
# Slot setters of WindowResult, which bypass the frozen __setattr__.
_RESULT_SETTERS: Final = {
    name: getattr(WindowResult, name).__set__
    for name in (*WindowResult.__dataclass_fields__, "_sketch_columns", "_sketch_index")
    if name not in ("latency_sketch", "ttft_sketch")
}
_SET_SKETCH: Final = {
    name: getattr(WindowResult, name).__set__ for name in ("latency_sketch", "ttft_sketch")
}


def _build_results(m: int, columns: Mapping[str, Iterable[Any]]) -> list[WindowResult]:
    """``m`` results from one iterable of values per field.

    The aggregator emits ~100k results per million events, so how they are built
    matters: the frozen dataclass ``__init__`` makes one ``object.__setattr__`` call
    per field and result, while here each field is set for all results by one
    C-level ``map`` over the slot descriptor (about 3x cheaper).
    """
    results: list[WindowResult] = list(map(object.__new__, repeat(WindowResult, m)))
    for name, setter in _RESULT_SETTERS.items():
        deque(map(setter, results, columns[name]), maxlen=0)
    return results


@dataclass(frozen=True)
class SketchRows:
    """The bucket rows of many results' sketches laid end to end, as the store keeps
    them: result ``i`` owns ``keys``/``counts[offsets[i]:offsets[i + 1]]``, plus its
    exact-zero count and minimum (0 for an empty sketch)."""

    keys: npt.NDArray[np.int32]
    counts: npt.NDArray[np.uint64]
    offsets: npt.NDArray[np.int32]
    zeros: npt.NDArray[np.uint64]
    mins: FloatArray


def sketch_rows(results: Sequence[WindowResult]) -> tuple[SketchRows, SketchRows]:
    """The latency and the ttft sketches of ``results`` as ``SketchRows``.

    Results from the aggregator are read straight from the bucket arrays of their
    emission pass (no LogHistogram is built); any other result through its sketches.
    """
    # One group per emission pass (their results may interleave).
    groups: dict[int, tuple[Any, list[int], list[int]]] = {}
    own: list[int] = []
    last: Any = None
    where: list[int] = []
    js: list[int] = []
    for i, r in enumerate(results):
        cols = getattr(r, "_sketch_columns", None)
        if cols is None:
            own.append(i)
            continue
        if cols is not last:
            group = groups.get(id(cols))
            if group is None:
                group = groups[id(cols)] = (cols, [], [])
            last, where, js = cols, group[1], group[2]
        where.append(i)
        js.append(r._sketch_index)
    runs = list(groups.values())
    return (
        _gather_rows(results, runs, own, second=False),
        _gather_rows(results, runs, own, second=True),
    )


def _gather_rows(
    results: Sequence[WindowResult],
    runs: list[tuple[Any, list[int], list[int]]],
    own: list[int],
    *,
    second: bool,
) -> SketchRows:
    n = len(results)
    lens = np.zeros(n, dtype=np.int64)
    zeros = np.zeros(n, dtype=np.uint64)
    mins = np.zeros(n)
    if runs:
        # Every pass's arrays end to end, so one gather serves all the runs.
        key_base = np.cumsum([0] + [c.keys.size for c, _, _ in runs[:-1]])
        sk_base = np.cumsum([0] + [c.size for c, _, _ in runs[:-1]])
        where = np.concatenate([np.asarray(w, dtype=np.int64) for _, w, _ in runs])
        j = np.concatenate(
            [
                np.asarray(js, dtype=np.int64) + base + (c.size // 2 if second else 0)
                for (c, _, js), base in zip(runs, sk_base.tolist(), strict=True)
            ]
        )
        starts = np.concatenate(
            [c.starts + base for (c, _, _), base in zip(runs, key_base.tolist(), strict=True)]
        )[j]
        ends = np.concatenate(
            [c.ends + base for (c, _, _), base in zip(runs, key_base.tolist(), strict=True)]
        )[j]
        z = np.concatenate([c.zeros for c, _, _ in runs])[j]
        first = starts + (z > 0)  # the zero row, when present, comes first
        lens[where] = ends - first
        zeros[where] = z
        count = np.concatenate([c.n for c, _, _ in runs])[j]
        lo = np.concatenate([c.lo for c, _, _ in runs])[j]
        mins[where] = np.where(count > 0, lo, 0.0)
    arrays = {}
    for i in own:
        h = results[i].ttft_sketch if second else results[i].latency_sketch
        arrays[i] = h.to_arrays()
        lens[i], zeros[i], mins[i] = arrays[i][0].size, h.zero_count, h.min if h.count else 0.0
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    keys = np.zeros(int(offsets[-1]), dtype=np.int32)
    counts = np.zeros(int(offsets[-1]), dtype=np.uint64)
    if runs:
        ln = lens[where]
        rel = np.arange(int(ln.sum())) - np.repeat(np.cumsum(ln) - ln, ln)
        dst = np.repeat(offsets[where], ln) + rel
        src = np.repeat(first, ln) + rel
        keys[dst] = np.concatenate([c.keys for c, _, _ in runs])[src]
        counts[dst] = np.concatenate([c.counts for c, _, _ in runs])[src]
    for i, (k, c) in arrays.items():
        keys[offsets[i] : offsets[i + 1]] = k
        counts[offsets[i] : offsets[i + 1]] = c
    return SketchRows(keys, counts, offsets.astype(np.int32), zeros, mins)


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


class _Dims(dict[str, str]):
    """The dims of one series, shared by all its results, so it refuses changes.

    A dict underneath (reads stay C-speed, it pickles and serialises like one);
    only the methods that would change it are replaced.

    >>> d = _Dims({"model": "m1"})
    >>> d == {"model": "m1"}, d.get("tenant", "")
    (True, '')
    >>> d["model"] = "m2"
    Traceback (most recent call last):
    TypeError: WindowResult.dims is shared by the results of a series: copy it to change it
    """

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(
            "WindowResult.dims is shared by the results of a series: copy it to change it"
        )

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse

    def __reduce__(self) -> tuple[type[_Dims], tuple[dict[str, str]]]:
        return (_Dims, (dict(self),))


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
        self._templates: list[Mapping[str, str] | None] = []
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

    def template(self, sid: int) -> Mapping[str, str]:
        """The dims of series ``sid`` (all DIMENSIONS), read-only: one mapping is
        handed to every result of the series instead of a copy each."""
        t = self._templates[sid]
        if t is None:
            combo = self._keys[sid]
            assert combo is not None
            values = dict(zip(self._dims, combo, strict=True))
            t = _Dims({d: values.get(d, "") for d in DIMENSIONS})
            self._templates[sid] = t
        return t


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
        self.ints: IntArray = np.zeros((_N_INTS, width), dtype=np.int64)
        # sums, mins and maxs are views of one array, so a window merges them
        # with one stack of its panes instead of three
        self.floats: FloatArray = np.empty((6, width))
        self.floats[:2] = 0.0
        self.floats[2:4] = np.inf
        self.floats[4:] = -np.inf
        self._views()
        self.lat_rows: list[_Rows] = []
        self.ttft_rows: list[_Rows] = []
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
        self.ints = np.concatenate((self.ints, np.zeros((_N_INTS, grow), np.int64)), axis=1)
        fresh = np.empty((6, grow))
        fresh[:2], fresh[2:4], fresh[4:] = 0.0, np.inf, -np.inf
        self.floats = np.concatenate((self.floats, fresh), axis=1)
        self._views()

    def add_rows(self, lat: _Rows, ttft: _Rows) -> None:
        self._keys = self._cells = None
        # Merging every few batches keeps a busy pane at about (series x buckets)
        # rows instead of one chunk per batch.
        for rows, new in ((self.lat_rows, lat), (self.ttft_rows, ttft)):
            if new.kb.size:
                rows.append(new)
                if len(rows) >= _MAX_CHUNKS:
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
            self._keys = (lo, hi, n_rows, int(self.ints[_REQ].sum()))
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
                if int(self.ints[_REQ].sum()) < 2**31:  # as the grid, mostly int32
                    counts = counts.astype(np.int32)
            else:
                cells, counts = np.zeros(0, np.int32), np.zeros(0, np.int32)
            c = self._cells = (kmin, n_keys, cells, counts)
        return c[2], c[3]

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


def _combine(parts: list[_Rows], n_series: int) -> _Rows:
    """Add up the bucket rows of several chunks (series ids below ``n_series``)."""
    if len(parts) == 1:
        return parts[0]
    return _sum_rows(
        np.concatenate([r.series for r in parts]),
        np.concatenate([r.kb for r in parts]),
        np.concatenate([r.cnt for r in parts]),
        n_series,
    )


def _window_stats(
    chosen: Sequence[list[_Pane]], width: int
) -> tuple[IntArray, FloatArray, FloatArray, FloatArray]:
    """Counters, sums, minima and maxima of each window (item ``t`` merges the
    panes ``chosen[t]``), shaped ``(items, rows, width)``."""
    n_items = len(chosen)
    ints = np.zeros((n_items, _N_INTS, width), dtype=np.int64)
    sums = np.zeros((n_items, 2, width))
    mins = np.full((n_items, 2, width), np.inf)
    maxs = np.full((n_items, 2, width), -np.inf)
    panes = list({id(p): p for ps in chosen for p in ps}.values())
    index = {id(p): k for k, p in enumerate(panes)}
    for p in panes:
        p.ensure(width)  # panes made before the last new series are narrower
    filled = [t for t, ps in enumerate(chosen) if ps]
    take = [index[id(p)] for t in filled for p in chosen[t]]
    # One reduceat per array merges every window at once: the panes of window t
    # are rows cuts[t]:cuts[t+1] of the gathered stack (adding in pane order, as
    # a per-window sum would).
    cuts = np.cumsum([0] + [len(chosen[t]) for t in filled[:-1]])
    ints[filled] = np.add.reduceat(np.stack([p.ints[:, :width] for p in panes])[take], cuts)
    floats = np.stack([p.floats[:, :width] for p in panes])[take]
    sums[filled] = np.add.reduceat(floats[:, 0:2], cuts)
    mins[filled] = np.minimum.reduceat(floats[:, 2:4], cuts)
    maxs[filled] = np.maximum.reduceat(floats[:, 4:6], cuts)
    return ints, sums, mins, maxs


def _bucket_rows(
    g: _Grouping,
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
        keys.append((rows.kb - _KEY_BIAS).astype(np.int32))
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
        key_of_col = np.arange(n_keys, dtype=np.int64) + (kmin - 1 - _KEY_BIAS)
        key_of_col[0] = ZERO_KEY
        self._key_of_col = key_of_col.astype(np.int32)
        # The panes summed in the grid now (held, so their ids stay theirs), with
        # the cells and counts they added.
        self._held: dict[int, tuple[_Pane, npt.NDArray[np.int32], npt.NDArray[Any]]] = {}

    @classmethod
    def fit(cls, g: _Grouping, windows: Sequence[list[_Pane]], width: int) -> _SlidingGrid | None:
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
        wanted = (max(1, lo - _KEY_MARGIN), hi + _KEY_MARGIN)
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


def _window_rows(chosen: list[list[_Pane]], slot_of: IntArray, m: int, width: int) -> _Rows:
    """The merged bucket rows of every result of one emission pass.

    ``chosen[t]`` are the panes of window ``t`` and ``slot_of[t, series]`` the result
    of that series in it; latency rows go to slot ``j``, ttft rows to ``m + j``. The
    rows come back sorted by (slot, key), so each result's buckets are contiguous.
    """
    parts: list[_Rows] = []
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
        return _NO_ROWS
    sizes = [r.series.size for r in parts]
    cell = np.concatenate([r.series for r in parts])
    cell += np.repeat(np.asarray(offsets, dtype=np.int64), sizes)
    slot = slot_of.ravel()[cell]
    slot += np.repeat(np.asarray(shifts, dtype=np.int64), sizes)
    kb = np.concatenate([r.kb for r in parts])
    cnt = np.concatenate([r.cnt for r in parts])
    return _sum_rows(slot, kb, cnt, 2 * m)


def _sum_rows(series: IntArray, kb: IntArray, cnt: IntArray, n_series: int) -> _Rows:
    """Rows (series, kb, cnt) with repeats added up, sorted by (series, kb).

    Bucket keys of real data span a few hundred values, so the sum is usually taken
    on a dense (series x key) grid: a scatter-add per row and one scan per cell,
    far cheaper than sorting the rows. Sparse data (or keys spread over a range
    too wide for the grid) is sorted instead; both give the same rows.
    """
    if series.size == 0:
        return _NO_ROWS
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
    return _Rows(*(np.concatenate([getattr(r, f) for r in out]) for f in ("series", "kb", "cnt")))


def _sum_dense(
    series: IntArray, col: IntArray, cnt: IntArray, n_series: int, width: int, kmin: int
) -> _Rows:
    """``_sum_rows`` on a grid of ``n_series x width`` cells (column 0 = zero bucket)."""
    small = int(cnt.sum()) < 2**31  # int32 cells halve the memory the scan reads
    grid = np.zeros(n_series * width, dtype=np.int32 if small else np.int64)
    np.add.at(grid, series * width + col, cnt.astype(grid.dtype))
    flat = np.flatnonzero(grid != 0)  # every row adds a positive count
    counts = grid[flat].astype(np.int64)
    row = flat // width
    col_out = flat - row * width
    return _Rows(row, np.where(col_out > 0, col_out + (kmin - 1), 0), counts)


def _sum_sorted(series: IntArray, kb: IntArray, cnt: IntArray) -> _Rows:
    """``_sum_rows`` by sorting packed (series, kb) keys."""
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


class _Grouping:
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
        self.registry = _SeriesRegistry(spec.dims, max_series)
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
        self._codes = {d: _Codes() for d in DIMENSIONS}
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
                cols[d] = self._codes[d].codes(batch.dims[d])
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
        dense = total <= 4 * n + 4096
        if dense:
            # Few (pane, series) cells: every cell is a group, so each pane's
            # aggregates are a contiguous slice (no unique, no fancy indexing).
            groups, gi, ng = np.arange(total), comp, total
        else:
            groups, gi = np.unique(comp, return_inverse=True)
            ng = groups.size
        ints, sums, mins, maxs = _group_stats(f, gi, ng)
        group_series = groups % width
        group_pane = groups // width
        lat_group, lat_rows = _group_rows(gi, ng, f.lat_kb, f.lat_order, group_series)
        ttft_group, ttft_rows = _group_rows(gi, ng, f.ttft_kb, f.ttft_order, group_series)
        if dense:
            keys = _occupied(pane_key, prange * n_cut)
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
        if not dropped:
            return
        live = np.zeros(width, dtype=np.bool_)
        held = [pane for by_cut in g.panes.values() for pane in by_cut.values()]
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
        ints, sums, mins, maxs = _window_stats(chosen, width)
        # Results in window order, series in dims order (ids depend on arrival).
        by_rank = np.argsort(g.registry.rank(), kind="stable")
        item, pos = np.nonzero(ints[:, _REQ, by_rank] > 0)
        if item.size == 0:
            return out
        sid = by_rank[pos]
        first = np.searchsorted(item, np.arange(len(work) + 1)).tolist()
        late = np.zeros(sid.size, dtype=np.int64)
        for t, (e, i) in enumerate(work):
            a, b = first[t], first[t + 1]
            if b > a:
                late[a:b] = self._take_late(g, i, e, sid[a:b])
        m = sid.size
        keys, counts, starts, ends = _bucket_rows(g, chosen, [i for _, i in work], item, sid, width)
        both = np.concatenate((item, item)), np.concatenate((sid, sid))
        which = np.repeat([_LAT, _TTFT], m)
        sketches = SketchColumns(
            self._params,
            keys,
            counts,
            starts=starts,
            ends=ends,
            n=np.concatenate((ints[item, _REQ, sid], ints[item, _TTFT_N, sid])),
            total=sums[both[0], which, both[1]],
            lo=mins[both[0], which, both[1]],
            hi=maxs[both[0], which, both[1]],
        )
        q_all = sketches.quantiles(_ALL_QUANTILES)
        sel = ints[item, :, sid].T  # (fields, m)
        item_l = item.tolist()
        opens, closes, lengths, hops = zip(*(self._bounds(e, i) for e, i in work), strict=True)
        columns: dict[str, Iterable[Any]] = {
            "window_start": map(opens.__getitem__, item_l),
            "window_end": map(closes.__getitem__, item_l),
            "window_seconds": map(lengths.__getitem__, item_l),
            "hop_seconds": map(hops.__getitem__, item_l),
            "grouping": repeat(g.spec.name, m),
            "dims": map(g.registry.template, sid.tolist()),
            "requests": sel[_REQ].tolist(),
            "errors": sel[_ERR].tolist(),
            "error_rate": (sel[_ERR] / sel[_REQ]).tolist(),
            **dict(zip(_LAT_Q_FIELDS, q_all[_LAT_Q_ROWS, :m].tolist(), strict=True)),
            "latency_max_ms": maxs[item, _LAT, sid].tolist(),
            **dict(zip(_TTFT_Q_FIELDS, q_all[_TTFT_Q_ROWS, m:].tolist(), strict=True)),
            "input_tokens": sel[_IN_TOK].tolist(),
            "output_tokens": sel[_OUT_TOK].tolist(),
            "cost_usd": (sel[_COST] / _PICO).tolist(),
            "unpriced_requests": sel[_UNPRICED].tolist(),
            "late_events": late.tolist(),
            "_sketch_columns": repeat(sketches, m),
            "_sketch_index": range(m),
        }
        results = _build_results(m, columns)
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


class _Codes:
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
        if len(self._index) > _MAX_CODES:
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
            used = _occupied(codes, size)
            lut = np.empty(size, dtype=np.int64)
            lut[used] = np.arange(used.size)
            codes = lut[codes]
        else:
            used, codes = np.unique(codes, return_inverse=True)
        names = self._names
        return codes, [names[c] for c in used.tolist()]


def _occupied(index: IntArray, size: int) -> IntArray:
    """Sorted distinct values of ``index`` (all in ``[0, size)``).

    Marking a boolean array and scanning it is several times faster than
    ``flatnonzero`` on the int/float counts of the same size.
    """
    mark = np.zeros(size, dtype=np.bool_)
    mark[index] = True
    return np.flatnonzero(mark)


def _group_stats(
    f: _Features, gi: IntArray, ng: int
) -> tuple[IntArray, FloatArray, FloatArray, FloatArray]:
    """Counters, sums, minima and maxima of the events of each group ``gi``."""
    ints = np.empty((_N_INTS, ng), dtype=np.int64)
    ints[_REQ] = np.bincount(gi, minlength=ng)
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
    return ints, sums, mins, maxs


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
