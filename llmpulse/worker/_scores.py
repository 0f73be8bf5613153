"""The worker's score path inside an iteration (docs/topology.md, "Scores").

Scores are not a hop of their own: one :class:`~llmpulse.stages.scores.ScorePath`
per worker sees the calls this worker's events tasks stored and the messages of
its ``llm.scores`` partitions, and what it folds goes to the keyed partitions of
the series as small contribution messages. Each of its steps needs the store,
so each is retried through the runner's :class:`~llmpulse.worker._backoff.StoreRetry`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from aiokafka import TopicPartition

from llmpulse.processors.windows import GroupingSet
from llmpulse.scores import alerting
from llmpulse.scores.quality import Scored
from llmpulse.stages.scores import ScorePath, ScoreResult
from llmpulse.topology.routing import partition_for
from llmpulse.worker._backoff import StoreRetry
from llmpulse.worker._tasks import Plan, TaskState, TopologyConfig
from llmpulse.worker._wire import FROM, KIND, QUALITY, Message, dlq_message, raw_messages

# Contributions per keyed message at most (about 100 bytes each).
_CONTRIBUTIONS_PER_MESSAGE = 20_000
# Seconds between sweeps of stored scores whose call came after them.
SWEEP_INTERVAL_S = 60.0


class ScoreHop:
    """The score path's part of one iteration, run after the hops' processing."""

    def __init__(
        self,
        path: ScorePath,
        config: TopologyConfig,
        retry: StoreRetry,
        tasks: Mapping[TopicPartition, TaskState],
        *,
        groupings: Sequence[GroupingSet],
        sender: str,
    ) -> None:
        self.path = path
        self.config = config
        self.retry = retry  # each step needs the store, which may be out for a while
        self.tasks = tasks  # the runner's own (it keeps them current), scores tasks included
        self.groupings = groupings
        self.sender = sender  # named as the sender of its contribution messages
        self._last_sweep = -float("inf")

    def has_work(
        self, records: Mapping[TopicPartition, list[Any]], plan: Plan, wall: float
    ) -> bool:
        """Whether this iteration has anything for the score path."""
        tasks = self.tasks
        return bool(
            plan.written
            or self.path.evaluators is not None
            or wall - self._last_sweep >= SWEEP_INTERVAL_S
            or any(tasks[tp].kind == "scores" for tp in records if tp in tasks)
        )

    def run(self, records: Mapping[TopicPartition, list[Any]], plan: Plan, wall: float) -> None:
        """After the iteration's rows are written: the stored calls, the score messages
        and the judge's results through the score path; rejected score messages to
        the scores DLQ; the folded scores to the keyed partitions of their series."""
        path, retry = self.path, self.retry.blocking
        result = ScoreResult()
        for batch in plan.written:
            result.add(retry("scoring stored calls", partial(path.calls, batch)))
        for tp, msgs in records.items():
            st = self.tasks.get(tp)
            if st is None or st.kind != "scores":
                continue
            result.add(retry("storing scores", partial(path.messages, raw_messages(tp, msgs))))
            st.position = msgs[-1].offset + 1
            st.dirty = True
        result.add(retry("collecting judge scores", path.drain))
        if wall - self._last_sweep >= SWEEP_INTERVAL_S:
            result.add(retry("sweeping scores", path.sweep))
            self._last_sweep = wall
        dlq = self.config.scores_dlq
        if dlq:
            plan.messages.extend(dlq_message(dlq, rej) for rej in result.rejections)
        # Ahead of the events tasks' progress: a score folded because its call was
        # stored in this iteration reaches its series before the call's event time.
        plan.messages[:0] = self._contributions(result.scored)

    def _contributions(self, scored: list[Scored]) -> list[Message]:
        """One message (or a few) per keyed partition owning a series of ``scored``."""
        if not scored:
            return []
        n = self.config.partitions
        by_partition: dict[int, list[alerting.Contribution]] = {}
        for key, items in alerting.contributions(scored, self.groupings).items():
            by_partition.setdefault(partition_for(key, n), []).extend(items)
        headers = [(KIND, QUALITY), (FROM, self.sender.encode())]
        out = []
        step = _CONTRIBUTIONS_PER_MESSAGE
        for part, items in sorted(by_partition.items()):
            for i in range(0, len(items), step):
                value = alerting.encode(items[i : i + step])
                out.append(Message(self.config.keyed_topic, value, partition=part, headers=headers))
        return out
