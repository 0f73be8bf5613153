"""A bounded memory of recently seen event ids.

It only saves store look-ups: correctness comes from the store check in the
pipeline, so forgetting old ids (FIFO) is safe.

>>> seen = RecentIds(capacity=2)
>>> seen.add_all(["a", "b", "c"])
>>> ("a" in seen, "c" in seen, len(seen))
(False, True, 2)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable


class RecentIds:
    def __init__(self, capacity: int = 1_000_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add_all(self, ids: Iterable[str]) -> None:
        if self.capacity <= 0:
            return
        store = self._ids
        for i in ids:
            store[i] = None
        excess = len(store) - self.capacity
        for _ in range(max(0, excess)):
            store.popitem(last=False)
