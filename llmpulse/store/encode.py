"""Encoding rows for ClickHouse: a ``TraceBatch`` as an Arrow table of ``traces``.

Encoding is kept apart from transport: the writer only inserts what this
returns. Arrow carries whole columns to the engine (chDB or a server) without a
Python object per value; the column types follow ``TRACE_COLUMNS``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]

from llmpulse.schemas.batch import (
    EMBEDDING_FIELDS,
    OPTIONAL_FLOAT_FIELDS,
    TOKEN_FIELDS,
    TraceBatch,
    to_ms,
)
from llmpulse.schemas.rows import TRACE_COLUMNS, names

TRACE_NAMES: Final = names(TRACE_COLUMNS)
_TS: Final = pa.timestamp("ms", tz="UTC")
_SCORES: Final = pa.map_(pa.string(), pa.float64())
_ATTRIBUTES: Final = pa.map_(pa.string(), pa.string())


def _strings(col: npt.NDArray[np.object_]) -> pa.Array:
    return pa.array(col, type=pa.string(), from_pandas=False)


def _map(col: npt.NDArray[np.object_], kind: pa.DataType) -> pa.Array:
    dicts = col.tolist()
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
        elif name == "ingested_at":
            cols[name] = pa.array(np.full(n, to_ms(ingested_at), dtype=np.int64)).cast(_TS)
        else:
            cols[name] = _strings(o[name])
    return pa.table(cols)
