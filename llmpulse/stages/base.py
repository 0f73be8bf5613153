"""The stage protocol: every step of the pipeline speaks the same verbs.

A stage owns its state, the tables it writes, how its state is restored and the
key that decides which worker owns which part of that state. The pipeline is a
loop over stages (``llmpulse.topology``); the worker runs the same stages as a
replay, only with Kafka repartition topics between the ones keyed differently.

Verbs (time is always injected through :class:`Context`):

* ``process(batch, ctx)``: new input; returns the rows to write, the batch for
  the next stage and the signals for the alert rules;
* ``tick(ctx)``: no new input, time moved (the watermark or the wall clock);
* ``flush(ctx)``: end of a finite stream (replay): close everything;
* ``snapshot()`` / ``restore(blob)``: the state at a checkpoint, as bytes;
* ``rebuild(batch)``: state from input already processed before the checkpoint
  (a stage whose state is a fold over a recent stretch of its input replays that
  stretch instead of snapshotting it), with no output;
* ``resume(store)``: state from what an earlier run stored, for a replay (which
  has no checkpoints);
* ``close(timeout)``: release what the stage holds (background senders).

Stages never write themselves: they return :class:`Rows`, which the runner
writes in one place, before it commits anything, so a crash can at worst
repeat work (see ``llmpulse.topology.lineage`` for how repeats are undone).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from llmpulse._types import ObjArray
from llmpulse.alerts.signals import Signal
from llmpulse.stages.retention import Retention

if TYPE_CHECKING:
    import pyarrow as pa  # type: ignore[import-untyped]

    from llmpulse.schemas.batch import TraceBatch

BoolMatrix = npt.NDArray[np.bool_]


@dataclass
class Rows:
    """Rows for one table: an Arrow table (whole columns) or tuples in ``columns`` order."""

    table: str
    data: pa.Table | Sequence[Sequence[Any]]
    columns: Sequence[str] | None = None

    def __len__(self) -> int:
        num = getattr(self.data, "num_rows", None)
        return int(num) if num is not None else len(self.data)


@dataclass
class IngestStats:
    """What the pipeline did, summed over calls (the replay summary, worker metrics)."""

    messages: int = 0
    accepted: int = 0
    duplicates: int = 0
    windows: int = 0
    late_events: int = 0
    alert_transitions: int = 0
    skipped_spans: int = 0  # OTLP spans that are not GenAI operations
    rejected: Counter[str] = field(default_factory=Counter)
    cost_sources: Counter[str] = field(default_factory=Counter)
    unpriced_models: Counter[str] = field(default_factory=Counter)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def add(self, other: IngestStats) -> None:
        self.messages += other.messages
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.windows += other.windows
        self.late_events += other.late_events
        self.alert_transitions += other.alert_transitions
        self.skipped_spans += other.skipped_spans
        self.rejected.update(other.rejected)
        self.cost_sources.update(other.cost_sources)
        self.unpriced_models.update(other.unpriced_models)


@dataclass
class Output:
    """What a stage hands back: rows to write, the next stage's input, signals and
    effects that must wait until the rows are durable (notifications)."""

    rows: list[Rows] = field(default_factory=list)
    batch: TraceBatch | None = None
    signals: list[Signal] = field(default_factory=list)
    after_write: list[Callable[[], object]] = field(default_factory=list)
    # Events a stage could not process, set aside (llmpulse.topology.isolation).
    poisoned: list[Poisoned] = field(default_factory=list)

    def extend(self, other: Output) -> None:
        self.rows.extend(other.rows)
        self.signals.extend(other.signals)
        self.after_write.extend(other.after_write)
        self.poisoned.extend(other.poisoned)


@dataclass(frozen=True)
class Poisoned:
    """One event that made ``step`` raise every time it was tried."""

    event: TraceBatch  # that one row
    step: str  # the stage's name
    error: str  # the exception, as its type and message


@dataclass
class Context:
    """Everything a stage may know about time and ownership for one call.

    ``now`` stamps rows (wall clock, timezone-aware); ``wall_s`` is the same
    instant in seconds, for idleness. ``source_time_ms`` is the event-time
    progress of the task's input: every event still to come has a time at or
    after it, up to the allowed lateness (None before every upstream partition
    has reported). ``signals`` collects the signals of the stages already run in
    this call, for the alert stage. ``owned`` holds, per stage name, which rows
    of the batch this task owns for each of the stage's keys (rows x keys); a
    stage without an entry owns every row (one worker, or a replay).
    ``stats`` sums what the stages did.
    """

    now: datetime
    wall_s: float
    source_time_ms: int | None = None
    signals: list[Signal] = field(default_factory=list)
    owned: dict[str, BoolMatrix] = field(default_factory=dict)
    stats: IngestStats = field(default_factory=IngestStats)
    task: str = "local"

    def ownership(self, stage: str, n: int, keys: int) -> BoolMatrix:
        mask = self.owned.get(stage)
        if mask is None:
            return np.ones((n, keys), dtype=np.bool_)
        return mask


class Stage(ABC):
    """One step of the pipeline; see the module docstring for the verbs."""

    name: ClassVar[str]
    tables: ClassVar[tuple[str, ...]] = ()

    def keys(self, batch: TraceBatch) -> list[ObjArray]:
        """The ownership key of every row, one column per kind of state this stage
        keeps (a window stage has one per grouping). ``[]``: the stage keeps no
        keyed state, or its key is the one of the stage before it."""
        return []

    @abstractmethod
    def process(self, batch: TraceBatch, ctx: Context) -> Output: ...

    def retention(self) -> Retention:
        """How much past input ``rebuild`` needs (nothing by default)."""
        return Retention()

    def tick(self, ctx: Context) -> Output:
        return Output()

    def flush(self, ctx: Context) -> Output:
        return Output()

    def snapshot(self) -> bytes | None:
        return None

    def restore(self, blob: bytes) -> None:  # noqa: B027 - stateless stages need nothing
        pass

    def rebuild(self, batch: TraceBatch, ctx: Context) -> None:  # noqa: B027
        pass

    def resume(self, store: StoreReader, ctx: Context) -> Output:
        """Continue from what an earlier run left in the store (a replay, which has no
        checkpoints). Returns rows that run could not write before it stopped."""
        return Output()

    def close(self, timeout: float = 10.0) -> None:  # noqa: B027
        pass


class StoreReader(Protocol):
    """The reads a stage may make to resume from what an earlier run stored."""

    def rows(
        self, sql: str, parameters: dict[str, Any] | None = None, **settings: Any
    ) -> list[tuple[Any, ...]]: ...

    def raw_columns(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[list[Any]]: ...
