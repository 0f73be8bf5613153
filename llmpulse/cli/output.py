"""Rendering query results as a table, CSV or a JSON array of row objects."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from llmpulse.store.readonly import jsonable


def as_json(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    return json.dumps([dict(zip(columns, (jsonable(v) for v in r), strict=True)) for r in rows])


def as_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_plain(v) for v in r])
    return buf.getvalue()


def as_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    t = Table(*columns, show_lines=False)
    for r in rows:
        t.add_row(*(_plain(v) for v in r))
    return t


def _plain(v: Any) -> str:
    j = jsonable(v)
    if j is None:
        return ""
    if isinstance(j, list | dict):
        return json.dumps(j)
    return str(j)
