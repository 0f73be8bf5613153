"""The pipeline in one process: intake, then the tasks of every hop, then the writes.

A replay runs the same stages as the worker (``llmpulse.worker``), in the same
order and with the same time semantics; only the repartition topics between
differently keyed stages are replaced by direct calls, since one process owns
every key. Each call is: validate (stateless, may overlap the previous write);
the intake and trace stages, whose rows are written first (as the worker's
events tasks write before their keyed tasks run); the score path over the
stored calls and the batch's score records (``"kind": "score"``); the keyed
stages, with the quality contributions of the folded scores; their rows; then
the effects that wait for durable rows (alert notifications).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from llmpulse.alerts.signals import Signal
from llmpulse.errors import StoreError
from llmpulse.processors.traces import RawMessage, Rejection
from llmpulse.schemas.batch import TraceBatch
from llmpulse.scores.alerting import contributions
from llmpulse.scores.replay import split_batch
from llmpulse.scores.stage import PreparedScores
from llmpulse.stages.base import Context, IngestStats, Output, Rows, StoreReader
from llmpulse.stages.intake import Intake, Validated
from llmpulse.stages.quality import QualityStage
from llmpulse.stages.scores import ScorePath, ScoreResult
from llmpulse.store.writer import StoreWriter
from llmpulse.topology.isolation import set_aside
from llmpulse.topology.task import Task
from llmpulse.topology.watermarks import Report

log = logging.getLogger("llmpulse.pipeline")

# Names of the local tasks (the worker's are ``<topic>/<partition>``).
SOURCE = "replay"
TRACES_TASK = "traces"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Prepared:
    """One validated batch: its trace events and its score records."""

    traces: Validated
    scores: PreparedScores | None = None


@dataclass
class BatchOutcome:
    written: TraceBatch
    rejections: list[Rejection]
    stats: IngestStats
    rows: dict[str, int] = field(default_factory=dict)
    signals: list[Signal] = field(default_factory=list)
    scores: ScoreResult = field(default_factory=ScoreResult)


class IngestPipeline:
    """Intake -> traces task -> keyed task, in one process (see the module docstring)."""

    def __init__(
        self,
        intake: Intake,
        traces: Task,
        keyed: Task,
        writer: StoreWriter,
        *,
        clock: Callable[[], datetime] = utc_now,
        wall: Callable[[], float] = time.time,
        write_attempts: int = 5,
        on_close: Callable[[float], None] | None = None,
        scores: ScorePath | None = None,
    ) -> None:
        self.intake = intake
        self.traces = traces
        self.keyed = keyed
        self.writer = writer
        self.scores = scores
        self._quality = next((s for s in keyed.stages if isinstance(s, QualityStage)), None)
        self.clock = clock
        self.wall = wall
        self.write_attempts = write_attempts
        self.on_close = on_close
        self.stats = IngestStats()

    @property
    def tasks(self) -> tuple[Task, Task]:
        return self.traces, self.keyed

    def handle(self, messages: Sequence[RawMessage], *, scores: bool = False) -> BatchOutcome:
        return self.commit(self.prepare(messages, scores=scores))

    def prepare(self, messages: Sequence[RawMessage], *, scores: bool = False) -> Prepared:
        """Validation, which needs no state: may run while the previous batch commits.
        Lines marked ``"kind": "score"`` are score events; with ``scores`` every
        message is one (a dump of ``llm.scores``)."""
        if self.scores is None:
            return Prepared(self.intake.validate(messages))
        traces: Sequence[RawMessage]
        marked: list[RawMessage]
        if scores:
            traces, marked = [], list(messages)
        else:
            traces, marked = split_batch(messages)
        return Prepared(
            self.intake.validate(traces), self.scores.prepare(marked) if marked else None
        )

    def commit(self, prepared: Prepared) -> BatchOutcome:
        """Run the stages over one validated batch and write their rows. Batches must
        be committed one at a time, in order."""
        validated = prepared.traces
        stats = IngestStats()
        now, wall = self.clock(), self.wall()
        total = self.intake.process(validated, Context(now, wall, stats=stats, task=SOURCE))
        report = Report(SOURCE, validated.max_time_ms)
        assert total.batch is not None
        out = self.traces.process(total.batch, now=now, wall_s=wall, stats=stats, reports=[report])
        poisoned = set_aside(out, now=now, stats=stats, retries=self.traces.retries)
        total.extend(out)
        written = out.batch if out.batch is not None else total.batch
        rows = self._write(total)
        scored = ScoreResult()
        if self.scores is not None:
            scored.add(self.scores.calls(written))
            if prepared.scores is not None:
                scored.add(self.scores.commit(prepared.scores))
            scored.add(self.scores.drain())
            self._contribute(scored)
        keyed = self.keyed.process(
            written,
            now=now,
            wall_s=wall,
            stats=stats,
            reports=[Report(TRACES_TASK, self.traces.frontier.value)],
        )
        poisoned += set_aside(keyed, now=now, stats=stats, retries=self.keyed.retries)
        for table, n in self._write(keyed).items():
            rows[table] = rows.get(table, 0) + n
        self.stats.add(stats)
        return BatchOutcome(
            written,
            [*validated.rejections, *poisoned],
            stats,
            rows,
            [*total.signals, *keyed.signals],
            scored,
        )

    def _contribute(self, scored: ScoreResult) -> None:
        """The folded scores to the quality windows of their series (one process
        owns every series)."""
        if self._quality is None or not scored.scored:
            return
        by_series = contributions(scored.scored, self._quality.alerts.config.groupings)
        self._quality.add(c for items in by_series.values() for c in items)

    def flush(self) -> IngestStats:
        """End of the stream: close every open window and write it."""
        stats = IngestStats()
        now, wall = self.clock(), self.wall()
        if self.scores is not None:
            self._contribute(self.scores.drain())
        total = Output()
        for task in self.tasks:
            total.extend(task.flush(now=now, wall_s=wall, stats=stats))
        self._write(total)
        self.stats.add(stats)
        return stats

    def resume(self, store: StoreReader) -> IngestStats:
        """Continue from what earlier runs stored (see ``Stage.resume``), and fold the
        stored scores whose call an earlier run stored after them."""
        stats = IngestStats()
        now, wall = self.clock(), self.wall()
        total = Output()
        for task in self.tasks:
            ctx = Context(now, wall, stats=stats, task=task.name)
            for stage in task.stages:
                total.extend(stage.resume(store, ctx))
        self._write(total)
        if self.scores is not None:
            self._contribute(self.scores.sweep())
        self.stats.add(stats)
        return stats

    def _write(self, out: Output) -> dict[str, int]:
        rows = [r for r in out.rows if len(r)]
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.table] = counts.get(r.table, 0) + len(r)
        if rows:
            self._write_rows(rows)
        for effect in out.after_write:
            effect()
        return counts

    def _write_rows(self, rows: list[Rows]) -> None:
        delay = 0.5
        for attempt in range(1, self.write_attempts + 1):
            try:
                self.writer.write(rows)
                return
            except Exception as exc:
                if attempt == self.write_attempts:
                    raise StoreError(self.writer.client.dsn, f"write failed: {exc}") from exc
                log.warning("store write failed (attempt %d), retrying: %s", attempt, exc)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver queued alert notifications (bounded by ``timeout``)."""
        for task in self.tasks:
            task.close(timeout)
        if self.scores is not None:
            self.scores.close(timeout)
        if self.on_close is not None:
            self.on_close(timeout)
