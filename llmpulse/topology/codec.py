"""Batches on repartition topics: a ``TraceBatch`` as one Arrow IPC message.

A repartition message carries many events (one per row), so Kafka's per-message
costs are paid per batch, not per event, and the receiver gets columns without
parsing anything. Every value survives the trip bit for bit (floats stay
float64, missing values stay missing), so a worker computes exactly what a
replay computes from the same events. Two extra columns travel along: which
keyed states of the receiving task each row is for (``targets``, one bit per
key) and the row's offset in the sender's input partition (``origin``), which
lets the receiver drop rows a restarted sender sent again.

>>> import numpy as np
>>> from llmpulse.schemas.event import TraceEvent
>>> e = TraceEvent.model_validate({"schema_version": 1, "event_id": "a", "service": "s",
...     "model": "m", "timestamp": 1767225600123, "latency_ms": 5, "scores": {"x": 0.5}})
>>> b = TraceBatch.from_events([e], ["kafka:t/0@7"])
>>> back, targets, origin = decode(encode(b, targets=np.array([5], np.uint32)))
>>> back.event_id.tolist(), back.objects["scores"].tolist(), int(targets[0]), origin
(['a'], [{'x': 0.5}], 5, None)
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]

from llmpulse.schemas.batch import (
    EMBEDDING_FIELDS,
    MAP_FIELDS,
    NUMERIC_FIELDS,
    STRING_FIELDS,
    TEXT_FIELDS,
    TraceBatch,
    object_array,
)

_EMBEDDING: Final = pa.list_(pa.float64())
_MAPS: Final = {
    "scores": pa.map_(pa.string(), pa.float64()),
    "attributes": pa.map_(pa.string(), pa.string()),
}


def _strings(col: npt.NDArray[np.object_]) -> pa.Array:
    return pa.array(col, type=pa.string(), from_pandas=True)


def _map(col: npt.NDArray[np.object_], kind: pa.DataType) -> pa.Array:
    # pyarrow converts the dicts itself (in C++, faster than building offsets in
    # Python); a row without any (None) becomes an empty map, as decode expects.
    return pa.array([d or () for d in col.tolist()], type=kind)


def encode(
    batch: TraceBatch,
    *,
    targets: npt.NDArray[np.uint32] | None = None,
    origin: npt.NDArray[np.int64] | None = None,
    priced: bool = False,
) -> bytes:
    """One Arrow IPC stream of ``batch`` (with its prices when ``priced``)."""
    cols: dict[str, pa.Array] = {}
    for name in STRING_FIELDS:
        cols[name] = _strings(batch.objects[name])
    for name in TEXT_FIELDS:
        cols[name] = _strings(batch.objects[name])
    for name in EMBEDDING_FIELDS:
        cols[name] = pa.array(batch.objects[name].tolist(), type=_EMBEDDING)
    for name in MAP_FIELDS:
        cols[name] = _map(batch.objects[name], _MAPS[name])
    for name in NUMERIC_FIELDS:
        cols[name] = pa.array(batch.numbers[name])
    cols["source"] = _strings(batch.source)
    if priced:
        cols["cost"] = pa.array(batch.cost)
        cols["cost_source"] = _strings(batch.cost_source)
        cols["price_version"] = _strings(batch.price_version)
    if targets is not None:
        cols["targets"] = pa.array(targets, type=pa.uint32())
    if origin is not None:
        cols["origin"] = pa.array(origin, type=pa.int64())
    table = pa.table(cols)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def _objects(col: pa.ChunkedArray) -> npt.NDArray[np.object_]:
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)


def _dicts(col: pa.ChunkedArray) -> npt.NDArray[np.object_]:
    return object_array([dict(items) if items is not None else {} for items in col.to_pylist()])


def decode(
    data: bytes,
) -> tuple[TraceBatch, npt.NDArray[np.uint32] | None, npt.NDArray[np.int64] | None]:
    """The batch of :func:`encode`, with its targets and origins (None when absent)."""
    table = pa.ipc.open_stream(data).read_all()
    objects: dict[str, Any] = {}
    for name in (*STRING_FIELDS, *TEXT_FIELDS):
        objects[name] = _objects(table.column(name))
    for name in EMBEDDING_FIELDS:
        objects[name] = object_array(table.column(name).to_pylist())
    for name in MAP_FIELDS:
        objects[name] = _dicts(table.column(name))
    numbers = {name: table.column(name).to_numpy() for name in NUMERIC_FIELDS}
    batch = TraceBatch(objects, numbers, _objects(table.column("source")))
    names = set(table.column_names)
    if "cost" in names:
        batch.cost = table.column("cost").to_numpy()
        batch.cost_source = _objects(table.column("cost_source"))
        batch.price_version = _objects(table.column("price_version"))
    targets = table.column("targets").to_numpy() if "targets" in names else None
    origin = table.column("origin").to_numpy() if "origin" in names else None
    return batch, targets, origin


def event_ids(data: bytes) -> list[str]:
    """Only the event ids of an encoded batch (rebuilding a dedup memory)."""
    table = pa.ipc.open_stream(data).read_all()
    ids: list[str] = table.column("event_id").to_pylist()
    return ids
