"""A task: one partition of one hop, running that hop's stages over its input.

Stages run in order; each one's signals are visible to the ones after it (the
alert stage reads them) and a stage that returns a batch passes it on. A task
owns the stage instances, so its state moves as one piece when its partition
moves to another worker (snapshot, restore and rebuild below).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

import numpy as np
import orjson

from llmpulse.schemas.batch import TraceBatch
from llmpulse.stages.base import BoolMatrix, Context, IngestStats, Output, Stage
from llmpulse.stages.retention import Retention
from llmpulse.topology.isolation import DEFAULT_RETRIES, isolate, rebuild
from llmpulse.topology.watermarks import Frontier, Report


class Task:
    def __init__(
        self,
        name: str,
        stages: Sequence[Stage],
        upstream: Collection[str] | None = None,
        *,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        self.name = name
        self.stages = list(stages)
        self.frontier = Frontier(upstream)
        self.retries = retries  # of a stage that raises, before its events are isolated

    def _context(
        self, now: datetime, wall_s: float, stats: IngestStats, owned: dict[str, BoolMatrix]
    ) -> Context:
        return Context(
            now=now,
            wall_s=wall_s,
            source_time_ms=self.frontier.value,
            owned=owned,
            stats=stats,
            task=self.name,
        )

    def process(
        self,
        batch: TraceBatch,
        *,
        now: datetime,
        wall_s: float,
        stats: IngestStats,
        reports: Sequence[Report] = (),
        owned: dict[str, BoolMatrix] | None = None,
    ) -> Output:
        """New input (with the upstream progress that came with it)."""
        self.frontier.update_all(reports)
        ctx = self._context(now, wall_s, stats, owned or {})
        total = Output(batch=batch)
        for stage in self.stages:
            out = isolate(stage, batch, ctx, retries=self.retries)
            self._collect(total, out, ctx)
            if out.batch is not None:
                batch = out.batch
            elif out.poisoned:  # the stages after this one never see them
                bad = [p.event.event_id[0] for p in out.poisoned]
                batch = batch.select(np.flatnonzero(~np.isin(batch.event_id, bad)))
        total.batch = batch
        return total

    def tick(
        self, *, now: datetime, wall_s: float, stats: IngestStats, reports: Sequence[Report] = ()
    ) -> Output:
        """No input, but upstream progress or the wall clock moved."""
        self.frontier.update_all(reports)
        ctx = self._context(now, wall_s, stats, {})
        total = Output()
        for stage in self.stages:
            self._collect(total, stage.tick(ctx), ctx)
        return total

    def flush(self, *, now: datetime, wall_s: float, stats: IngestStats) -> Output:
        """End of a finite stream: every stage closes what it holds open."""
        ctx = self._context(now, wall_s, stats, {})
        total = Output()
        for stage in self.stages:
            self._collect(total, stage.flush(ctx), ctx)
        return total

    @staticmethod
    def _collect(total: Output, out: Output, ctx: Context) -> None:
        total.extend(out)
        ctx.signals.extend(out.signals)

    # -- checkpoints ----------------------------------------------------------------------

    def retention(self) -> Retention:
        """How much past input the stages' ``rebuild`` needs, together."""
        r = Retention()
        for stage in self.stages:
            r = r.merge(stage.retention())
        return r

    def snapshot(self) -> dict[str, bytes]:
        """Each stage's state that changed (stage name -> bytes), and the frontier."""
        out = {"frontier": orjson.dumps(self.frontier.state())}
        for stage in self.stages:
            blob = stage.snapshot()
            if blob is not None:
                out[stage.name] = blob
        return out

    def restore(self, blobs: dict[str, bytes]) -> None:
        if "frontier" in blobs:
            self.frontier.load(orjson.loads(blobs["frontier"]))
        for stage in self.stages:
            blob = blobs.get(stage.name)
            if blob is not None:
                stage.restore(blob)

    def rebuild(
        self,
        batch: TraceBatch,
        *,
        now: datetime,
        wall_s: float,
        owned: dict[str, BoolMatrix] | None = None,
    ) -> None:
        """Feed input processed before the checkpoint back into the stages' state."""
        ctx = self._context(now, wall_s, IngestStats(), owned or {})
        for stage in self.stages:
            rebuild(stage, batch, ctx)

    def close(self, timeout: float = 10.0) -> None:
        for stage in self.stages:
            stage.close(timeout)
