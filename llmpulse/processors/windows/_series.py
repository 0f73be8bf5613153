"""Dense ids for the series of a grouping, with the cardinality cap."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import NoReturn

import numpy as np

from llmpulse._types import IntArray
from llmpulse.processors.windows._config import (
    OTHER,
)
from llmpulse.schemas.event import DIMENSIONS

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


class SeriesRegistry:
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
