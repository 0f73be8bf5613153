"""The canary stage: configured pairs compared every window, in the task that owns them.

Owner: a pair is stateful (its last verdict decides whether a rollback is
announced), so exactly one task evaluates it: the keyed partition of its name
(``llmpulse.topology.routing.partition_for(pair.name, partitions)``); with
several workers only the worker owning that partition compares the pair.

Every hop of the shortest window spec of event time (the task's source
watermark), the stage compares each pair over the last ``canary.horizon_s``
of calls, read from the store (``CanaryMonitor.evaluate_store``), and returns:

* ``canary_regression`` signals (1.0 fail, 0.0 pass; none while inconclusive)
  for the alert stage after it in the same task;
* ``comparisons`` rows (``origin = 'canary:<pair>'``), stamped with the
  evaluated event time, so an evaluation redone after a crash writes the same
  run id and key;
* with ``canary.rollback``, one ``rollback`` control event on ``llm.control``
  when a pair starts failing (not again while it keeps failing), sent after
  the rows are written.

A comparison that cannot read the store is skipped (logged), never fatal: the
next window compares again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import orjson

from llmpulse.compare.canary import CanaryMonitor, CanaryResult
from llmpulse.compare.data import QueryFn
from llmpulse.compare.run import COMPARISON_NAMES
from llmpulse.schemas.batch import TraceBatch, from_ms
from llmpulse.stages.base import Context, Output, Rows, Stage

log = logging.getLogger("llmpulse.canary")

Publish = Callable[[str, bytes, bytes], None]


class CanaryStage(Stage):
    name = "canary"
    tables = ("comparisons",)

    def __init__(
        self,
        monitor: CanaryMonitor,
        query: QueryFn,
        *,
        every_ms: int,
        publish: Publish | None = None,
        control_topic: str = "llm.control",
    ) -> None:
        self.monitor = monitor
        self.query = query
        self.every_ms = every_ms
        self.publish = publish
        self.control_topic = control_topic
        self.last_ms: int | None = None  # the last evaluated event time
        self.failing: set[str] = set()  # pairs whose last verdict was fail
        self.evaluations = 0
        self._dirty = False

    def process(self, batch: TraceBatch, ctx: Context) -> Output:
        return self._maybe(ctx)

    def tick(self, ctx: Context) -> Output:
        return self._maybe(ctx)

    def _maybe(self, ctx: Context) -> Output:
        t = ctx.source_time_ms
        if t is None:
            return Output()
        at = t // self.every_ms * self.every_ms
        if self.last_ms is not None and at <= self.last_ms:
            return Output()
        self.last_ms = at
        self._dirty = True
        try:
            results = self.monitor.evaluate_store(self.query, at)
        except Exception as exc:  # a canary never stops the stream
            log.warning("canary comparison at %s skipped: %s", from_ms(at), exc)
            return Output()
        self.evaluations += 1
        return self._output(results, at)

    def _output(self, results: list[CanaryResult], at: int) -> Output:
        rows = self.monitor.rows(results, created_at=from_ms(at))
        out = Output(
            rows=[Rows("comparisons", rows, COMPARISON_NAMES)] if rows else [],
            signals=self.monitor.signals(results),
        )
        failing = {r.pair.name for r in results if r.comparison.overall == "fail"}
        started = [r for r in results if r.pair.name in failing - self.failing]
        # A pair whose verdict is inconclusive keeps its state: only a pass clears it.
        passed = {r.pair.name for r in results if r.comparison.overall == "pass"}
        self.failing = (self.failing - passed) | failing
        if self.publish is not None:
            out.after_write = [
                partial(self._send, event) for event in self.monitor.control_events(started)
            ]
        return out

    def _send(self, event: dict[str, object]) -> None:
        assert self.publish is not None
        try:
            self.publish(self.control_topic, str(event["dedup_key"]).encode(), orjson.dumps(event))
        except Exception as exc:
            log.error("canary rollback event not published: %s", exc)

    def snapshot(self) -> bytes | None:
        if not self._dirty:
            return None
        self._dirty = False
        return orjson.dumps({"last_ms": self.last_ms, "failing": sorted(self.failing)})

    def restore(self, blob: bytes) -> None:
        doc = orjson.loads(blob)
        self.last_ms = doc.get("last_ms")
        self.failing = set(doc.get("failing", []))
