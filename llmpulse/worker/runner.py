"""The worker's stream topology over Kafka: bulk consumption, repartition topics, checkpoints.

Three hops, each a set of tasks (one per partition of the hop's input topic),
all consumed by one ``AIOKafkaConsumer`` in the consumer group ``app_id``, so
Kafka decides which worker owns which task and moves tasks on rebalances:

* **input** (``llm.traces``, any keys): validate; rejected messages become
  ``rejected_events`` rows and go to the DLQ; accepted events are sent to
  ``<app>-events``, partitioned by event id;
* **events** (``<app>-events``): the trace stage (each id once, priced, a
  ``traces`` row); unique events are sent to ``<app>-keyed``, one copy per
  partition owning one of their series (window groupings, budgets, drift);
* **keyed** (``<app>-keyed``): windows, budgets, drift, score quality, canaries
  and alerts of the series the partition owns.

A fourth kind of task reads ``llm.scores``: its messages go to the worker's
score path (``llmpulse.stages.scores.ScorePath``, one per worker), which also
sees every batch of calls this worker's events tasks stored; the scores it
folds are sent, as small contributions, to the keyed partition of each of
their series, whose quality stage alerts on them (docs/topology.md, "Scores").

Every message on a repartition topic is a whole batch (Arrow IPC), and carries
the sender's event-time progress (``llmpulse.topology.watermarks``). One
iteration: take what ``getmany`` returns, run the tasks (in a thread, off the
event loop), write their rows, send their messages, run the effects that wait
for durable rows. The write, sends and effects of one iteration run in the
background while the next is fetched and processed (one iteration in flight at
most; checkpoints, takeovers and stops wait for it). Every ``commit_interval_s``
each task writes a checkpoint to ``<app>-changelog`` (compacted, keyed by task),
and only then are the consumer offsets committed. A task taken over (rebalance,
restart) resumes from its checkpoint: it undoes its rows written after it,
rebuilds what its stages keep as a fold over recent input by replaying that
input, and seeks to the checkpoint's offset. Rows carry their task's lineage, so
a crash never stores anything twice and never loses anything.

This module drives the loop (fetch, iterate, write, send, checkpoint, commit).
The rest lives beside it: the hops' processing in ``_hops``, the score path in
``_scores``, the changelog in ``_checkpoints``, taking tasks over in
``_takeover``, the store retry in ``_backoff``, the tasks' state in ``_tasks``
and the message format in ``_wire``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from llmpulse.otlp import OtlpDecoder
from llmpulse.runtime import Stages
from llmpulse.stages.base import IngestStats, Rows
from llmpulse.stages.scores import ScorePath
from llmpulse.stages.windows import WindowStage
from llmpulse.store.writer import Lineage, StoreWriter
from llmpulse.worker._backoff import StoreRetry, Unwritten
from llmpulse.worker._checkpoints import Changelog
from llmpulse.worker._hops import Hops
from llmpulse.worker._scores import SWEEP_INTERVAL_S, ScoreHop
from llmpulse.worker._takeover import Listener, Takeover
from llmpulse.worker._tasks import Plan, TaskState, TopologyConfig, replay_start
from llmpulse.worker._wire import (
    MAX_MESSAGE_BYTES,
    REPARTITION_BATCH_BYTES,
    Headers,
    Message,
    Sender,
)
from llmpulse.worker.store_health import StoreHealth

__all__ = [
    "MAX_MESSAGE_BYTES",
    "REPARTITION_BATCH_BYTES",
    "SWEEP_INTERVAL_S",
    "Headers",
    "Message",
    "Sender",
    "TopologyConfig",
    "TopologyRunner",
    "replay_start",
]

log = logging.getLogger("llmpulse.worker")


class TopologyRunner(Takeover):
    """Runs the three hops for the partitions this worker owns (see the module docstring)."""

    def __init__(
        self,
        config: TopologyConfig,
        stages: Stages,
        writer: StoreWriter,
        sender: Sender,
        *,
        bootstrap: str,
        client_id: str = "llmpulse",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        wall: Callable[[], float] = time.time,
        on_iteration: Callable[[IngestStats, float], None] | None = None,
        otlp: OtlpDecoder | None = None,
        security: Mapping[str, Any] | None = None,
        scores: ScorePath | None = None,
        store_health: StoreHealth | None = None,
    ) -> None:
        self.config = config
        self.stages = stages  # a factory: each task taken over gets stages of its own
        self.writer = writer
        self.sender = sender
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.security = dict(security or {})  # SASL/TLS settings of every client
        self.clock = clock
        self.wall = wall
        self.on_iteration = on_iteration
        self.store = store_health or StoreHealth()
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self.retry = StoreRetry(self.store, wall, self._stopping)
        self._unacked: list[Awaitable[Any]] = []  # sends not yet acknowledged
        # The previous iteration's write, sends and effects (see _iteration).
        self._inflight: asyncio.Future[None] | None = None
        self.tasks: dict[TopicPartition, TaskState] = {}
        self.intake = stages.intake()
        self.hops = Hops(config, self.intake, stages.keyed(), otlp)
        # This worker's score path (see the module docstring).
        self.scores = (
            None
            if scores is None
            else ScoreHop(
                scores,
                config,
                self.retry,
                self.tasks,
                groupings=stages.quality.groupings,
                sender=client_id,
            )
        )
        self.changelog = Changelog(config, sender, writer)
        self.stats = IngestStats()
        self.consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._last_checkpoint = 0.0
        self.iterations = 0
        self.assigned_once = asyncio.Event()
        self._pending: set[TopicPartition] = set()
        self._suspended: dict[TopicPartition, TaskState] = {}

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self.changelog.start(self.bootstrap, self.client_id, self.security)
        await self.changelog.clean_up_uncommitted()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            group_id=self.config.app_id,
            **self.security,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
            fetch_max_bytes=4 * MAX_MESSAGE_BYTES,
            # A checkpoint with a rebuild can take a while; the group must not
            # give the partitions away meanwhile.
            max_poll_interval_ms=300_000,
            rebalance_timeout_ms=120_000,
        )
        topics = [
            t
            for t in self.config.topics
            if self.scores is not None or t != self.config.scores_topic
        ]
        self.consumer.subscribe(topics, listener=Listener(self))
        await self.consumer.start()

    async def run(self) -> None:
        """Iterate until :meth:`stop` is called."""
        assert self.consumer is not None
        try:
            while not self._stopping.is_set():
                try:
                    records = await self.consumer.getmany(
                        timeout_ms=int(self.config.poll_s * 1000),
                        max_records=self.config.batch_size,
                    )
                except Exception as exc:  # broker trouble: aiokafka reconnects by itself
                    log.warning("fetch failed, retrying: %s", exc)
                    await asyncio.sleep(1.0)
                    continue
                async with self._lock:
                    if self._stopping.is_set():
                        break
                    if self._pending:
                        # A takeover undoes rows past checkpoints: ours in flight
                        # are stored first. Records of the partitions restored now
                        # were fetched before their seek: they come again.
                        await self._drain()
                        restored = await self._restore_pending()
                        records = {tp: m for tp, m in records.items() if tp not in restored}
                    try:
                        await self._iteration(records)
                        if self.wall() - self._last_checkpoint >= self.config.commit_interval_s:
                            await self._checkpoint()
                    except Unwritten:
                        log.warning(
                            "stopping with rows not stored: nothing past the last "
                            "checkpoint is committed, the next start redoes it"
                        )
                        break
        finally:
            self._stopped.set()

    async def stop(self, timeout: float = 8.0) -> None:
        """Finish the iteration in progress, checkpoint, commit and leave the group,
        all within about ``timeout`` seconds (a broker or store that is down must not
        hold a SIGTERM up: what is not checkpointed is redone by the next owner)."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        try:
            async with asyncio.timeout(timeout * 0.6):
                async with self._lock:
                    await self._checkpoint()
        except Exception as exc:
            log.error("final checkpoint failed (the next owner redoes that work): %r", exc)
        for consumer in (self.consumer, self.changelog.reader):
            if consumer is None:
                continue
            try:
                async with asyncio.timeout(max(0.5, (deadline - time.monotonic()) / 2)):
                    await consumer.stop()
            except Exception as exc:
                # aiokafka's stop() waits for the coordinator to leave the group,
                # which never ends with the broker down; the group drops us after
                # session_timeout_ms instead.
                log.warning("consumer did not stop cleanly: %r", exc)

    # -- one iteration ----------------------------------------------------------------------

    async def _iteration(self, records: dict[TopicPartition, list[Any]]) -> None:
        """Process ``records`` while the previous iteration's rows are written and its
        messages sent, then hand this one's to the background (:meth:`_finish`).

        Processing k+1 during the write of k is safe: processing reads only the
        tasks' memory, never the store, and a checkpoint, a takeover or a stop
        first waits for what is in flight (:meth:`_drain`). The messages of k+1
        go out after all of k's, so each partition keeps its order.
        """
        started = time.perf_counter()
        # Only what comes after each task's position: a seek on takeover may leave
        # records fetched before it in the consumer's buffer.
        fresh: dict[TopicPartition, list[Any]] = {}
        for tp, msgs in records.items():
            st = self.tasks.get(tp)
            if st is not None:
                kept = [m for m in msgs if m.offset >= st.position]
                if kept:
                    fresh[tp] = kept
        records = fresh
        caught_up = {tp: self._caught_up(tp) for tp, st in self.tasks.items() if st.kind == "input"}
        now, wall = self.clock(), self.wall()
        plan = await asyncio.to_thread(self.hops.process, self.tasks, records, caught_up, now, wall)
        await self._drain()
        self._inflight = asyncio.ensure_future(self._finish(records, plan, wall, started))

    async def _drain(self) -> None:
        """Wait until the iteration in flight has its rows stored, its messages handed
        to the producer and its effects run (raises what it raised)."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            await inflight

    async def _finish(
        self,
        records: dict[TopicPartition, list[Any]],
        plan: Plan,
        wall: float,
        started: float,
    ) -> None:
        processed = time.perf_counter()
        # The store write (a thread; chDB works outside the GIL) overlaps the sends.
        # Sending before the rows are stored is safe: until the next checkpoint
        # nothing is committed, and a next owner that redoes this work sends the
        # same origins again, which the keyed tasks drop as already seen.
        writing = asyncio.ensure_future(self._write(plan.rows)) if plan.rows else None
        try:
            if self.scores is not None and self.scores.has_work(records, plan, wall):
                # Its contributions go out ahead of this iteration's progress; it
                # keeps the calls it needs in memory (its store reads and writes
                # queue behind the rows on the store client).
                await asyncio.to_thread(self.scores.run, records, plan, wall)
            scored = time.perf_counter()
            await self._send(plan.messages)
        finally:
            if writing is not None:
                await writing
        written = time.perf_counter()
        for effect in plan.effects:
            effect()
        self.stats.add(plan.stats)
        self.iterations += 1
        if log.isEnabledFor(logging.DEBUG):
            kinds: dict[str, int] = {}
            for tp, msgs in records.items():
                kind = self.config.kind(tp)
                kinds[kind] = kinds.get(kind, 0) + len(msgs)
            log.debug(
                "iteration %d: %s, %d rows, %d messages sent, %.3fs "
                "(process %.3f, scores %.3f, send and write %.3f)",
                self.iterations,
                kinds,
                sum(len(r) for r, _ in plan.rows),
                len(plan.messages),
                time.perf_counter() - started,
                processed - started,
                scored - processed,
                written - scored,
            )
        if self.on_iteration is not None and (records or plan.rows):
            self.on_iteration(plan.stats, time.perf_counter() - started)

    async def _write(self, rows: list[tuple[Rows, Lineage | None]]) -> None:
        """Store ``rows``, retrying with backoff while the store is out.

        Meanwhile the partitions are paused (the worker stays in its group but fetches
        nothing more), nothing is checkpointed or committed, and ``ready`` is false.
        A retry writes the same rows with the same insert tokens and lineage, so a
        write that failed half-way is not doubled.
        """
        paused = False

        def pause() -> None:
            nonlocal paused
            if not paused and self.consumer is not None:
                self.consumer.pause(*self.tasks)
                paused = True

        try:
            await self.retry.rows(partial(self.writer.write_tagged, rows), on_failure=pause)
        finally:
            if paused and self.consumer is not None:
                # Only the tasks still here; those taken over later stay paused
                # until restored.
                self.consumer.resume(*[tp for tp in self.tasks if tp not in self._pending])

    async def _send(self, messages: list[Message]) -> None:
        """Hand ``messages`` to the producer; their acks are awaited before the next
        checkpoint (:meth:`_acked`), not here, so the next batch is processed while
        the broker acknowledges this one. The producer keeps each partition's order."""
        for m in messages:
            self._unacked.append(await self.sender.send(m))

    async def _acked(self) -> None:
        """Every message sent so far is acknowledged (or this raises, and no
        checkpoint is taken: the next owner redoes the work)."""
        unacked, self._unacked = self._unacked, []
        if unacked:
            await asyncio.gather(*unacked)

    def _caught_up(self, tp: TopicPartition) -> bool:
        assert self.consumer is not None
        high = self.consumer.highwater(tp)
        st = self.tasks.get(tp)
        return high is not None and st is not None and st.position >= high

    # -- checkpoints --------------------------------------------------------------------------

    async def _checkpoint(self) -> None:
        """Every changed task's checkpoint to the changelog, then the offsets."""
        self._last_checkpoint = self.wall()
        await self._drain()
        if self.retry.behind:
            raise Unwritten("the state is ahead of the store: no checkpoint from it")
        await self._acked()
        if self.consumer is None:
            return
        dirty = [st for st in self.tasks.values() if st.dirty]
        if not dirty:
            return
        await self.changelog.advance(dirty, self.wall())
        try:
            await self.consumer.commit({st.tp: st.position for st in dirty})
        except Exception as exc:  # the checkpoints are the truth; offsets catch up next time
            log.warning("offset commit failed: %s", exc)

    # -- introspection ----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Assigned partitions taken over (state restored), the store taking writes,
        and not shutting down."""
        return (
            self.assigned_once.is_set()
            and not self._pending
            and not self._stopping.is_set()
            and self.store.up
        )

    def lag(self) -> dict[str, int]:
        """Messages not yet processed per owned partition."""
        out: dict[str, int] = {}
        if self.consumer is None:
            return out
        for tp, st in self.tasks.items():
            high = self.consumer.highwater(tp)
            if high is not None:
                out[f"{tp.topic}/{tp.partition}"] = max(0, high - st.position)
        return out

    def active_series(self) -> dict[str, int]:
        """Series the windows of this worker's keyed tasks hold, by grouping."""
        out: dict[str, int] = {}
        for st in self.tasks.values():
            for stage in st.task.stages if st.task is not None else ():
                if isinstance(stage, WindowStage):
                    for grouping, n in stage.aggregator.active_by_grouping.items():
                        out[grouping] = out.get(grouping, 0) + n
        return out

    def close(self, timeout: float = 10.0) -> None:
        for st in [*self.tasks.values(), *self._suspended.values()]:
            if st.task is not None:
                st.task.close(timeout)
