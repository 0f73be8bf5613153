"""The changelog topic: writing task checkpoints, finding the latest, undoing the rest.

A checkpoint is the commit point of a task (``llmpulse.topology.checkpoint``):
consumer offsets are committed only after the checkpoints are acknowledged,
and those only after the rows they cover are stored. Reading runs on a consumer
of its own, outside the group, so a takeover can read any partition without
touching the group's assignment.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from llmpulse.store.writer import StoreWriter
from llmpulse.topology.checkpoint import Checkpoint
from llmpulse.worker._tasks import TaskState, TopologyConfig, replay_start
from llmpulse.worker._wire import MAX_MESSAGE_BYTES, Message, Sender

log = logging.getLogger("llmpulse.worker")


class Changelog:
    """Checkpoints in and out of ``<app>-changelog``. Its reader, outside the group,
    also replays a task's input for a rebuild (:meth:`read` takes any partition)."""

    def __init__(self, config: TopologyConfig, sender: Sender, writer: StoreWriter) -> None:
        self.config = config
        self.sender = sender
        self.writer = writer
        self.reader: AIOKafkaConsumer | None = None

    async def start(self, bootstrap: str, client_id: str, security: Mapping[str, Any]) -> None:
        self.reader = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id=f"{client_id}-restore",
            **security,
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
            fetch_max_bytes=4 * MAX_MESSAGE_BYTES,
        )
        await self.reader.start()

    # -- writing --------------------------------------------------------------------------

    async def write(self, states: Sequence[TaskState]) -> None:
        """The current checkpoint of each of ``states``, acknowledged by the broker."""
        await self._send([(st.tp.partition, st.cp) for st in states])

    async def _send(self, cps: Sequence[tuple[int, Checkpoint]]) -> None:
        n = self.config.partitions
        topic = self.config.changelog_topic
        futures = [
            await self.sender.send(
                Message(topic, cp.encode(), key=cp.task.encode(), partition=p % n)
            )
            for p, cp in cps
        ]
        await asyncio.gather(*futures)

    async def advance(self, dirty: Sequence[TaskState], wall: float) -> None:
        """A new checkpoint for each of ``dirty`` (snapshots taken in a thread),
        written; then the input logs are trimmed to what a restore would replay."""
        cps = await asyncio.to_thread(lambda: [next_checkpoint(st, wall) for st in dirty])
        await self._send([(st.tp.partition, cp) for st, cp in zip(dirty, cps, strict=True)])
        for st, cp in zip(dirty, cps, strict=True):
            st.cp = cp
            st.dirty = False
            if cp.replay_from is not None:
                while st.log and st.log[0].offset < cp.replay_from:
                    st.log.popleft()
            else:
                st.log.clear()

    # -- reading --------------------------------------------------------------------------

    async def read(self, tp: TopicPartition, start: int, end: int) -> AsyncIterator[Any]:
        """Messages of ``tp`` with offsets in ``[start, end)``, read outside the group."""
        assert self.reader is not None
        self.reader.assign([tp])
        self.reader.seek(tp, start)
        position = start
        while position < end:
            got = await self.reader.getmany(tp, timeout_ms=1000, max_records=1000)
            msgs = got.get(tp, [])
            if not msgs:
                high = (await self.reader.end_offsets([tp]))[tp]
                if position >= high:
                    break
                continue
            for m in msgs:
                if m.offset >= end:
                    return
                yield m
                position = m.offset + 1

    async def latest(self, wanted: Mapping[int, set[str]]) -> dict[str, Checkpoint]:
        """The latest checkpoint of the wanted tasks, by changelog partition. Read from
        the tail backwards in growing steps: the latest checkpoint of a live task is a
        few messages from the end, however long the uncompacted head is."""
        assert self.reader is not None
        latest: dict[str, Checkpoint] = {}
        for p, names in sorted(wanted.items()):
            tp = TopicPartition(self.config.changelog_topic, p)
            self.reader.assign([tp])
            end = (await self.reader.end_offsets([tp]))[tp]
            begin = (await self.reader.beginning_offsets([tp]))[tp]
            step, stop = 4 * len(names) + 8, end
            while stop > begin and not names <= latest.keys():
                start = max(begin, stop - step)
                found: dict[str, Checkpoint] = {}
                async for m in self.read(tp, start, stop):
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

    def wanted(self, names: Iterable[str]) -> dict[int, set[str]]:
        """``names`` by the changelog partition their checkpoints are on."""
        out: dict[int, set[str]] = {}
        for name in names:
            out.setdefault(self.config.task_partition(name), set()).add(name)
        return out

    async def clean_up_uncommitted(self) -> None:
        """At start-up: undo our rows that no checkpoint covers (we crashed before
        committing them, and whoever owns their task now redoes that work)."""
        found = await asyncio.to_thread(self.writer.lineage_in_store)
        mine = {task for task, _ in found if task.startswith(self.config.app_id + ":")}
        if not mine:
            return
        latest = await self.latest(self.wanted(mine))
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


def next_checkpoint(st: TaskState, wall: float) -> Checkpoint:
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
