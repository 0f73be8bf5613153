"""The topology's tasks as the runner holds them: names, per-task state, one plan.

A task is one partition of a hop's input topic. Its name is what its
checkpoints and the lineage of its rows are keyed by, so the naming lives with
the config; its state (position, checkpoint, the log of recent input a restore
replays) is shared by the hops, the checkpoints and the takeover.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from llmpulse.schemas.batch import TraceBatch
from llmpulse.stages.base import IngestStats, Rows
from llmpulse.stages.quality import QualityStage
from llmpulse.stages.retention import Retention
from llmpulse.store.writer import Lineage
from llmpulse.topology.checkpoint import Checkpoint
from llmpulse.topology.task import Task
from llmpulse.topology.watermarks import Report, SourceClock
from llmpulse.worker._wire import Message


@dataclass(frozen=True)
class TopologyConfig:
    app_id: str
    inputs: dict[str, int]  # input topic -> partitions
    partitions: int  # of each internal topic
    dlq: str
    otlp_topic: str | None = None  # an input topic of OTLP export requests, not JSON events
    scores_topic: str | None = None  # score events (llm.scores), for the worker's score path
    scores_dlq: str | None = None
    # How much one iteration takes, and how long it waits for it.
    batch_size: int = 5000
    poll_s: float = 0.2
    # Offsets wait for checkpoints: this bounds the work a takeover redoes.
    commit_interval_s: float = 2.0
    idle_s: float = 30.0  # a silent input partition stops holding event time back
    heartbeat_s: float = 0.5

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

    def kind(self, tp: TopicPartition) -> str:
        """The hop a partition feeds: input | events | keyed | scores."""
        if tp.topic == self.events_topic:
            return "events"
        if tp.topic == self.keyed_topic:
            return "keyed"
        if tp.topic == self.scores_topic:
            return "scores"
        return "input"


@dataclass
class Logged:
    offset: int
    max_ts: int | None
    rows: int
    hwm: dict[str, int] | None = None  # keyed tasks: origin high-water marks before it


@dataclass
class TaskState:
    tp: TopicPartition
    name: str
    kind: str  # input | events | keyed | scores
    cp: Checkpoint
    position: int
    task: Task | None = None
    clock: SourceClock | None = None
    log: deque[Logged] = field(default_factory=deque)
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

    def quality_stage(self) -> QualityStage | None:
        if self.task is None:
            return None
        return next((s for s in self.task.stages if isinstance(s, QualityStage)), None)


@dataclass
class Plan:
    """What one iteration's processing asks for, done after it in this order:
    rows written, messages sent, effects run once the rows are durable."""

    rows: list[tuple[Rows, Lineage | None]] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    effects: list[Callable[[], object]] = field(default_factory=list)
    stats: IngestStats = field(default_factory=IngestStats)
    written: list[TraceBatch] = field(default_factory=list)  # calls the events tasks stored


def replay_start(log: Sequence[Logged], retention: Retention, position: int) -> int | None:
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
