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
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pyarrow as pa  # type: ignore[import-untyped]

from llmpulse.stages.base import Rows
from llmpulse.store.client import SerialClient

log = logging.getLogger("llmpulse.store")

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


def _token(rows: Rows) -> str:
    """A deduplication token from the rows' content and lineage: a retried insert is
    dropped, while the same rows written again by a later generation of their task
    (after the earlier ones were undone) are not mistaken for a retry."""
    h = hashlib.blake2b(rows.table.encode(), digest_size=16)
    data = rows.data
    if isinstance(data, pa.Table):
        h.update(str(data.num_rows).encode())
        lineage = [c for c in ("_task", "_gen", "_seq") if c in data.column_names]
        names = [data.column_names[0], *lineage]
        for name in names:
            for chunk in data.column(name).chunks:
                for buf in chunk.buffers():
                    if buf is not None:
                        h.update(memoryview(buf))
    else:
        h.update(str(len(data)).encode())
        tail = 3 if rows.columns and rows.columns[-1] == "_seq" else 0
        h.update(repr([(r[0], *r[len(r) - tail :]) for r in data]).encode())
    return h.hexdigest()


def _tagged(rows: Rows, lineage: Lineage | None) -> Rows:
    """``rows`` with the lineage columns (tables without a lineage are left alone)."""
    if lineage is None or rows.table not in _ORDER:
        return rows
    data = rows.data
    if isinstance(data, pa.Table):
        n = data.num_rows
        table = (
            data.append_column("_task", pa.array([lineage.task] * n, pa.string()))
            .append_column("_gen", pa.array([lineage.generation] * n, pa.uint32()))
            .append_column("_seq", pa.array([lineage.seq] * n, pa.uint64()))
        )
        return Rows(rows.table, table, rows.columns)
    extra = (lineage.task, lineage.generation, lineage.seq)
    columns = [*(rows.columns or ()), "_task", "_gen", "_seq"]
    return Rows(rows.table, [(*r, *extra) for r in data], columns)


class StoreWriter:
    def __init__(self, client: SerialClient) -> None:
        self.client = client

    # -- writes ---------------------------------------------------------------------------

    def write(self, rows: Iterable[Rows], lineage: Lineage | None = None) -> int:
        """Insert every table's rows (one insert per table); returns rows written."""
        return self.write_tagged((r, lineage) for r in rows)

    def write_tagged(self, items: Iterable[tuple[Rows, Lineage | None]]) -> int:
        """Like :meth:`write`, each part with the lineage of the task that made it."""
        by_table: dict[str, list[Rows]] = {}
        for rows, lineage in items:
            if len(rows):
                by_table.setdefault(rows.table, []).append(_tagged(rows, lineage))
        written = 0
        for table in sorted(by_table, key=lambda t: _ORDER.get(t, len(_ORDER))):
            merged = _merge(by_table[table])
            self._insert(merged)
            written += len(merged)
        return written

    def _insert(self, rows: Rows) -> None:
        settings = {"insert_deduplication_token": _token(rows)}
        data = rows.data
        if isinstance(data, pa.Table):
            self.client.insert_arrow(rows.table, data, settings=settings)
        else:
            self.client.insert(rows.table, data, list(rows.columns or ()), settings=settings)

    def lineage_in_store(self) -> dict[tuple[str, int], int]:
        """(task, generation) -> the highest checkpoint seq of any row stored for it."""
        found: dict[tuple[str, int], int] = {}
        for per_table in self._lineage_by_table().values():
            for key, seq in per_table.items():
                found[key] = max(found.get(key, 0), seq)
        return found

    def _lineage_by_table(self) -> dict[str, dict[tuple[str, int], int]]:
        out: dict[str, dict[tuple[str, int], int]] = {}
        for table in LINEAGE_TABLES:
            rows = self.client.rows(
                f"SELECT _task, _gen, max(_seq) FROM {table} WHERE _task != '' GROUP BY _task, _gen"
            )
            out[table] = {(str(t), int(g)): int(s) for t, g, s in rows}
        return out

    def roll_back(self, undo: Iterable[tuple[str, int | None, int]]) -> int:
        """Delete rows written past their task's last checkpoint: for each ``(task,
        generation, after_seq)``, the rows of that generation (every generation when
        None) with a higher seq. A restart from the checkpoint does that work again.
        One look at what is stored first, so tables and tasks without such rows cost
        no delete. Returns the number of tables changed."""
        wanted = list(undo)
        if not wanted:
            return 0
        changed = 0
        for table, stored in self._lineage_by_table().items():
            terms = []
            params: dict[str, Any] = {}
            for i, (task, gen, seq) in enumerate(wanted):
                if not any(
                    t == task and (gen is None or g == gen) and top > seq
                    for (t, g), top in stored.items()
                ):
                    continue
                params[f"t{i}"], params[f"s{i}"] = task, seq
                cond = f"_task = {{t{i}:String}} AND _seq > {{s{i}:UInt64}}"
                if gen is not None:
                    params[f"g{i}"] = gen
                    cond += f" AND _gen = {{g{i}:UInt32}}"
                terms.append(f"({cond})")
            if terms:
                log.info("undoing %s rows of %d task(s) past their checkpoint", table, len(terms))
                self.client.command(f"DELETE FROM {table} WHERE {' OR '.join(terms)}", params)
                changed += 1
        return changed

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
