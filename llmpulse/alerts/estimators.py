"""Small stateful estimators the alert rules keep per series.

:class:`TrailingBaseline` is what a baseline rule compares a window with;
:class:`BurnRateTracker` holds the request and error sums a burn-rate rule reads over its
spans. Both are fed one window at a time, in event time, and round-trip through plain
dicts for the engine's checkpoints.
"""

from __future__ import annotations

import math
import statistics
from bisect import bisect_right
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = ["BurnRateTracker", "TrailingBaseline"]


class TrailingBaseline:
    """Median or EWMA of the last ``windows`` values, None until ``min_windows`` seen.

    >>> b = TrailingBaseline(windows=3, min_windows=2)
    >>> b.update(1.0); b.value is None
    True
    >>> for x in (2.0, 10.0, 3.0):
    ...     b.update(x)
    >>> b.value, b.n
    (3.0, 4)
    """

    def __init__(self, windows: int, *, method: str = "median", min_windows: int = 1) -> None:
        self.windows = windows
        self.method = method
        self.min_windows = min_windows
        self._values: deque[float] = deque(maxlen=windows)
        self._ewma = math.nan
        self._alpha = 2.0 / (windows + 1.0)
        self.n = 0
        self.last_time: datetime | None = None  # end of the last window learnt (caller's)

    def update(self, x: float) -> None:
        self.n += 1
        self._values.append(x)
        self._ewma = x if self.n == 1 else self._ewma + self._alpha * (x - self._ewma)

    @property
    def value(self) -> float | None:
        if self.n < self.min_windows:
            return None
        if self.method == "ewma":
            return self._ewma
        return float(statistics.median(self._values))

    def copy(self) -> TrailingBaseline:
        """An independent copy (for an in-memory save point of the engine)."""
        b = object.__new__(TrailingBaseline)
        b.__dict__.update(self.__dict__)
        b._values = deque(self._values, maxlen=self.windows)
        return b

    def to_dict(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "method": self.method,
            "min_windows": self.min_windows,
            "values": list(self._values),
            "ewma": None if math.isnan(self._ewma) else self._ewma,
            "n": self.n,
            "last_time": None if self.last_time is None else self.last_time.isoformat(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrailingBaseline:
        b = cls(int(d["windows"]), method=str(d["method"]), min_windows=int(d["min_windows"]))
        b._values.extend(float(v) for v in d["values"])
        b._ewma = math.nan if d["ewma"] is None else float(d["ewma"])
        b.n = int(d["n"])
        last = d["last_time"]
        b.last_time = None if last is None else datetime.fromisoformat(last)
        return b


class BurnRateTracker:
    """Rolling (total, bad) sums of one series over non-overlapping windows.

    Cumulative sums with a bisect give the sum over any span ending at the latest
    window in O(log n); entries older than ``horizon_s`` are dropped in bulk.

    >>> tr = BurnRateTracker(horizon_s=180)
    >>> for end, bad in ((60, 0), (120, 5), (180, 10), (240, 20)):
    ...     tr.update(end, 100.0, float(bad))
    >>> tr.sums(60), tr.sums(180)
    ((100.0, 20.0), (300.0, 35.0))
    """

    __slots__ = ("_base_b", "_base_t", "_cb", "_ct", "_ends", "first_end", "horizon_s")

    def __init__(self, horizon_s: int) -> None:
        self.horizon_s = horizon_s
        self.first_end: int | None = None
        self._ends: list[int] = []
        self._ct: list[float] = []
        self._cb: list[float] = []
        self._base_t = 0.0
        self._base_b = 0.0

    @property
    def last_end(self) -> int | None:
        return self._ends[-1] if self._ends else None

    def update(self, end_s: int, total: float, bad: float) -> None:
        if self.first_end is None:
            self.first_end = end_s
        ct = self._ct[-1] if self._ct else self._base_t
        cb = self._cb[-1] if self._cb else self._base_b
        self._ends.append(end_s)
        self._ct.append(ct + total)
        self._cb.append(cb + bad)
        # Prune in bulk when half the list is out of the horizon: amortised O(1).
        cut = bisect_right(self._ends, end_s - self.horizon_s)
        if cut > 0 and cut * 2 >= len(self._ends):
            self._base_t, self._base_b = self._ct[cut - 1], self._cb[cut - 1]
            del self._ends[:cut], self._ct[:cut], self._cb[:cut]

    def copy(self) -> BurnRateTracker:
        """An independent copy (for an in-memory save point of the engine)."""
        t = object.__new__(BurnRateTracker)
        t.horizon_s, t.first_end = self.horizon_s, self.first_end
        t._ends, t._ct, t._cb = self._ends[:], self._ct[:], self._cb[:]
        t._base_t, t._base_b = self._base_t, self._base_b
        return t

    def to_dict(self) -> dict[str, Any]:
        return {
            "horizon_s": self.horizon_s,
            "first_end": self.first_end,
            "ends": self._ends,
            "ct": self._ct,
            "cb": self._cb,
            "base": [self._base_t, self._base_b],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BurnRateTracker:
        t = cls(int(d["horizon_s"]))
        t.first_end = d["first_end"]
        t._ends = [int(x) for x in d["ends"]]
        t._ct = [float(x) for x in d["ct"]]
        t._cb = [float(x) for x in d["cb"]]
        t._base_t, t._base_b = (float(x) for x in d["base"])
        return t

    def observed_s(self, window_s: int) -> int:
        """Seconds of the series seen so far (first window start to last window end)."""
        if self.first_end is None or not self._ends:
            return 0
        return self._ends[-1] - self.first_end + window_s

    def sums(self, span_s: int) -> tuple[float, float]:
        """(total, bad) over the windows ending in ``(last_end - span_s, last_end]``."""
        if not self._ends:
            return 0.0, 0.0
        i = bisect_right(self._ends, self._ends[-1] - span_s)
        t0 = self._ct[i - 1] if i > 0 else self._base_t
        b0 = self._cb[i - 1] if i > 0 else self._base_b
        return self._ct[-1] - t0, self._cb[-1] - b0
