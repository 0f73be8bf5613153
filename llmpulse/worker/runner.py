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
for durable rows. Every ``commit_interval_s`` each task writes a checkpoint to
``<app>-changelog`` (compacted, keyed by task), and only then are the consumer
offsets committed. A task taken over (rebalance, restart) resumes from its
checkpoint: it undoes its rows written after it, rebuilds what its stages keep
as a fold over recent input by replaying that input, and seeks to the
checkpoint's offset. Rows carry their task's lineage, so a crash never stores
anything twice and never loses anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from llmpulse.otlp import OtlpDecoder
from llmpulse.processors.traces import RawMessage, Rejection
from llmpulse.runtime import Stages
from llmpulse.schemas.batch import TraceBatch, concat
from llmpulse.scores import alerting
from llmpulse.scores.quality import Scored
from llmpulse.stages.base import Context, IngestStats, Output, Rows
from llmpulse.stages.intake import Intake
from llmpulse.stages.quality import QualityStage
from llmpulse.stages.retention import Retention
from llmpulse.stages.scores import ScorePath, ScoreResult
from llmpulse.stages.windows import WindowStage
from llmpulse.store.writer import Lineage, StoreWriter
from llmpulse.topology import codec
from llmpulse.topology.checkpoint import Checkpoint
from llmpulse.topology.isolation import set_aside
from llmpulse.topology.routing import owned_masks, partition_for, route
from llmpulse.topology.task import Task
from llmpulse.topology.watermarks import Report, SourceClock
from llmpulse.worker.store_health import StoreHealth

log = logging.getLogger("llmpulse.worker")

Headers = list[tuple[str, bytes]]
_FROM = "llmpulse-from"
_WM = "llmpulse-wm"
# Marks a keyed message carrying score contributions (JSON) instead of a batch.
_KIND = "llmpulse-kind"
_QUALITY = b"quality"
# Contributions per keyed message at most (about 100 bytes each).
_CONTRIBUTIONS_PER_MESSAGE = 20_000
# Seconds between sweeps of stored scores whose call came after them.
SWEEP_INTERVAL_S = 60.0
# A repartition message above this size is split (the topics allow 16 MiB).
_MAX_MESSAGE = 4 * 1024 * 1024
# Producer batches big enough for several repartition messages to one partition.
REPARTITION_BATCH_BYTES = 2 * _MAX_MESSAGE
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class Sender(Protocol):
    """Hands one message to Kafka; the awaitable resolves when the broker has it."""

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> Awaitable[Any]: ...


@dataclass(frozen=True)
class TopologyConfig:
    app_id: str
    inputs: dict[str, int]  # input topic -> partitions
    partitions: int  # of each internal topic
    dlq: str
    otlp_topic: str | None = None  # an input topic of OTLP export requests, not JSON events
    scores_topic: str | None = None  # score events (llm.scores), for the worker's score path
    scores_dlq: str | None = None
    batch_size: int = 5000
    poll_s: float = 0.2
    commit_interval_s: float = 2.0
    idle_s: float = 30.0
    heartbeat_s: float = 0.5
    dedup_capacity: int = 1_000_000

    @property
    def events_topic(self) -> str:
        return f"{self.app_id}-events"

    @property
    def keyed_topic(self) -> str:
        return f"{self.app_id}-keyed"

    @property
    def changelog_topic(self) -> str:
        return f"{self.app_id}-changelog"

    @property
    def topics(self) -> list[str]:
        scores = [self.scores_topic] if self.scores_topic else []
        return [*self.inputs, *scores, self.events_topic, self.keyed_topic]

    def task_name(self, tp: TopicPartition) -> str:
        return f"{self.app_id}:{tp.topic}/{tp.partition}"

    def task_partition(self, name: str) -> int:
        """The changelog partition of a task's checkpoints."""
        return int(name.rsplit("/", 1)[1]) % self.partitions

    def input_names(self) -> list[str]:
        return [
            self.task_name(TopicPartition(t, p)) for t, n in self.inputs.items() for p in range(n)
        ]

    def events_names(self) -> list[str]:
        return [
            self.task_name(TopicPartition(self.events_topic, p)) for p in range(self.partitions)
        ]


@dataclass
class _Logged:
    offset: int
    max_ts: int | None
    rows: int
    hwm: dict[str, int] | None = None  # keyed tasks: origin high-water marks before it


@dataclass
class _TaskState:
    tp: TopicPartition
    name: str
    kind: str  # input | events | keyed | scores
    cp: Checkpoint
    position: int
    task: Task | None = None
    clock: SourceClock | None = None
    log: deque[_Logged] = field(default_factory=deque)
    hwm: dict[str, int] = field(default_factory=dict)
    dirty: bool = True
    last_report: Report | None = None
    last_report_wall: float = 0.0
    last_forward: int | None = None
    last_forward_wall: float = 0.0

    @property
    def seq(self) -> int:
        """The checkpoint the rows written now belong to."""
        return self.cp.seq + 1

    @property
    def lineage(self) -> Lineage:
        return Lineage(self.name, self.cp.generation, self.seq)


@dataclass
class _Message:
    topic: str
    value: bytes | None
    key: bytes | None = None
    partition: int | None = None
    headers: Headers = field(default_factory=list)


@dataclass
class _Plan:
    rows: list[tuple[Rows, Lineage | None]] = field(default_factory=list)
    messages: list[_Message] = field(default_factory=list)
    effects: list[Callable[[], object]] = field(default_factory=list)
    stats: IngestStats = field(default_factory=IngestStats)
    written: list[TraceBatch] = field(default_factory=list)  # calls the events tasks stored


def _headers(sender: str, reports: Iterable[Report]) -> Headers:
    wm = orjson.dumps([[r.source, r.time_ms, r.idle] for r in reports])
    return [(_FROM, sender.encode()), (_WM, wm)]


def _is_quality(headers: Sequence[tuple[str, bytes]] | None) -> bool:
    return any(k == _KIND and v == _QUALITY for k, v in headers or ())


def _read_headers(headers: Sequence[tuple[str, bytes]] | None) -> tuple[str, list[Report]]:
    sender, reports = "", []
    for k, v in headers or ():
        if k == _FROM:
            sender = v.decode()
        elif k == _WM:
            reports = [Report(str(s), t, bool(i)) for s, t, i in orjson.loads(v)]
    return sender, reports


def _dlq_message(topic: str, rej: Rejection) -> _Message:
    return _Message(
        topic,
        rej.raw,
        key=rej.rejection_id.encode(),
        headers=[
            ("llmpulse-reason", rej.reason.encode()),
            ("llmpulse-source", rej.source.encode()),
        ],
    )


def replay_start(log: Sequence[_Logged], retention: Retention, position: int) -> int | None:
    """The input offset from which replaying rebuilds what ``retention`` asks for."""
    if not retention.needed:
        return None
    starts = []
    if retention.event_time_ms is not None:
        needed = [
            e.offset for e in log if e.max_ts is not None and e.max_ts >= retention.event_time_ms
        ]
        starts.append(min(needed) if needed else position)
    if retention.rows:
        total, start = 0, position
        for e in reversed(log):
            total += e.rows
            start = e.offset
            if total >= retention.rows:
                break
        starts.append(start)
    return min(starts)


class TopologyRunner:
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
        self.stages = stages
        self.writer = writer
        self.sender = sender
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.clock = clock
        self.wall = wall
        self.on_iteration = on_iteration
        self.otlp = otlp
        self.security = dict(security or {})  # SASL/TLS settings of every client
        self.scores = scores  # this worker's score path (see the module docstring)
        self.store = store_health or StoreHealth()
        # What failed to reach the store since the state moved on ("rows", or a step
        # of the score path): while any is pending, the state is ahead of the
        # store, so no checkpoint may be taken from it (the next owner restores the
        # last one and redoes the work). The write and the score path run side by
        # side, so each clears only its own entry.
        self._behind: set[str] = set()
        self._unacked: list[Awaitable[Any]] = []  # sends not yet acknowledged
        self.intake: Intake = stages.intake()
        # Stage instances used only for their keys() (routing needs no state).
        self._traces_keys = stages.traces()
        self._keyed_keys = stages.keyed()
        self._layout = [(s.name, len(s.keys(TraceBatch.empty()))) for s in self._keyed_keys]
        self.tasks: dict[TopicPartition, _TaskState] = {}
        self.stats = IngestStats()
        self.consumer: AIOKafkaConsumer | None = None
        self._restorer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._last_checkpoint = 0.0
        self._last_sweep = -float("inf")
        self.iterations = 0
        self.assigned_once = asyncio.Event()
        # Assigned, paused, waiting for the main loop to restore them.
        self._pending: set[TopicPartition] = set()
        # Revoked in a rebalance, kept in case it hands them back unchanged.
        self._suspended: dict[TopicPartition, _TaskState] = {}

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._restorer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.client_id}-restore",
            **self.security,
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
            fetch_max_bytes=4 * MAX_MESSAGE_BYTES,
        )
        await self._restorer.start()
        await self.clean_up_uncommitted()
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
        self.consumer.subscribe(topics, listener=_Listener(self))
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
                        # Records of the partitions restored now were fetched
                        # before their seek: they come again.
                        restored = await self._restore_pending()
                        records = {tp: m for tp, m in records.items() if tp not in restored}
                    try:
                        await self._iteration(records)
                    except _Unwritten:
                        log.warning(
                            "stopping with rows not stored: nothing past the last "
                            "checkpoint is committed, the next start redoes it"
                        )
                        break
                    if self.wall() - self._last_checkpoint >= self.config.commit_interval_s:
                        await self._checkpoint()
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
        for consumer in (self.consumer, self._restorer):
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
        plan = await asyncio.to_thread(self._process, records, caught_up, now, wall)
        processed = time.perf_counter()
        # The store write (a thread; chDB works outside the GIL) overlaps the sends.
        # Sending before the rows are stored is safe: until the next checkpoint
        # nothing is committed, and a next owner that redoes this work sends the
        # same origins again, which the keyed tasks drop as already seen.
        writing = asyncio.ensure_future(self._write(plan.rows)) if plan.rows else None
        try:
            if self._score_work(records, plan, wall):
                # Its contributions go out ahead of this iteration's progress; it
                # keeps the calls it needs in memory (its store reads and writes
                # queue behind the rows on the store client).
                await asyncio.to_thread(self._scores, records, plan, wall)
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
                kinds[self._kind(tp)] = kinds.get(self._kind(tp), 0) + len(msgs)
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
        try:
            while True:
                started = time.perf_counter()
                try:
                    await asyncio.to_thread(self.writer.write_tagged, rows)
                    self.store.written(time.perf_counter() - started)
                    self._behind.discard("rows")
                    return
                except Exception as exc:
                    self._behind.add("rows")  # until this write goes through
                    delay = self.store.failed(exc, wall_s=self.wall())
                    if self._stopping.is_set():
                        raise _Unwritten from exc
                    if not paused and self.consumer is not None:
                        self.consumer.pause(*self.tasks)
                        paused = True
                    log.error(
                        "store write failed (attempt %d of this outage), retrying in %.0fs: %s",
                        self.store.failures,
                        delay,
                        self.store.last_error,
                    )
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._stopping.wait()
                    if self._stopping.is_set():
                        raise _Unwritten from exc
        finally:
            if paused and self.consumer is not None:
                # Only the tasks still here; those taken over later stay paused
                # until restored.
                self.consumer.resume(*[tp for tp in self.tasks if tp not in self._pending])

    def _retry(self, what: str, work: Callable[[], ScoreResult]) -> ScoreResult:
        """``work`` until it succeeds (the store may be down for a while); safe because
        the score path is idempotent (score ids, partial ids, insert tokens)."""
        while True:
            started = time.perf_counter()
            try:
                result = work()
                self.store.written(time.perf_counter() - started)
                self._behind.discard(what)
                return result
            except Exception as exc:
                self._behind.add(what)  # until it goes through (see _write)
                delay = self.store.failed(exc, wall_s=self.wall())
                if self._stopping.is_set():
                    raise _Unwritten(what) from exc
                log.error("%s failed, retrying in %.0fs: %s", what, delay, self.store.last_error)
                time.sleep(delay)

    async def _send(self, messages: list[_Message]) -> None:
        """Hand ``messages`` to the producer; their acks are awaited before the next
        checkpoint (:meth:`_acked`), not here, so the next batch is processed while
        the broker acknowledges this one. The producer keeps each partition's order."""
        for m in messages:
            self._unacked.append(
                await self.sender.send(
                    m.topic, m.value, key=m.key, partition=m.partition, headers=m.headers
                )
            )

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

    def _process(
        self,
        records: dict[TopicPartition, list[Any]],
        caught_up: dict[TopicPartition, bool],
        now: datetime,
        wall: float,
    ) -> _Plan:
        plan = _Plan()
        for kind in ("input", "events", "keyed"):
            for tp, st in self.tasks.items():
                if st.kind != kind:
                    continue
                msgs = records.get(tp)
                if kind == "input":
                    self._input(st, msgs or [], caught_up.get(tp, False), now, wall, plan)
                elif msgs:
                    if kind == "events":
                        self._events(st, msgs, now, wall, plan)
                    else:
                        self._keyed(st, msgs, now, wall, plan)
                if kind == "events":
                    self._forward_progress(st, wall, plan)
        return plan

    # -- input hop --------------------------------------------------------------------------

    def _input(
        self,
        st: _TaskState,
        msgs: list[Any],
        caught_up: bool,
        now: datetime,
        wall: float,
        plan: _Plan,
    ) -> None:
        assert st.clock is not None
        cfg = self.config
        n = cfg.partitions
        if msgs:
            raw = [
                RawMessage(
                    m.value if isinstance(m.value, bytes) else b"",
                    f"kafka:{st.tp.topic}/{st.tp.partition}@{m.offset}",
                    m.key,
                )
                for m in msgs
            ]
            decoded: list[Rejection] = []
            if self.otlp is not None and st.tp.topic == cfg.otlp_topic:
                raw, decoded = self._spans(raw, plan.stats)
            validated = self.intake.validate(raw, decoded)
            out = self.intake.process(validated, Context(now, wall, stats=plan.stats, task=st.name))
            plan.rows.extend((r, st.lineage) for r in out.rows)
            plan.messages.extend(_dlq_message(cfg.dlq, rej) for rej in validated.rejections)
            st.clock.observe(validated.max_time_ms, wall)
            st.position = msgs[-1].offset + 1
            st.dirty = True
            report = st.clock.report(wall, caught_up=False)
            headers = _headers(st.name, [report])
            batch = out.batch if out.batch is not None else validated.batch
            parts = route([batch.event_id], n) if len(batch) else {}
            for q in range(n):
                got = parts.get(q)
                if got is None:
                    plan.messages.append(
                        _Message(cfg.events_topic, b"", partition=q, headers=headers)
                    )
                    continue
                plan.messages.extend(
                    self._messages(
                        cfg.events_topic,
                        q,
                        headers,
                        got[0],
                        lambda r: codec.encode(batch.select(r)),
                    )
                )
            st.last_report, st.last_report_wall = report, wall
            return
        report = st.clock.report(wall, caught_up=caught_up)
        if report == st.last_report and wall - st.last_report_wall < 5 * cfg.heartbeat_s:
            return
        if wall - st.last_report_wall < cfg.heartbeat_s:
            return
        headers = _headers(st.name, [report])
        plan.messages.extend(
            _Message(cfg.events_topic, b"", partition=q, headers=headers) for q in range(n)
        )
        st.last_report, st.last_report_wall = report, wall

    def _spans(
        self, raw: list[RawMessage], stats: IngestStats
    ) -> tuple[list[RawMessage], list[Rejection]]:
        """OTLP export requests -> one message per GenAI span, and rejected payloads."""
        assert self.otlp is not None
        events: list[RawMessage] = []
        rejections: list[Rejection] = []
        for m in raw:
            out = self.otlp.decode(m.value, m.source)
            events.extend(out.messages())
            rejections.extend(out.rejections)
            stats.skipped_spans += out.skipped
        return events, rejections

    @staticmethod
    def _messages(
        topic: str,
        partition: int,
        headers: Headers,
        rows: npt.NDArray[np.int64],
        encode: Callable[[npt.NDArray[np.int64]], bytes],
        origin: npt.NDArray[np.int64] | None = None,
    ) -> list[_Message]:
        """The rows as one message, or as several when too big for one. With
        ``origin``, rows of one origin stay in one message: the receiver recognises
        a resent message by its rows' origins, so one origin must not straddle two."""
        value = encode(rows)
        if len(value) <= _MAX_MESSAGE or len(rows) < 2:
            return [_Message(topic, value, partition=partition, headers=headers)]
        half = len(rows) // 2
        if origin is not None:
            o = origin[rows]
            cuts = np.flatnonzero(o[1:] != o[:-1]) + 1
            if not cuts.size:
                return [_Message(topic, value, partition=partition, headers=headers)]
            half = int(cuts[np.argmin(np.abs(cuts - half))])
        return [
            *TopologyRunner._messages(topic, partition, headers, rows[:half], encode, origin),
            *TopologyRunner._messages(topic, partition, headers, rows[half:], encode, origin),
        ]

    # -- events hop (trace stage) ------------------------------------------------------------

    def _events(
        self, st: _TaskState, msgs: list[Any], now: datetime, wall: float, plan: _Plan
    ) -> None:
        assert st.task is not None
        batches, reports = [], []
        for m in msgs:
            _, got = _read_headers(m.headers)
            reports.extend(got)
            rows = 0
            max_ts = None
            if m.value:
                b, _, _ = codec.decode(m.value)
                b.numbers["_origin"] = np.full(len(b), m.offset, dtype=np.int64)
                batches.append(b)
                rows = len(b)
                max_ts = int(b.timestamp_ms.max()) if rows else None
            st.log.append(_Logged(m.offset, max_ts, rows))
        st.position = msgs[-1].offset + 1
        st.dirty = True
        if not batches:
            st.task.tick(now=now, wall_s=wall, stats=plan.stats, reports=reports)
            return
        batch = concat(batches)
        out = st.task.process(batch, now=now, wall_s=wall, stats=plan.stats, reports=reports)
        self._set_aside(st, out, now, plan)
        plan.rows.extend((r, st.lineage) for r in out.rows)
        unique = out.batch
        if unique is None or not len(unique):
            return
        plan.written.append(unique)
        keys = [k for s in self._keyed_keys for k in s.keys(unique)]
        parts = route(keys, self.config.partitions)
        headers = _headers(st.name, [Report(st.name, st.task.frontier.value)])
        origin = unique.numbers["_origin"]
        targets = np.zeros(len(unique), dtype=np.uint32)

        def encode(rows: npt.NDArray[np.int64]) -> bytes:
            return codec.encode(
                unique.select(rows), targets=targets[rows], origin=origin[rows], priced=True
            )

        for r in range(self.config.partitions):
            routed = parts.get(r)
            if routed is None:
                # Every keyed partition hears the new progress, rows or not: one left
                # out would keep its windows open until the next change, which at the
                # end of a stream never comes.
                plan.messages.append(
                    _Message(self.config.keyed_topic, b"", partition=r, headers=headers)
                )
                continue
            sel, bits = routed
            targets[sel] = bits
            plan.messages.extend(
                self._messages(self.config.keyed_topic, r, headers, sel, encode, origin)
            )
        st.last_forward, st.last_forward_wall = st.task.frontier.value, wall

    def _forward_progress(self, st: _TaskState, wall: float, plan: _Plan) -> None:
        """Tell every keyed partition how far this events task has got, when that moved."""
        assert st.task is not None
        value = st.task.frontier.value
        if value == st.last_forward or wall - st.last_forward_wall < self.config.heartbeat_s:
            return
        headers = _headers(st.name, [Report(st.name, value)])
        plan.messages.extend(
            _Message(self.config.keyed_topic, b"", partition=r, headers=headers)
            for r in range(self.config.partitions)
        )
        st.last_forward, st.last_forward_wall = value, wall

    # -- scores (the worker's score path) ------------------------------------------------------

    def _score_work(
        self, records: dict[TopicPartition, list[Any]], plan: _Plan, wall: float
    ) -> bool:
        """Whether this iteration has anything for the score path."""
        if self.scores is None:
            return False
        return bool(
            plan.written
            or self.scores.evaluators is not None
            or wall - self._last_sweep >= SWEEP_INTERVAL_S
            or any(self.tasks[tp].kind == "scores" for tp in records if tp in self.tasks)
        )

    def _scores(self, records: dict[TopicPartition, list[Any]], plan: _Plan, wall: float) -> None:
        """After the iteration's rows are written: the stored calls, the score messages
        and the judge's results through the score path; rejected score messages to
        the scores DLQ; the folded scores to the keyed partitions of their series."""
        path = self.scores
        assert path is not None
        result = ScoreResult()
        for batch in plan.written:
            result.add(self._retry("scoring stored calls", partial(path.calls, batch)))
        for tp, msgs in records.items():
            st = self.tasks.get(tp)
            if st is None or st.kind != "scores":
                continue
            raw = [
                RawMessage(
                    m.value if isinstance(m.value, bytes) else b"",
                    f"kafka:{tp.topic}/{tp.partition}@{m.offset}",
                    m.key,
                )
                for m in msgs
            ]
            result.add(self._retry("storing scores", partial(path.messages, raw)))
            st.position = msgs[-1].offset + 1
            st.dirty = True
        result.add(self._retry("collecting judge scores", path.drain))
        if wall - self._last_sweep >= SWEEP_INTERVAL_S:
            result.add(self._retry("sweeping scores", path.sweep))
            self._last_sweep = wall
        dlq = self.config.scores_dlq
        if dlq:
            plan.messages.extend(_dlq_message(dlq, rej) for rej in result.rejections)
        # Ahead of the events tasks' progress: a score folded because its call was
        # stored in this iteration reaches its series before the call's event time.
        plan.messages[:0] = self._contributions(result.scored)

    def _contributions(self, scored: list[Scored]) -> list[_Message]:
        """One message (or a few) per keyed partition owning a series of ``scored``."""
        if not scored:
            return []
        n = self.config.partitions
        groupings = self.stages.quality.groupings
        by_partition: dict[int, list[alerting.Contribution]] = {}
        for key, items in alerting.contributions(scored, groupings).items():
            by_partition.setdefault(partition_for(key, n), []).extend(items)
        headers = [(_KIND, _QUALITY), (_FROM, self.client_id.encode())]
        out = []
        step = _CONTRIBUTIONS_PER_MESSAGE
        for part, items in sorted(by_partition.items()):
            for i in range(0, len(items), step):
                value = alerting.encode(items[i : i + step])
                out.append(
                    _Message(self.config.keyed_topic, value, partition=part, headers=headers)
                )
        return out

    # -- keyed hop (windows, budgets, drift, alerts) -----------------------------------------

    def _keyed_batch(
        self, st: _TaskState, msgs: list[Any], quality: list[alerting.Contribution]
    ) -> tuple[TraceBatch | None, np.ndarray | None, list[Report]]:
        """The new rows of ``msgs`` (rows a restarted sender sent again are dropped);
        score contributions are added to ``quality`` (the quality stage drops those
        it has counted, by score id)."""
        batches, targets, reports = [], [], []
        for m in msgs:
            if _is_quality(m.headers):
                items = alerting.decode(m.value) if m.value else []
                quality.extend(items)
                latest = max((c.call_ms for c in items), default=None)
                st.log.append(_Logged(m.offset, latest, len(items), dict(st.hwm)))
                continue
            sender, got = _read_headers(m.headers)
            reports.extend(got)
            before = dict(st.hwm)
            rows = 0
            max_ts = None
            if m.value:
                b, bits, origin = codec.decode(m.value)
                assert bits is not None and origin is not None
                seen = st.hwm.get(sender, -1)
                fresh = origin > seen
                if len(origin):
                    st.hwm[sender] = max(seen, int(origin.max()))
                if not fresh.all():
                    keep = np.flatnonzero(fresh)
                    b, bits = b.select(keep), bits[keep]
                if len(b):
                    batches.append(b)
                    targets.append(bits)
                    rows = len(b)
                    max_ts = int(b.timestamp_ms.max())
            st.log.append(_Logged(m.offset, max_ts, rows, before))
        if not batches:
            return None, None, reports
        return concat(batches), np.concatenate(targets), reports

    def _keyed(
        self, st: _TaskState, msgs: list[Any], now: datetime, wall: float, plan: _Plan
    ) -> None:
        assert st.task is not None
        quality: list[alerting.Contribution] = []
        batch, targets, reports = self._keyed_batch(st, msgs, quality)
        st.position = msgs[-1].offset + 1
        st.dirty = True
        if quality:
            stage = _quality_stage(st)
            if stage is not None:
                stage.add(quality)
        if batch is None or targets is None:
            out = st.task.tick(now=now, wall_s=wall, stats=plan.stats, reports=reports)
        else:
            out = st.task.process(
                batch,
                now=now,
                wall_s=wall,
                stats=plan.stats,
                reports=reports,
                owned=owned_masks(targets, self._layout),
            )
        self._set_aside(st, out, now, plan)
        plan.rows.extend((r, st.lineage) for r in out.rows)
        plan.effects.extend(out.after_write)

    def _set_aside(self, st: _TaskState, out: Output, now: datetime, plan: _Plan) -> None:
        """Poisoned events (a stage failed on each of them, retries included) to
        ``rejected_events`` and the DLQ, with the step named; the partition goes on."""
        assert st.task is not None
        rejections = set_aside(out, now=now, stats=plan.stats, retries=st.task.retries)
        plan.messages.extend(_dlq_message(self.config.dlq, r) for r in rejections)

    # -- checkpoints --------------------------------------------------------------------------

    async def _checkpoint(self) -> None:
        """Every changed task's checkpoint to the changelog, then the offsets."""
        self._last_checkpoint = self.wall()
        if self._behind:
            raise _Unwritten("the state is ahead of the store: no checkpoint from it")
        await self._acked()
        if self.consumer is None:
            return
        dirty = [st for st in self.tasks.values() if st.dirty]
        if not dirty:
            return
        wall = self.wall()
        cps = await asyncio.to_thread(lambda: [self._next_checkpoint(st, wall) for st in dirty])
        n = self.config.partitions
        futures = [
            await self.sender.send(
                self.config.changelog_topic,
                cp.encode(),
                key=cp.task.encode(),
                partition=st.tp.partition % n,
            )
            for st, cp in zip(dirty, cps, strict=True)
        ]
        await asyncio.gather(*futures)
        for st, cp in zip(dirty, cps, strict=True):
            st.cp = cp
            st.dirty = False
            if cp.replay_from is not None:
                while st.log and st.log[0].offset < cp.replay_from:
                    st.log.popleft()
            else:
                st.log.clear()
        try:
            await self.consumer.commit({st.tp: st.position for st in dirty})
        except Exception as exc:  # the checkpoints are the truth; offsets catch up next time
            log.warning("offset commit failed: %s", exc)

    def _next_checkpoint(self, st: _TaskState, wall: float) -> Checkpoint:
        meta: dict[str, Any] = {}
        blobs: dict[str, bytes] = {}
        replay_from = None
        if st.task is not None:
            blobs = st.task.snapshot()
            # Stage snapshots that did not change since the last checkpoint carry over.
            blobs = {**st.cp.blobs, **blobs}
            replay_from = replay_start(list(st.log), st.task.retention(), st.position)
        if st.kind == "keyed":
            meta["hwm"] = dict(st.hwm)
            first = next(
                (e for e in st.log if replay_from is not None and e.offset >= replay_from), None
            )
            meta["hwm_at_replay"] = dict(first.hwm or {}) if first is not None else dict(st.hwm)
        return Checkpoint(
            st.name,
            seq=st.seq,
            generation=st.cp.generation,
            offset=st.position,
            replay_from=replay_from,
            lineage=list(st.cp.lineage),
            meta=meta,
            blobs=blobs,
            wall_s=wall,
        )

    # -- taking tasks over and giving them up -------------------------------------------------

    async def on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        """Checkpoint everything and set the given-up tasks aside: an eager rebalance
        revokes every partition and usually hands most of them straight back, and a
        task that comes back unchanged resumes without a restore."""
        revoked = set(revoked)
        self._pending -= revoked
        async with self._lock:
            gone = [tp for tp in revoked if tp in self.tasks]
            if not gone:
                return
            try:
                await self._checkpoint()
                keep = True
            except Exception as exc:
                log.error("checkpoint before giving up %d partitions failed: %s", len(gone), exc)
                # Our rows past the last checkpoint would be written again by the
                # next owner: undo them here, and the state that made them with them.
                undo = [
                    (self.tasks[tp].name, self.tasks[tp].cp.generation, self.tasks[tp].cp.seq)
                    for tp in gone
                ]
                await asyncio.to_thread(self.writer.roll_back, undo)
                keep = False
            for tp in gone:
                st = self.tasks.pop(tp)
                if keep:
                    self._suspended[tp] = st
                elif st.task is not None:
                    st.task.close(timeout=0)
        log.info("gave up %d partitions", len(gone))

    async def on_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        """Only note the new partitions (paused): restoring them can take a while and
        runs in the main loop, so the group's rebalance is never held up by it."""
        assert self.consumer is not None
        assigned = set(assigned)
        for tp in [tp for tp in self._suspended if tp not in assigned]:
            st = self._suspended.pop(tp)
            if st.task is not None:
                st.task.close(timeout=0)
        self._pending |= {tp for tp in assigned if tp not in self.tasks}
        if self._pending:
            # A new assignment starts unpaused; these must not be fetched before
            # their state is back and their position set.
            self.consumer.pause(*self._pending)
        else:
            self.assigned_once.set()
        log.info("assigned %d partitions, %d to restore", len(assigned), len(self._pending))

    async def _restore_pending(self) -> set[TopicPartition]:
        """Take over the partitions assigned but not yet restored (under the lock).
        Returns them."""
        assert self.consumer is not None
        pending = sorted(self._pending)
        started = time.perf_counter()
        by_partition: dict[int, set[str]] = {}
        for tp in pending:
            by_partition.setdefault(tp.partition % self.config.partitions, set()).add(
                self.config.task_name(tp)
            )
        latest = await self._read_checkpoints(by_partition)
        resumed: list[_TaskState] = []
        fresh: list[tuple[TopicPartition, Checkpoint | None, Checkpoint]] = []
        undo: list[tuple[str, int | None, int]] = []
        for tp in pending:
            name = self.config.task_name(tp)
            cp = latest.get(name)
            old = self._suspended.pop(tp, None)
            if (
                old is not None
                and cp is not None
                and (cp.generation, cp.seq) == (old.cp.generation, old.cp.seq)
            ):
                resumed.append(old)  # nobody had it meanwhile: carry on as we were
                continue
            if old is not None and old.task is not None:
                old.task.close(timeout=0)
            if cp is None:
                committed = await self.consumer.committed(tp)
                if committed is None:
                    committed = (await self.consumer.beginning_offsets([tp]))[tp]
                base = Checkpoint(name, seq=0, generation=0, offset=committed)
                undo.append((name, None, 0))
            else:
                base = cp
                undo.extend((name, g, s) for g, s in [*cp.lineage, (cp.generation, cp.seq)])
            fresh.append((tp, cp, base))
        if undo:
            await asyncio.to_thread(self.writer.roll_back, undo)
        states = [await self._take_over(tp, cp, base) for tp, cp, base in fresh]
        # Our first checkpoint of each: a new generation, written before anything
        # else, so rows of a takeover that dies before its first checkpoint are
        # undone too.
        futures = [
            await self.sender.send(
                self.config.changelog_topic,
                st.cp.encode(),
                key=st.name.encode(),
                partition=st.tp.partition % self.config.partitions,
            )
            for st in states
        ]
        await asyncio.gather(*futures)
        for st in states:
            st.dirty = False
        for st in [*states, *resumed]:
            self.consumer.seek(st.tp, st.position)
            self.tasks[st.tp] = st
        self._pending.difference_update(pending)
        self.consumer.resume(*pending)
        if not self._pending:
            self.assigned_once.set()
        log.info(
            "took over %d partitions (%d resumed as they were) in %.2fs",
            len(pending),
            len(resumed),
            time.perf_counter() - started,
        )
        return set(pending)

    async def _take_over(
        self, tp: TopicPartition, cp: Checkpoint | None, base: Checkpoint
    ) -> _TaskState:
        name = self.config.task_name(tp)
        kind = self._kind(tp)
        st = _TaskState(tp, name, kind, base, base.offset)
        if kind == "input":
            st.clock = SourceClock(name, self.config.idle_s)
        elif kind == "events":
            st.task = Task(name, self.stages.traces(), upstream=self.config.input_names())
        elif kind == "keyed":
            st.task = Task(
                name, self.stages.keyed(tp.partition), upstream=self.config.events_names()
            )
        if st.task is not None and cp is not None:
            st.task.restore(cp.blobs)
            if kind == "keyed":
                st.hwm = {k: int(v) for k, v in cp.meta.get("hwm", {}).items()}
            if cp.replay_from is not None and cp.replay_from < cp.offset:
                await self._rebuild(st, cp)
        st.cp = (
            base.successor(base.offset)
            if cp is not None
            else Checkpoint(name, seq=0, generation=1, offset=base.offset)
        )
        st.position = st.cp.offset
        return st

    async def _rebuild(self, st: _TaskState, cp: Checkpoint) -> None:
        """Replay ``[cp.replay_from, cp.offset)`` of the task's input into its state."""
        assert st.task is not None and cp.replay_from is not None
        now, wall = self.clock(), self.wall()
        hwm = {k: int(v) for k, v in cp.meta.get("hwm_at_replay", {}).items()}
        count = 0
        async for m in self._read(st.tp, cp.replay_from, cp.offset):
            if _is_quality(m.headers):
                items = alerting.decode(m.value) if m.value else []
                stage = _quality_stage(st)
                if stage is not None:
                    stage.add(items)
                latest = max((c.call_ms for c in items), default=None)
                st.log.append(_Logged(m.offset, latest, len(items), dict(hwm)))
                continue
            sender, _ = _read_headers(m.headers)
            before = dict(hwm)
            if not m.value:
                st.log.append(_Logged(m.offset, None, 0, before if st.kind == "keyed" else None))
                continue
            batch, bits, origin = codec.decode(m.value)
            if st.kind == "keyed":
                assert bits is not None and origin is not None
                seen = hwm.get(sender, -1)
                if len(origin):
                    hwm[sender] = max(seen, int(origin.max()))
                keep = np.flatnonzero(origin > seen)
                batch, bits = batch.select(keep), bits[keep]
                owned = owned_masks(bits, self._layout)
            else:
                owned = None
            if len(batch):
                await asyncio.to_thread(st.task.rebuild, batch, now=now, wall_s=wall, owned=owned)
                count += len(batch)
            max_ts = int(batch.timestamp_ms.max()) if len(batch) else None
            st.log.append(
                _Logged(m.offset, max_ts, len(batch), before if st.kind == "keyed" else None)
            )
        log.info("%s: rebuilt from %d events", st.name, count)

    async def _read(self, tp: TopicPartition, start: int, end: int) -> Any:
        """Messages of ``tp`` with offsets in ``[start, end)``, read outside the group."""
        assert self._restorer is not None
        self._restorer.assign([tp])
        self._restorer.seek(tp, start)
        position = start
        while position < end:
            got = await self._restorer.getmany(tp, timeout_ms=1000, max_records=1000)
            msgs = got.get(tp, [])
            if not msgs:
                high = (await self._restorer.end_offsets([tp]))[tp]
                if position >= high:
                    break
                continue
            for m in msgs:
                if m.offset >= end:
                    return
                yield m
                position = m.offset + 1

    async def _read_checkpoints(self, wanted: Mapping[int, set[str]]) -> dict[str, Checkpoint]:
        """The latest checkpoint of the wanted tasks, by changelog partition. Read from
        the tail backwards in growing steps: the latest checkpoint of a live task is a
        few messages from the end, however long the uncompacted head is."""
        assert self._restorer is not None
        latest: dict[str, Checkpoint] = {}
        for p, names in sorted(wanted.items()):
            tp = TopicPartition(self.config.changelog_topic, p)
            self._restorer.assign([tp])
            end = (await self._restorer.end_offsets([tp]))[tp]
            begin = (await self._restorer.beginning_offsets([tp]))[tp]
            step, stop = 4 * len(names) + 8, end
            while stop > begin and not names <= latest.keys():
                start = max(begin, stop - step)
                found: dict[str, Checkpoint] = {}
                async for m in self._read(tp, start, stop):
                    if not m.value:
                        continue
                    try:
                        cp = Checkpoint.decode(m.value)
                    except ValueError:
                        continue
                    found[cp.task] = cp
                for task, cp in found.items():
                    latest.setdefault(task, cp)  # a later chunk already had the newer one
                stop, step = start, step * 4
        return latest

    async def clean_up_uncommitted(self) -> None:
        """At start-up: undo our rows that no checkpoint covers (we crashed before
        committing them, and whoever owns their task now redoes that work)."""
        found = await asyncio.to_thread(self.writer.lineage_in_store)
        mine = {task for task, _ in found if task.startswith(self.config.app_id + ":")}
        if not mine:
            return
        wanted: dict[int, set[str]] = {}
        for task in mine:
            wanted.setdefault(self.config.task_partition(task), set()).add(task)
        latest = await self._read_checkpoints(wanted)
        undo: list[tuple[str, int | None, int]] = []
        for (task, gen), top in found.items():
            if task not in mine:
                continue
            cp = latest.get(task)
            if cp is None:
                undo.append((task, gen, 0))
                continue
            committed = cp.committed_seq(gen)
            if committed is not None and top > committed:
                undo.append((task, gen, committed))
        if undo:
            await asyncio.to_thread(self.writer.roll_back, undo)
            log.info("undid rows of %d uncommitted task checkpoints", len(undo))

    def _kind(self, tp: TopicPartition) -> str:
        if tp.topic == self.config.events_topic:
            return "events"
        if tp.topic == self.config.keyed_topic:
            return "keyed"
        if tp.topic == self.config.scores_topic:
            return "scores"
        return "input"

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


class _Unwritten(RuntimeError):
    """Rows of an iteration could not be stored before the worker had to stop."""


def _quality_stage(st: _TaskState) -> QualityStage | None:
    if st.task is None:
        return None
    return next((s for s in st.task.stages if isinstance(s, QualityStage)), None)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: TopologyRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        try:
            await self.runner.on_revoked(revoked)
        except Exception:  # aiokafka would only log it; we must not lose the reason
            log.exception("giving up partitions failed")

    async def on_partitions_assigned(self, assigned: Any) -> None:
        try:
            await self.runner.on_assigned(assigned)
        except Exception:
            log.exception("taking over partitions failed; exiting so a supervisor restarts us")
            logging.shutdown()
            import os

            os._exit(75)
