"""Taking tasks over on a rebalance or a restart, and giving them up.

A task taken over resumes from its latest checkpoint: its rows written after it
are undone, what its stages keep as a fold over recent input is rebuilt by
replaying that input, and the consumer seeks to the checkpoint's offset. This
runs in the runner's main loop, not in the rebalance callbacks, so a slow
restore never holds the group's rebalance up (the callbacks only note and
pause the partitions).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from llmpulse.runtime import Stages
from llmpulse.store.writer import StoreWriter
from llmpulse.topology import codec
from llmpulse.topology.checkpoint import Checkpoint
from llmpulse.topology.routing import owned_masks
from llmpulse.topology.task import Task
from llmpulse.topology.watermarks import SourceClock
from llmpulse.worker._checkpoints import Changelog
from llmpulse.worker._hops import Hops, drop_resent, quality_items
from llmpulse.worker._tasks import Logged, TaskState, TopologyConfig
from llmpulse.worker._wire import is_quality, read_headers

log = logging.getLogger("llmpulse.worker")

# EX_TEMPFAIL, as the app exits with when the store is out: a supervisor restarts us.
_EXIT_TAKEOVER_FAILED = 75


class Takeover:
    """The rebalance half of :class:`~llmpulse.worker.runner.TopologyRunner`."""

    config: TopologyConfig
    stages: Stages
    writer: StoreWriter
    clock: Callable[[], datetime]
    wall: Callable[[], float]
    consumer: AIOKafkaConsumer | None
    changelog: Changelog
    hops: Hops
    tasks: dict[TopicPartition, TaskState]
    assigned_once: asyncio.Event
    _lock: asyncio.Lock
    # Assigned, paused, waiting for the main loop to restore them.
    _pending: set[TopicPartition]
    # Revoked in a rebalance, kept in case it hands them back unchanged.
    _suspended: dict[TopicPartition, TaskState]

    if TYPE_CHECKING:

        async def _checkpoint(self) -> None: ...

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
        latest = await self.changelog.latest(
            self.changelog.wanted(self.config.task_name(tp) for tp in pending)
        )
        resumed: list[TaskState] = []
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
        await self.changelog.write(states)
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
    ) -> TaskState:
        name = self.config.task_name(tp)
        kind = self.config.kind(tp)
        st = TaskState(tp, name, kind, base, base.offset)
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

    async def _rebuild(self, st: TaskState, cp: Checkpoint) -> None:
        """Replay ``[cp.replay_from, cp.offset)`` of the task's input into its state."""
        assert st.task is not None and cp.replay_from is not None
        now, wall = self.clock(), self.wall()
        hwm = {k: int(v) for k, v in cp.meta.get("hwm_at_replay", {}).items()}
        keyed = st.kind == "keyed"
        count = 0
        async for m in self.changelog.read(st.tp, cp.replay_from, cp.offset):
            if is_quality(m.headers):
                items = quality_items(st, m, hwm)
                stage = st.quality_stage()
                if stage is not None:
                    stage.add(items)
                continue
            sender, _ = read_headers(m.headers)
            before = dict(hwm) if keyed else None
            if not m.value:
                st.log.append(Logged(m.offset, None, 0, before))
                continue
            owned = None
            if keyed:
                batch, bits = drop_resent(hwm, sender, m.value)
                owned = owned_masks(bits, self.hops.layout)
            else:
                batch, _, _ = codec.decode(m.value)
            if len(batch):
                await asyncio.to_thread(st.task.rebuild, batch, now=now, wall_s=wall, owned=owned)
                count += len(batch)
            max_ts = int(batch.timestamp_ms.max()) if len(batch) else None
            st.log.append(Logged(m.offset, max_ts, len(batch), before))
        log.info("%s: rebuilt from %d events", st.name, count)


class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: Takeover) -> None:
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
            os._exit(_EXIT_TAKEOVER_FAILED)
