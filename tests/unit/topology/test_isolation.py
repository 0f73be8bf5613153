"""Poison events are set aside one by one; everything around them goes on once."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from llmpulse.schemas.batch import TraceBatch, event_values
from llmpulse.schemas.event import TraceEvent
from llmpulse.stages.base import Context, IngestStats, Output, Stage
from llmpulse.topology.isolation import poison_rejection, set_aside
from llmpulse.topology.task import Task
from tests.helpers import event

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def batch_of(ids: list[str]) -> TraceBatch:
    events = [TraceEvent.model_validate(event(i, event_id=e)) for i, e in enumerate(ids)]
    return TraceBatch.from_values([event_values(e) for e in events], ["kafka:t/0@1"] * len(ids))


class Counting(Stage):
    """Counts what it sees, and raises (before touching its count) on poison events:
    a stage that keeps the protocol's promise of no change when it raises."""

    name = "counting"

    def __init__(self, poison: set[str], flaky: int = 0) -> None:
        self.poison = poison
        self.seen: list[str] = []
        self.flaky = flaky  # calls that fail whatever their input (passing trouble)
        self.calls = 0

    def process(self, batch: TraceBatch, ctx: Context) -> Output:
        self.calls += 1
        ids = batch.event_id.tolist()
        if self.flaky > 0:
            self.flaky -= 1
            raise ConnectionError("passing trouble")
        if self.poison & set(ids):
            raise ValueError("overflow in the price of " + ",".join(sorted(self.poison & set(ids))))
        self.seen.extend(ids)
        return Output(batch=batch)


class After(Stage):
    """The next stage: it must never see a poisoned event."""

    name = "after"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def process(self, batch: TraceBatch, ctx: Context) -> Output:
        self.seen.extend(batch.event_id.tolist())
        return Output()


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 80),
    poison=st.sets(st.integers(0, 79), max_size=6),
    flaky=st.integers(0, 2),
)
def test_each_poisoned_event_is_set_aside_once_and_every_other_counted_once(
    n: int, poison: set[int], flaky: int
) -> None:
    ids = [f"e{i}" for i in range(n)]
    bad = {f"e{i}" for i in poison if i < n}
    first, second = Counting(bad, flaky=flaky), After()
    task = Task("t", [first, second], retries=2)
    stats = IngestStats()
    out = task.process(batch_of(ids), now=NOW, wall_s=0.0, stats=stats)
    good = [i for i in ids if i not in bad]
    assert first.seen == good  # in order, once each: nothing counted twice
    assert second.seen == good
    assert out.batch is not None and out.batch.event_id.tolist() == good
    assert sorted(str(p.event.event_id[0]) for p in out.poisoned) == sorted(bad)
    assert all(p.step == "counting" and "overflow" in p.error for p in out.poisoned)

    rejections = set_aside(out, now=NOW, stats=stats, retries=task.retries)
    assert sorted(r.event_id for r in rejections) == sorted(bad)
    assert stats.rejected["counting:poison"] == len(bad)
    assert not out.poisoned and (len(out.rows) == 1) == bool(bad)


def test_a_passing_failure_is_retried_not_set_aside() -> None:
    stage = Counting(set(), flaky=2)
    out = Task("t", [stage], retries=2).process(
        batch_of(["a", "b"]), now=NOW, wall_s=0.0, stats=IngestStats()
    )
    assert out.poisoned == [] and stage.seen == ["a", "b"] and stage.calls == 3


def test_the_rejection_names_the_step_and_keeps_the_event() -> None:
    stage = Counting({"x"})
    out = Task("t", [stage], retries=1).process(
        batch_of(["x"]), now=NOW, wall_s=0.0, stats=IngestStats()
    )
    (p,) = out.poisoned
    r = poison_rejection(p, retries=1)
    assert r.category == "counting:poison" and r.field == "counting"
    assert r.reason.startswith("step 'counting' failed on this event 2 times: ValueError")
    assert b'"event_id":"x"' in r.raw and r.source == "kafka:t/0@1"
    # The same event from the same place: the same id (a redelivery is stored once).
    assert poison_rejection(p, retries=1).rejection_id == r.rejection_id
