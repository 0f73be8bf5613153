"""Read-only SQL: the query interface for analysts and for ``llmpulse sql``.

Queries run with ClickHouse's ``readonly=1`` setting, so the engine itself
refuses writes and DDL; an embedded store owned by the worker is queried
through the worker's ``/sql`` endpoint, which calls the same function.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from llmpulse.errors import ReadOnlyQueryError, StoreError
from llmpulse.store.client import SerialClient

QueryResult = tuple[list[str], list[tuple[Any, ...]]]


def run_readonly(client: SerialClient, sql: str) -> QueryResult:
    try:
        return client.query(sql, readonly=1)
    except Exception as exc:
        text = str(exc).strip()
        if "READONLY" in text or "readonly mode" in text:
            raise ReadOnlyQueryError(client.dsn, "only read queries are allowed here") from exc
        raise StoreError(client.dsn, _first_line(text)) from exc


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return text


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):  # NaN has no JSON spelling
        return None
    return value


def encode_result(result: QueryResult) -> bytes:
    columns, rows = result
    payload = {"columns": columns, "rows": [[jsonable(v) for v in r] for r in rows]}
    return json.dumps(payload).encode()


def query_worker(base_url: str, sql: str, timeout: float = 60.0) -> QueryResult:
    """Run ``sql`` through a worker's read-only endpoint (``POST {base_url}/sql``)."""
    req = urllib.request.Request(
        base_url.rstrip("/") + "/sql",
        data=sql.encode(),
        headers={"Content-Type": "text/plain"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read()).get("error", str(exc))
        except ValueError:
            problem = str(exc)
        if exc.code == 403:
            raise ReadOnlyQueryError(base_url, problem) from exc
        raise StoreError(base_url, problem) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise StoreError(base_url, f"worker SQL endpoint unreachable ({exc})") from exc
    return list(payload["columns"]), [tuple(r) for r in payload["rows"]]
