"""Writing the stages' rows: the one place rows reach ClickHouse.

The writer knows tables only as names and rows (``llmpulse.stages.base.Rows``);
what a row means belongs to the stage that made it. Every insert carries a
deduplication token derived from its content, so a retried insert of the same
block is dropped by ClickHouse itself, and the tables are ReplacingMergeTree on
their ids as a backstop.

Rows written by a worker carry their *lineage*: the task (``events/3``), the
generation of its ownership and the checkpoint sequence they belong to
(``_task``, ``_gen``, ``_seq``). Rows past a task's last checkpoint are undone
when the task restarts from it (:meth:`StoreWriter.roll_back`), so work
repeated after a crash is never stored twice. Replays leave the lineage empty.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pyarrow as pa  # type: ignore[import-untyped]

from llmpulse.stages.base import Rows
from llmpulse.store.client import SerialClient

# Tables whose rows carry a lineage, in the order a batch writes them: raw rows
# before what is derived from them.
LINEAGE_TABLES: Final = (
    "rejected_events",
    "traces",
    "window_stats",
    "drift_baselines",
    "drift_scores",
    "drift_events",
    "alerts",
)
_ORDER: Final = {t: i for i, t in enumerate(LINEAGE_TABLES)}


@dataclass(frozen=True)
class Lineage:
    """Which task wrote a row, in which generation of its ownership, for which checkpoint."""

    task: str
    generation: int
    seq: int


def _token(table: str, rows: Rows, lineage: Lineage | None) -> str:
    h = hashlib.blake2b(table.encode(), digest_size=16)
    if lineage is not None:
        h.update(f"{lineage.task}\0{lineage.generation}\0{lineage.seq}".encode())
    data = rows.data
    if isinstance(data, pa.Table):
        first = data.column(0)
        h.update(str(data.num_rows).encode())
        for chunk in first.chunks:
            for buf in chunk.buffers():
                if buf is not None:
                    h.update(memoryview(buf))
    else:
        h.update(repr([r[0] for r in data]).encode())
        h.update(str(len(data)).encode())
    return h.hexdigest()


def _with_lineage(table: pa.Table, lineage: Lineage) -> pa.Table:
    n = table.num_rows
    return (
        table.append_column("_task", pa.array([lineage.task] * n, pa.string()))
        .append_column("_gen", pa.array([lineage.generation] * n, pa.uint32()))
        .append_column("_seq", pa.array([lineage.seq] * n, pa.uint64()))
    )


class StoreWriter:
    def __init__(self, client: SerialClient) -> None:
        self.client = client

    # -- writes ---------------------------------------------------------------------------

    def write(self, rows: Iterable[Rows], lineage: Lineage | None = None) -> int:
        """Insert every table's rows (one insert per table); returns rows written."""
        by_table: dict[str, list[Rows]] = {}
        for r in rows:
            if len(r):
                by_table.setdefault(r.table, []).append(r)
        written = 0
        for table in sorted(by_table, key=lambda t: _ORDER.get(t, len(_ORDER))):
            merged = _merge(by_table[table])
            self._insert(merged, lineage)
            written += len(merged)
        return written

    def _insert(self, rows: Rows, lineage: Lineage | None) -> None:
        settings = {"insert_deduplication_token": _token(rows.table, rows, lineage)}
        data = rows.data
        if isinstance(data, pa.Table):
            if lineage is not None and rows.table in _ORDER:
                data = _with_lineage(data, lineage)
            self.client.insert_arrow(rows.table, data, settings=settings)
            return
        columns = list(rows.columns or ())
        values: Sequence[Sequence[Any]] = data
        if lineage is not None and rows.table in _ORDER:
            columns += ["_task", "_gen", "_seq"]
            extra = (lineage.task, lineage.generation, lineage.seq)
            values = [(*r, *extra) for r in data]
        self.client.insert(rows.table, values, columns, settings=settings)

    def roll_back(self, task: str, generation: int, after_seq: int) -> None:
        """Delete the rows ``task`` wrote in ``generation`` after checkpoint ``after_seq``:
        work that a restart from that checkpoint does again."""
        params = {"t": task, "g": generation, "s": after_seq}
        for table in LINEAGE_TABLES:
            self.client.command(
                f"DELETE FROM {table} WHERE _task = {{t:String}} AND _gen = {{g:UInt32}} "
                "AND _seq > {s:UInt64}",
                params,
            )

    def write_prices(self, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        if rows:
            self.client.insert("model_prices", rows, columns)


def _merge(parts: list[Rows]) -> Rows:
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if isinstance(first.data, pa.Table):
        return Rows(first.table, pa.concat_tables([p.data for p in parts]), first.columns)
    merged: list[Sequence[Any]] = []
    for p in parts:
        merged.extend(p.data)
    return Rows(first.table, merged, first.columns)
