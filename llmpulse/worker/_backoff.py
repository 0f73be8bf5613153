"""Retrying a step that needs the store, for as long as the store is out.

The row writes and every step of the score path wait out an outage the same
way: each failure is noted in :class:`~llmpulse.worker.store_health.StoreHealth`
(which sets the delay and feeds ``/ready``), the step is marked as behind so no
checkpoint is taken from state the store has not caught up with, and a stop
ends the wait. Retrying is safe because each step is idempotent (insert tokens,
lineage, score ids). One helper keeps those rules the same for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from llmpulse.worker.store_health import StoreHealth

log = logging.getLogger("llmpulse.worker")

T = TypeVar("T")

ROWS = "rows"  # the iteration's rows, as opposed to a named step of the score path


class Unwritten(RuntimeError):
    """Rows of an iteration could not be stored before the worker had to stop."""


class StoreRetry:
    """The steps that need the store, retried with its backoff; and which of them
    are behind, which blocks checkpoints."""

    def __init__(
        self, store: StoreHealth, wall: Callable[[], float], stopping: asyncio.Event
    ) -> None:
        self.store = store
        self.wall = wall
        self.stopping = stopping
        # What failed to reach the store since the state moved on ("rows", or a step
        # of the score path): while any is pending, the state is ahead of the
        # store, so no checkpoint may be taken from it (the next owner restores the
        # last one and redoes the work). The write and the score path run side by
        # side, so each clears only its own entry.
        self.behind: set[str] = set()

    def _succeeded(self, what: str, started: float) -> None:
        self.store.written(time.perf_counter() - started)
        self.behind.discard(what)

    def _failed(self, what: str, exc: Exception) -> float:
        """Note the failure and log it; the delay before the next attempt."""
        self.behind.add(what)  # until it goes through
        delay = self.store.failed(exc, wall_s=self.wall())
        if self.stopping.is_set():
            # Waiting would only hold the stop up: the next owner redoes the step.
            raise Unwritten(what) from exc
        if what == ROWS:
            log.error(
                "store write failed (attempt %d of this outage), retrying in %.0fs: %s",
                self.store.failures,
                delay,
                self.store.last_error,
            )
        else:
            log.error("%s failed, retrying in %.0fs: %s", what, delay, self.store.last_error)
        return delay

    def blocking(self, what: str, work: Callable[[], T]) -> T:
        """``work`` until it succeeds, from a thread (it sleeps between attempts)."""
        while True:
            started = time.perf_counter()
            try:
                result = work()
                self._succeeded(what, started)
                return result
            except Exception as exc:
                time.sleep(self._failed(what, exc))

    async def rows(self, work: Callable[[], object], *, on_failure: Callable[[], None]) -> None:
        """Store rows with ``work`` (run in a thread) until it succeeds; a stop
        cuts the wait short. ``on_failure`` runs after each failed attempt."""
        while True:
            started = time.perf_counter()
            try:
                await asyncio.to_thread(work)
                self._succeeded(ROWS, started)
                return
            except Exception as exc:
                delay = self._failed(ROWS, exc)
                on_failure()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.stopping.wait()
                if self.stopping.is_set():
                    raise Unwritten(ROWS) from exc
