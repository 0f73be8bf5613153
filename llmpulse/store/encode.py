"""Encoding rows for ClickHouse: a ``TraceBatch`` as an Arrow table of ``traces``.

Encoding is kept apart from transport: the writer only inserts what this
returns. Arrow carries whole columns to the engine (chDB or a server) without a
Python object per value; the column types follow ``TRACE_COLUMNS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]

from llmpulse.processors.windows import (
    INT_FIELDS,
    NUMBER_FIELDS,
    EmissionRuns,
    emission_runs,
    sketch_rows,
    start_millis,
)
from llmpulse.schemas.batch import (
    EMBEDDING_FIELDS,
    OPTIONAL_FLOAT_FIELDS,
    TOKEN_FIELDS,
    TraceBatch,
    to_ms,
)
from llmpulse.schemas.event import DIMENSIONS
from llmpulse.schemas.rows import TRACE_COLUMNS, WINDOW_COLUMNS, names

if TYPE_CHECKING:
    from llmpulse.processors.windows import WindowResult

WINDOW_NAMES: Final = names(WINDOW_COLUMNS)
_TS: Final = pa.timestamp("ms", tz="UTC")
_DT: Final = pa.timestamp("s", tz="UTC")
_SCORES: Final = pa.map_(pa.string(), pa.float64())
_ATTRIBUTES: Final = pa.map_(pa.string(), pa.string())
_REDACTIONS: Final = pa.map_(pa.string(), pa.uint32())


def _strings(col: npt.NDArray[np.object_]) -> pa.Array:
    # from_pandas: numpy object arrays convert 7x faster (no NaN can occur in them)
    return pa.array(col, type=pa.string(), from_pandas=True)


def _map(col: npt.NDArray[np.object_], kind: pa.DataType) -> pa.Array:
    dicts = col.tolist()
    if None in dicts:  # redaction counts are None on rows without any
        dicts = [d or {} for d in dicts]
    lengths = np.fromiter(map(len, dicts), dtype=np.int32, count=len(dicts))
    offsets = np.zeros(len(dicts) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    keys = [k for d in dicts if d for k in d]
    items = [v for d in dicts if d for v in d.values()]
    return pa.MapArray.from_arrays(
        pa.array(offsets), pa.array(keys, pa.string()), pa.array(items, kind.item_type)
    )


def _dims(col: npt.NDArray[np.object_]) -> pa.Array:
    return pa.array([0 if v is None else len(v) for v in col.tolist()], type=pa.uint16())


def traces_table(batch: TraceBatch, ingested_at: datetime, *, store_text: bool) -> pa.Table:
    """The ``traces`` rows of ``batch`` (``store_text=False`` leaves prompt and response null)."""
    n = len(batch)
    o, x = batch.objects, batch.numbers
    cols: dict[str, Any] = {}
    for name, _kind in TRACE_COLUMNS:
        if name == "schema_version":
            cols[name] = pa.array(np.ones(n, dtype=np.uint8))
        elif name == "timestamp":
            cols[name] = pa.array(x["timestamp_ms"], type=pa.int64()).cast(_TS)
        elif name == "latency_ms":
            cols[name] = pa.array(x[name], type=pa.float64())
        elif name == "cost_usd":  # the priced cost, not only the one the event reported
            cols[name] = pa.array(batch.cost, type=pa.float64(), mask=np.isnan(batch.cost))
        elif name in OPTIONAL_FLOAT_FIELDS:
            cols[name] = pa.array(x[name], type=pa.float64(), mask=np.isnan(x[name]))
        elif name in TOKEN_FIELDS:
            t = x[name]
            cols[name] = pa.array(np.where(t >= 0, t, 0).astype(np.uint64), mask=t < 0)
        elif name == "cost_source":
            cols[name] = _strings(batch.cost_source)
        elif name == "price_version":
            cols[name] = _strings(batch.price_version)
        elif name == "scores":
            cols[name] = _map(o[name], _SCORES)
        elif name == "attributes":
            cols[name] = _map(o[name], _ATTRIBUTES)
        elif name in ("prompt", "response"):
            cols[name] = _strings(o[name]) if store_text else pa.nulls(n, pa.string())
        elif name in ("prompt_embedding_dim", "response_embedding_dim"):
            field = name.removesuffix("_dim")
            assert field in EMBEDDING_FIELDS
            cols[name] = _dims(o[field])
        elif name == "source":
            cols[name] = _strings(batch.source)
        elif name == "redactions":
            cols[name] = _map(batch.redactions, _REDACTIONS)
        elif name == "ingested_at":
            cols[name] = pa.array(np.full(n, to_ms(ingested_at), dtype=np.int64)).cast(_TS)
        else:
            cols[name] = _strings(o[name])
    return pa.table(cols)


_NULLABLE: Final = frozenset({"ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms"})


def windows_table(
    results: Sequence[WindowResult],
    ids: Sequence[str],
    emitted_at: datetime,
    runs: EmissionRuns | None = None,
) -> pa.Table:
    """``window_stats`` rows (``WINDOW_COLUMNS``) of closed windows with their ids
    (``runs``: ``emission_runs(results)`` when the caller has it already)."""
    n = len(results)
    # Results of the aggregator are gathered column by column from their emission
    # passes; only the others (read back from the store) are read field by field.
    found = emission_runs(results) if runs is None else runs
    passes, own = found
    numbers = {
        name: np.empty(n, dtype=np.uint64 if name in INT_FIELDS else np.float64)
        for name in NUMBER_FIELDS
    }
    starts = np.empty(n, dtype=np.int64)
    dims = np.empty((n, len(DIMENSIONS)), dtype=object)
    grouping = np.empty(n, dtype=object)
    for em, where, js in passes:
        for name, values in numbers.items():
            values[where] = em.numbers[name][js]
        starts[where] = em.start_ms[js]
        dims[where] = em.dims[em.series[js]]
        grouping[where] = em.grouping
    if own:
        others = [results[i] for i in own]
        for name, values in numbers.items():
            values[own] = [getattr(r, name) for r in others]
        starts[own] = start_millis(others)
        dims[own] = [tuple(r.dims.get(d, "") for d in DIMENSIONS) for r in others]
        grouping[own] = [r.grouping for r in others]
    starts //= 1000
    lat, ttft = sketch_rows(results, found)
    cols: dict[str, Any] = {
        "window_id": pa.array(list(ids), pa.string()),
        "window_start": pa.array(starts).cast(_DT),
        "window_end": pa.array(starts + numbers["window_seconds"].astype(np.int64)).cast(_DT),
        "grouping": _strings(grouping),
    }
    for k, d in enumerate(DIMENSIONS):
        cols[d] = _strings(dims[:, k])
    for name, values in numbers.items():
        if name in ("window_seconds", "hop_seconds"):
            cols[name] = pa.array(values.astype(np.uint32))
        elif name in _NULLABLE:
            cols[name] = pa.array(values, mask=np.isnan(values))
        else:
            cols[name] = pa.array(values)
    offsets = pa.array(lat.offsets)
    cols["latency_sketch_keys"] = pa.ListArray.from_arrays(offsets, pa.array(lat.keys))
    cols["latency_sketch_counts"] = pa.ListArray.from_arrays(offsets, pa.array(lat.counts))
    cols["latency_sketch_zeros"] = pa.array(lat.zeros)
    cols["latency_min_ms"] = pa.array(lat.mins)
    offsets = pa.array(ttft.offsets)
    cols["ttft_sketch_keys"] = pa.ListArray.from_arrays(offsets, pa.array(ttft.keys))
    cols["ttft_sketch_counts"] = pa.ListArray.from_arrays(offsets, pa.array(ttft.counts))
    cols["ttft_sketch_zeros"] = pa.array(ttft.zeros)
    cols["emitted_at"] = pa.array(np.full(n, to_ms(emitted_at), dtype=np.int64)).cast(_TS)
    return pa.table({name: cols[name] for name in WINDOW_NAMES})
