"""Offline replay: the worker's processing of a recorded stream, without Kafka."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from llmpulse.ingest.files import read_jsonl
from llmpulse.pipeline import BatchOutcome, IngestPipeline
from llmpulse.processors.traces import RawMessage
from llmpulse.stages.base import IngestStats


@dataclass
class ReplayReport:
    stats: IngestStats
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.stats.messages / self.seconds if self.seconds > 0 else 0.0


def batched(items: Iterable[RawMessage], size: int) -> Iterator[Sequence[RawMessage]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def replay_messages(
    pipeline: IngestPipeline,
    messages: Iterable[RawMessage],
    *,
    batch_size: int,
    on_batch: Callable[[IngestStats], None] | None = None,
    perf: Callable[[], float] = time.perf_counter,
) -> ReplayReport:
    total = IngestStats()
    started = perf()

    def done(outcome: BatchOutcome) -> None:
        total.add(outcome.stats)
        if on_batch is not None:
            on_batch(outcome.stats)

    # Reading and validating batch k+1 overlaps with committing batch k: the
    # store's work (chDB or a server) runs without the GIL, so the two share the
    # machine's cores. Commits stay sequential and in order.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmpulse-commit") as pool:
        pending: Future[BatchOutcome] | None = None
        for chunk in batched(messages, batch_size):
            prepared = pipeline.prepare(chunk)
            if pending is not None:
                done(pending.result())
            pending = pool.submit(pipeline.commit, prepared)
        if pending is not None:
            done(pending.result())
    # A recorded stream has no future: every window it opened is complete.
    total.add(pipeline.flush())
    return ReplayReport(total, perf() - started)


def replay_file(
    pipeline: IngestPipeline,
    path: Path,
    *,
    batch_size: int,
    on_progress: Callable[[int], None] | None = None,
    on_batch: Callable[[IngestStats], None] | None = None,
) -> ReplayReport:
    return replay_messages(
        pipeline,
        read_jsonl(
            path, on_progress=on_progress, max_line_bytes=pipeline.intake.limits.max_event_bytes
        ),
        batch_size=batch_size,
        on_batch=on_batch,
    )
