"""The writer against the real engine (chDB): lineage, roll-back, insert tokens."""

from __future__ import annotations

from datetime import UTC, datetime

from llmpulse.schemas.rows import REJECTED_COLUMNS, names
from llmpulse.stages.base import Rows
from llmpulse.store.client import SerialClient
from llmpulse.store.writer import Lineage, StoreWriter

NOW = datetime(2026, 2, 1, tzinfo=UTC)


def rejected(*ids: str) -> Rows:
    rows = [(i, NOW, f"src:{i}", "reason", "cat", "field", "", "raw") for i in ids]
    return Rows("rejected_events", rows, names(REJECTED_COLUMNS))


def stored(client: SerialClient) -> list[tuple[object, ...]]:
    return client.rows("SELECT rejection_id, _task, _gen, _seq FROM rejected_events ORDER BY 1")


def test_rows_past_a_checkpoint_are_undone_and_written_again(client: SerialClient) -> None:
    w = StoreWriter(client)
    w.write([rejected("a")], Lineage("t/0", 1, 1))
    w.write([rejected("b", "c")], Lineage("t/0", 1, 2))  # past checkpoint 1: never committed
    w.write([rejected("x")], Lineage("t/1", 1, 2))  # another task: untouched
    assert w.lineage_in_store() == {("t/0", 1): 2, ("t/1", 1): 2}
    w.roll_back([("t/0", 1, 1)])
    assert stored(client) == [("a", "t/0", 1, 1), ("x", "t/1", 1, 2)]
    # The next owner does that work again, in its own generation and with the same
    # seq: the same content must not be taken for a retried insert and dropped.
    w.write([rejected("b", "c")], Lineage("t/0", 2, 2))
    assert [r[0] for r in stored(client)] == ["a", "b", "c", "x"]
    # A retried insert of the very same block is dropped by the engine.
    w.write([rejected("b", "c")], Lineage("t/0", 2, 2))
    assert len(stored(client)) == 4


def test_roll_back_of_a_task_without_checkpoint_removes_every_generation(
    client: SerialClient,
) -> None:
    w = StoreWriter(client)
    w.write([rejected("a")], Lineage("t/0", 1, 1))
    w.write([rejected("b")], Lineage("t/0", 2, 1))
    w.roll_back([("t/0", None, 0)])
    assert stored(client) == []
