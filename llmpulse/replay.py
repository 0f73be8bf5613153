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
    scores: bool = False,
) -> ReplayReport:
    """Replay one stream (``scores``: every message is a score event)."""
    return replay_streams(
        pipeline, [(messages, scores)], batch_size=batch_size, on_batch=on_batch, perf=perf
    )


def replay_streams(
    pipeline: IngestPipeline,
    streams: Sequence[tuple[Iterable[RawMessage], bool]],
    *,
    batch_size: int,
    on_batch: Callable[[IngestStats], None] | None = None,
    perf: Callable[[], float] = time.perf_counter,
) -> ReplayReport:
    """Replay the streams one after the other as one recorded stream: each is
    ``(messages, all scores)``, and the windows close once, at the end."""
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
        for messages, scores in streams:
            for chunk in batched(messages, batch_size):
                prepared = pipeline.prepare(chunk, scores=scores)
                if pending is not None:
                    done(pending.result())
                pending = pool.submit(pipeline.commit, prepared)
        if pending is not None:
            done(pending.result())
    # A recorded stream has no future: every window it opened is complete.
    total.add(pipeline.flush())
    return ReplayReport(total, perf() - started)


def file_messages(
    pipeline: IngestPipeline, path: Path, *, on_progress: Callable[[int], None] | None = None
) -> Iterator[RawMessage]:
    return read_jsonl(
        path, on_progress=on_progress, max_line_bytes=pipeline.intake.limits.max_event_bytes
    )


def replay_file(
    pipeline: IngestPipeline,
    path: Path | None,
    *,
    batch_size: int,
    on_progress: Callable[[int], None] | None = None,
    on_batch: Callable[[IngestStats], None] | None = None,
    scores: Path | None = None,
) -> ReplayReport:
    """Replay ``path`` (trace events, score records marked ``"kind": "score"``
    mixed in), then ``scores``, a file of score events only, as one stream.
    ``on_progress`` receives the bytes read of both files together."""
    streams: list[tuple[Iterable[RawMessage], bool]] = []
    done = 0
    if path is not None:
        streams.append((file_messages(pipeline, path, on_progress=on_progress), False))
        done = path.stat().st_size
    if scores is not None:
        progress = None
        if on_progress is not None:
            report = on_progress
            progress = lambda pos: report(done + pos)  # noqa: E731
        streams.append((file_messages(pipeline, scores, on_progress=progress), True))
    return replay_streams(pipeline, streams, batch_size=batch_size, on_batch=on_batch)
