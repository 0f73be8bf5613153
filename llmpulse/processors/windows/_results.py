"""Closed windows: result objects, their sketch rows and ids."""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from itertools import repeat
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from llmpulse._types import FloatArray
from llmpulse.processors.sketch import (
    LogHistogram,
    SketchColumns,
)
from llmpulse.processors.windows._config import (
    LATENCY_QUANTILES,
    TTFT_QUANTILES,
)
from llmpulse.schemas.event import DIMENSIONS

# --- output --------------------------------------------------------------------------


class _SketchesOnDemand:
    """Lets a WindowResult hold its sketches as result ``j`` of the shared columns
    of its emission pass (``Emission``) until first read.

    The aggregator builds ~100k results per million events; many consumers read
    a few fields only, and the two sketch objects would triple the allocations
    per result. The bucket rows themselves are computed either way (they are the
    ``SketchColumns``); only the LogHistogram objects wait.
    """

    __slots__ = ("_emission", "_index")
    _emission: Emission
    _index: int

    if not TYPE_CHECKING:  # hidden from mypy, so misspelt fields stay errors

        def __getattr__(self, name: str) -> Any:
            # Python calls this only when a slot is unset: for a result from the
            # aggregator, that is one of the two sketches before its first read.
            if name not in ("latency_sketch", "ttft_sketch"):
                raise AttributeError(name)
            # Only the one asked for: alert rules on latency never read the ttft one.
            columns, j = self._emission.sketches, self._index
            if name == "ttft_sketch":
                j += columns.size // 2
            sketch = columns.sketch(j)
            _SET_SKETCH[name](self, sketch)
            return sketch


@dataclass(frozen=True, eq=False)
class Emission:
    """The columns of the results of one emission pass (one grouping), which they
    share: result ``j`` is row ``j`` of each. The store encodes whole columns from
    here instead of reading every result field by field.

    ``sketches`` holds the latency sketch of result ``j`` at ``j`` and its ttft
    sketch at ``m + j``; ``numbers`` holds each of ``NUMBER_FIELDS``; result ``j``
    belongs to series ``series[j]``, whose values of ``DIMENSIONS`` are the row
    ``dims[series[j]]`` ("" where the grouping has no such dimension).
    """

    sketches: SketchColumns
    grouping: str
    start_ms: npt.NDArray[np.int64]
    numbers: Mapping[str, npt.NDArray[Any]]
    series: npt.NDArray[np.int64]
    dims: npt.NDArray[np.object_]

    @cached_property
    def ids(self) -> npt.NDArray[np.object_]:
        """``window_id`` of every result (computed on first use, then kept): the text
        of ``window_id_of``, its series part built once per series."""
        keys = ["\x1f".join((self.grouping, *row)).encode() for row in self.dims.tolist()]
        heads: dict[tuple[int, int], bytes] = {}
        out = np.empty(self.series.size, dtype=object)
        seconds = self.numbers["window_seconds"].tolist()
        blake = hashlib.blake2b
        for j, (start, length, k) in enumerate(
            zip(self.start_ms.tolist(), seconds, self.series.tolist(), strict=True)
        ):
            head = heads.get((start, length))
            if head is None:
                head = heads[start, length] = f"{start}\x1f{length}\x1f".encode()
            out[j] = blake(head + keys[k], digest_size=16).hexdigest()
        return out


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


LAT_Q_FIELDS: Final = tuple(f"latency_p{round(100 * q)}_ms" for q in LATENCY_QUANTILES)
TTFT_Q_FIELDS: Final = tuple(f"ttft_p{round(100 * q)}_ms" for q in TTFT_QUANTILES)
INT_FIELDS: Final = (
    "window_seconds",
    "hop_seconds",
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "unpriced_requests",
    "late_events",
)
FLOAT_FIELDS: Final = (
    "error_rate",
    *LAT_Q_FIELDS,
    "latency_max_ms",
    *TTFT_Q_FIELDS,
    "cost_usd",
)
NUMBER_FIELDS: Final = (*INT_FIELDS, *FLOAT_FIELDS)
# Slot setters of WindowResult, which bypass the frozen __setattr__.
_RESULT_SETTERS: Final = {
    name: getattr(WindowResult, name).__set__
    for name in (*WindowResult.__dataclass_fields__, "_emission", "_index")
    if name not in ("latency_sketch", "ttft_sketch")
}
_SET_SKETCH: Final = {
    name: getattr(WindowResult, name).__set__ for name in ("latency_sketch", "ttft_sketch")
}


def build_results(m: int, columns: Mapping[str, Iterable[Any]]) -> list[WindowResult]:
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


Run = tuple[Emission, npt.NDArray[np.int64], npt.NDArray[np.int64]]
# What emission_runs returns: the runs, and the positions of the other results.
EmissionRuns = tuple[list[Run], list[int]]


def emission_runs(results: Sequence[WindowResult]) -> EmissionRuns:
    """``results`` by emission pass: ``(emission, where, js)`` says that
    ``results[where[k]]`` is row ``js[k]`` of ``emission``; the positions of the
    results built another way (read back from the store, say) come second."""
    # One group per emission pass (their results may interleave).
    groups: dict[int, tuple[Emission, list[int], list[int]]] = {}
    own: list[int] = []
    last: Any = None
    where: list[int] = []
    js: list[int] = []
    for i, r in enumerate(results):
        em = getattr(r, "_emission", None)
        if em is None:
            own.append(i)
            continue
        if em is not last:
            group = groups.get(id(em))
            if group is None:
                group = groups[id(em)] = (em, [], [])
            last, where, js = em, group[1], group[2]
        where.append(i)
        js.append(r._index)
    runs = [
        (em, np.asarray(w, dtype=np.int64), np.asarray(j, dtype=np.int64))
        for em, w, j in groups.values()
    ]
    return runs, own


def sketch_rows(
    results: Sequence[WindowResult], runs: EmissionRuns | None = None
) -> tuple[SketchRows, SketchRows]:
    """The latency and the ttft sketches of ``results`` as ``SketchRows``.

    Results from the aggregator are read straight from the bucket arrays of their
    emission pass (no LogHistogram is built); any other result through its sketches.
    ``runs`` is ``emission_runs(results)`` when the caller has it already.
    """
    found, own = emission_runs(results) if runs is None else runs
    return (
        _gather_rows(results, found, own, second=False),
        _gather_rows(results, found, own, second=True),
    )


def _gather_rows(
    results: Sequence[WindowResult],
    runs: list[Run],
    own: list[int],
    *,
    second: bool,
) -> SketchRows:
    n = len(results)
    lens = np.zeros(n, dtype=np.int64)
    zeros = np.zeros(n, dtype=np.uint64)
    mins = np.zeros(n)
    if runs:
        cols = [em.sketches for em, _, _ in runs]
        # Every pass's arrays end to end, so one gather serves all the runs.
        key_base = np.cumsum([0] + [c.keys.size for c in cols[:-1]])
        sk_base = np.cumsum([0] + [c.size for c in cols[:-1]])
        where = np.concatenate([w for _, w, _ in runs])
        j = np.concatenate(
            [
                js + base + (c.size // 2 if second else 0)
                for (_, _, js), c, base in zip(runs, cols, sk_base.tolist(), strict=True)
            ]
        )
        starts = np.concatenate(
            [c.starts + base for c, base in zip(cols, key_base.tolist(), strict=True)]
        )[j]
        ends = np.concatenate(
            [c.ends + base for c, base in zip(cols, key_base.tolist(), strict=True)]
        )[j]
        z = np.concatenate([c.zeros for c in cols])[j]
        first = starts + (z > 0)  # the zero row, when present, comes first
        lens[where] = ends - first
        zeros[where] = z
        count = np.concatenate([c.n for c in cols])[j]
        lo = np.concatenate([c.lo for c in cols])[j]
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
        keys[dst] = np.concatenate([c.keys for c in cols])[src]
        counts[dst] = np.concatenate([c.counts for c in cols])[src]
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


def window_ids(results: Sequence[WindowResult], runs: EmissionRuns | None = None) -> list[str]:
    """``window_id`` of many results (those of the aggregator from their
    emission pass, which hashes each series' part of the text once). ``runs`` is
    ``emission_runs(results)`` when the caller has it already.

    >>> from llmpulse.processors.windows import WindowAggregator, WindowSpec, GroupingSet
    >>> from llmpulse.processors.windows._batch import EventBatch
    >>> agg = WindowAggregator([WindowSpec(60, 30)], [GroupingSet(("model",))])
    >>> agg.add(EventBatch.from_records([{"ts_ms": 1_000, "latency_ms": 1.0, "model": "m"}]))
    []
    >>> rs = agg.flush_all()
    >>> window_ids(rs) == [window_id(r) for r in rs]
    True
    """
    found, own = emission_runs(results) if runs is None else runs
    out = np.empty(len(results), dtype=object)
    for em, where, js in found:
        out[where] = em.ids[js]
    for i in own:  # results built another way (read back from the store)
        out[i] = window_id(results[i])
    ids: list[str] = out.tolist()
    return ids


def start_millis(results: Sequence[WindowResult]) -> list[int]:
    """``window_start_ms`` of many results (results closing together share their
    start datetime object, so each distinct one is converted once)."""
    seen: dict[int, int] = {}
    out = []
    for r in results:
        start = r.window_start
        ms = seen.get(id(start))
        if ms is None:
            ms = seen[id(start)] = round(start.timestamp() * 1000)
        out.append(ms)
    return out


def window_id_of(start_ms: int, window_seconds: int, grouping: str, dims: Mapping[str, str]) -> str:
    """``window_id`` from the raw fields (for rows read back from the store)."""
    parts = [str(int(start_ms)), str(int(window_seconds)), grouping]
    parts.extend(str(dims.get(d, "")) for d in DIMENSIONS)
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()
