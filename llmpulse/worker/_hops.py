"""The three hops of one iteration: input, events, keyed (see ``runner``).

Pure processing: records in, a :class:`~llmpulse.worker._tasks.Plan` out (rows
to write, messages to send, effects to run once the rows are durable). Nothing
here touches Kafka or the store, which is what lets it run in a thread while
the event loop keeps the consumer's heartbeats going.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from aiokafka import TopicPartition

from llmpulse.otlp import OtlpDecoder
from llmpulse.processors.traces import RawMessage, Rejection
from llmpulse.schemas.batch import TraceBatch, concat
from llmpulse.scores import alerting
from llmpulse.stages.base import Context, IngestStats, Output, Stage
from llmpulse.stages.intake import Intake
from llmpulse.topology import codec
from llmpulse.topology.isolation import set_aside
from llmpulse.topology.routing import owned_masks, route
from llmpulse.topology.watermarks import Report
from llmpulse.worker._tasks import Logged, Plan, TaskState, TopologyConfig
from llmpulse.worker._wire import (
    Message,
    dlq_message,
    is_quality,
    progress_headers,
    progress_to_all,
    raw_messages,
    read_headers,
    split,
)


class Hops:
    """The processing of the input, events and keyed tasks of one iteration."""

    def __init__(
        self,
        config: TopologyConfig,
        intake: Intake,
        keyed_keys: list[Stage],
        otlp: OtlpDecoder | None = None,
    ) -> None:
        self.config = config
        self.intake = intake
        self.otlp = otlp  # None: no input topic carries OTLP export requests
        # Stage instances used only for their keys() (routing needs no state).
        self.keyed_keys = keyed_keys
        self.layout = [(s.name, len(s.keys(TraceBatch.empty()))) for s in keyed_keys]

    def process(
        self,
        tasks: Mapping[TopicPartition, TaskState],
        records: Mapping[TopicPartition, list[Any]],
        caught_up: Mapping[TopicPartition, bool],
        now: datetime,
        wall: float,
    ) -> Plan:
        plan = Plan()
        for kind in ("input", "events", "keyed"):
            for tp, st in tasks.items():
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
        st: TaskState,
        msgs: list[Any],
        caught_up: bool,
        now: datetime,
        wall: float,
        plan: Plan,
    ) -> None:
        assert st.clock is not None
        cfg = self.config
        n = cfg.partitions
        if msgs:
            raw = raw_messages(st.tp, msgs)
            decoded: list[Rejection] = []
            if self.otlp is not None and st.tp.topic == cfg.otlp_topic:
                raw, decoded = self._spans(raw, plan.stats)
            validated = self.intake.validate(raw, decoded)
            out = self.intake.process(validated, Context(now, wall, stats=plan.stats, task=st.name))
            plan.rows.extend((r, st.lineage) for r in out.rows)
            plan.messages.extend(dlq_message(cfg.dlq, rej) for rej in validated.rejections)
            st.clock.observe(validated.max_time_ms, wall)
            st.position = msgs[-1].offset + 1
            st.dirty = True
            report = st.clock.report(wall, caught_up=False)
            headers = progress_headers(st.name, [report])
            batch = out.batch if out.batch is not None else validated.batch
            parts = route([batch.event_id], n) if len(batch) else {}
            for q in range(n):
                got = parts.get(q)
                if got is None:
                    plan.messages.append(
                        Message(cfg.events_topic, b"", partition=q, headers=headers)
                    )
                    continue
                plan.messages.extend(
                    split(
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
        plan.messages.extend(
            progress_to_all(cfg.events_topic, n, progress_headers(st.name, [report]))
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

    # -- events hop (trace stage) ------------------------------------------------------------

    def _events(
        self, st: TaskState, msgs: list[Any], now: datetime, wall: float, plan: Plan
    ) -> None:
        assert st.task is not None
        batches, reports = [], []
        for m in msgs:
            _, got = read_headers(m.headers)
            reports.extend(got)
            rows = 0
            max_ts = None
            if m.value:
                b, _, _ = codec.decode(m.value)
                b.numbers["_origin"] = np.full(len(b), m.offset, dtype=np.int64)
                batches.append(b)
                rows = len(b)
                max_ts = int(b.timestamp_ms.max()) if rows else None
            st.log.append(Logged(m.offset, max_ts, rows))
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
        keys = [k for s in self.keyed_keys for k in s.keys(unique)]
        parts = route(keys, self.config.partitions)
        headers = progress_headers(st.name, [Report(st.name, st.task.frontier.value)])
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
                    Message(self.config.keyed_topic, b"", partition=r, headers=headers)
                )
                continue
            sel, bits = routed
            targets[sel] = bits
            plan.messages.extend(split(self.config.keyed_topic, r, headers, sel, encode, origin))
        st.last_forward, st.last_forward_wall = st.task.frontier.value, wall

    def _forward_progress(self, st: TaskState, wall: float, plan: Plan) -> None:
        """Tell every keyed partition how far this events task has got, when that moved."""
        assert st.task is not None
        value = st.task.frontier.value
        if value == st.last_forward or wall - st.last_forward_wall < self.config.heartbeat_s:
            return
        headers = progress_headers(st.name, [Report(st.name, value)])
        plan.messages.extend(
            progress_to_all(self.config.keyed_topic, self.config.partitions, headers)
        )
        st.last_forward, st.last_forward_wall = value, wall

    # -- keyed hop (windows, budgets, drift, alerts) -----------------------------------------

    def _keyed_batch(
        self, st: TaskState, msgs: list[Any], quality: list[alerting.Contribution]
    ) -> tuple[TraceBatch | None, np.ndarray | None, list[Report]]:
        """The new rows of ``msgs`` (rows a restarted sender sent again are dropped);
        score contributions are added to ``quality`` (the quality stage drops those
        it has counted, by score id)."""
        batches, targets, reports = [], [], []
        for m in msgs:
            if is_quality(m.headers):
                quality.extend(quality_items(st, m, st.hwm))
                continue
            sender, got = read_headers(m.headers)
            reports.extend(got)
            before = dict(st.hwm)
            rows = 0
            max_ts = None
            if m.value:
                b, bits = drop_resent(st.hwm, sender, m.value)
                if len(b):
                    batches.append(b)
                    targets.append(bits)
                    rows = len(b)
                    max_ts = int(b.timestamp_ms.max())
            st.log.append(Logged(m.offset, max_ts, rows, before))
        if not batches:
            return None, None, reports
        return concat(batches), np.concatenate(targets), reports

    def _keyed(
        self, st: TaskState, msgs: list[Any], now: datetime, wall: float, plan: Plan
    ) -> None:
        assert st.task is not None
        quality: list[alerting.Contribution] = []
        batch, targets, reports = self._keyed_batch(st, msgs, quality)
        st.position = msgs[-1].offset + 1
        st.dirty = True
        if quality:
            stage = st.quality_stage()
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
                owned=owned_masks(targets, self.layout),
            )
        self._set_aside(st, out, now, plan)
        plan.rows.extend((r, st.lineage) for r in out.rows)
        plan.effects.extend(out.after_write)

    def _set_aside(self, st: TaskState, out: Output, now: datetime, plan: Plan) -> None:
        """Poisoned events (a stage failed on each of them, retries included) to
        ``rejected_events`` and the DLQ, with the step named; the partition goes on."""
        assert st.task is not None
        rejections = set_aside(out, now=now, stats=plan.stats, retries=st.task.retries)
        plan.messages.extend(dlq_message(self.config.dlq, r) for r in rejections)


def quality_items(st: TaskState, m: Any, hwm: Mapping[str, int]) -> list[alerting.Contribution]:
    """The score contributions of a keyed message, logged for replay (with the
    high-water marks ``hwm`` before it) under their latest call's time."""
    items = alerting.decode(m.value) if m.value else []
    latest = max((c.call_ms for c in items), default=None)
    st.log.append(Logged(m.offset, latest, len(items), dict(hwm)))
    return items


def drop_resent(
    hwm: dict[str, int], sender: str, value: bytes
) -> tuple[TraceBatch, npt.NDArray[np.uint32]]:
    """The rows of a keyed message and their target bits, without those whose
    origin ``sender`` had sent before (it restarted from an older checkpoint);
    ``hwm`` moves on to the message's last origin."""
    b, bits, origin = codec.decode(value)
    assert bits is not None and origin is not None
    seen = hwm.get(sender, -1)
    fresh = origin > seen
    if len(origin):
        hwm[sender] = max(seen, int(origin.max()))
    if not fresh.all():
        keep = np.flatnonzero(fresh)
        b, bits = b.select(keep), bits[keep]
    return b, bits
