"""Which partition owns a key, and which rows go to which partition.

The hash is CRC-32 of the key's UTF-8 bytes modulo the partition count: stable
across processes, versions and machines (Python's ``hash`` is not), and cheap.
Producers' own keys play no part: a row goes where its *state* lives.

A row may be owned by several partitions at once (its ``model`` series here,
its ``tenant`` series there): :func:`route` sends one copy per distinct
partition, with one bit per key telling the receiver which of its states the
row is for.

>>> import numpy as np
>>> keys = np.array(["a", "b", None, "a"], dtype=object)
>>> partitions(keys, 4).tolist()
[3, 1, -1, 3]
>>> parts = route([keys, np.array(["x", "x", "x", "x"], dtype=object)], 4)
>>> {p: (rows.tolist(), bits.tolist()) for p, (rows, bits) in sorted(parts.items())}
{1: ([1], [1]), 3: ([0, 1, 2, 3], [3, 2, 2, 3])}
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from llmpulse._types import IntArray, ObjArray


def partition_for(key: str, n: int) -> int:
    return zlib.crc32(key.encode()) % n


def partitions(keys: ObjArray, n: int) -> IntArray:
    """The partition of every key (-1 for None: the row has no such state)."""
    seen: dict[object, int] = {}
    out = np.empty(len(keys), dtype=np.int64)
    for i, k in enumerate(keys.tolist()):
        p = seen.get(k)
        if p is None:
            p = seen[k] = -1 if k is None else zlib.crc32(str(k).encode()) % n
        out[i] = p
    return out


def route(key_columns: Sequence[ObjArray], n: int) -> dict[int, tuple[IntArray, IntArray]]:
    """Per destination partition: the rows to send there and each row's key bits
    (bit ``k`` set when that partition owns the row's ``k``-th key)."""
    if not key_columns:
        return {}
    rows = len(key_columns[0])
    if len(key_columns) > 63:
        raise ValueError("at most 63 keys per row")
    # (partition, row) -> bits, as one dense matrix: partitions are few.
    bits = np.zeros((n, rows), dtype=np.int64)
    index = np.arange(rows)
    for k, keys in enumerate(key_columns):
        p = partitions(keys, n)
        ok = p >= 0
        bits[p[ok], index[ok]] |= np.int64(1) << k
    out: dict[int, tuple[IntArray, IntArray]] = {}
    for dest in range(n):
        sel = np.flatnonzero(bits[dest])
        if sel.size:
            out[dest] = (sel, bits[dest, sel])
    return out


def owned_masks(
    bits: npt.NDArray[np.integer], layout: Sequence[tuple[str, int]]
) -> dict[str, npt.NDArray[np.bool_]]:
    """Per stage, the (rows x keys) ownership matrix encoded in ``bits``; ``layout``
    lists each stage with its number of keys, in bit order."""
    out: dict[str, npt.NDArray[np.bool_]] = {}
    shift = 0
    b = bits.astype(np.int64)
    for name, width in layout:
        if width:
            cols = [(b >> (shift + k)) & 1 for k in range(width)]
            out[name] = np.stack(cols, axis=1).astype(np.bool_)
        shift += width
    return out
