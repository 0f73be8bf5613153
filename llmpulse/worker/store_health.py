"""Whether the store takes writes, as the worker saw it on its last attempts.

The runner retries a failed write with backoff for as long as the store is out
(nothing is committed past unwritten rows, so nothing is lost); meanwhile this
record feeds ``/ready`` (not ready), ``/health`` and ``/metrics``. It is updated
from the runner's threads and read from the web views: plain attribute writes,
each one atomic under the GIL, are enough.

>>> h = StoreHealth()
>>> h.failed(ConnectionError("refused"), wall_s=100.0)
1.0
>>> h.up, h.failures, h.outage_s(now_s=130.0)
(False, 1, 30.0)
>>> h.failed(OSError("http://u:pw@db:8123 refused"), wall_s=101.0)
2.0
>>> h.last_error
'OSError: http://u:***@db:8123 refused'
>>> h.written(0.02)
>>> h.up, h.outage_s(now_s=131.0)
(True, 0.0)
"""

from __future__ import annotations

import re
from collections.abc import Callable

from llmpulse.sender import Backoff

__all__ = ["StoreHealth"]

# ``scheme://user:password@`` in a driver's message: the password goes.
_CREDENTIALS = re.compile(r"(//[^/@\s:]+):[^/@\s]+@")

# Between attempts: doubling from 1 s up to 30 s, without jitter (one writer per
# worker, nothing to spread out); ``attempts`` does not apply, the worker never
# gives up on the store.
_BACKOFF = Backoff(initial_s=1.0, max_s=30.0)


class StoreHealth:
    def __init__(self, on_write: Callable[[float], None] | None = None) -> None:
        self.up = True
        self.failures = 0  # failed attempts since the worker started
        self.last_error = ""
        self.down_since: float | None = None  # wall time of the first failure of this outage
        self._retries = 0  # failed attempts in this outage
        self._on_write = on_write

    def failed(self, exc: BaseException, *, wall_s: float) -> float:
        """Note a failed attempt; returns how long to wait before the next one."""
        self.failures += 1
        # The error may carry a DSN; never show its credentials.
        self.last_error = _CREDENTIALS.sub(r"\1:***@", f"{type(exc).__name__}: {exc}")[:500]
        if self.up:
            self.up = False
            self.down_since = wall_s
            self._retries = 0
        self._retries += 1
        return _BACKOFF.delay(self._retries, None, lambda: 0.0)

    def written(self, seconds: float) -> None:
        """A write went through (``seconds`` long): the outage, if any, is over."""
        self.up = True
        self.down_since = None
        if self._on_write is not None:
            self._on_write(seconds)

    def outage_s(self, *, now_s: float) -> float:
        return 0.0 if self.down_since is None else max(0.0, now_s - self.down_since)
