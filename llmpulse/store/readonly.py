"""Read-only SQL: the query interface for analysts, ``llmpulse sql`` and ``/sql``.

Three layers, each enough on its own for writes:

1. The engine parses the query (``parseQueryToJSON``, ``formatQuery``) without
   running it; the guard walks that syntax tree and refuses anything but one
   SELECT (or SHOW TABLES / EXPLAIN): no second statement, no ``INTO OUTFILE``,
   no SETTINGS or FORMAT clause, no table function outside a harmless few (none
   at all for a tenant), no function that reads files, dictionaries or other
   tables (``file()``, ``dictGet``, ``joinGet``...). ``readonly`` alone does not
   stop ``file()`` as a scalar function nor ``INTO OUTFILE`` in chDB, and a
   ``SET`` slipped through would stay in the session of a shared client.
2. What runs is the engine's own formatting of the checked tree, not the text
   received, so comments, semicolons and quoting tricks cannot change its meaning.
3. It runs with ``readonly=1``, so the engine itself refuses writes, DDL, SYSTEM
   and any change of settings; a tenant's query also carries
   ``additional_table_filters`` for every table, which the engine applies to each
   read of the table, also through views, joins and subqueries.

Every refusal is a ``ReadOnlyQueryError`` (HTTP 403 on ``/sql``).
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

from llmpulse.errors import ReadOnlyQueryError, StoreError
from llmpulse.store.client import SerialClient

QueryResult = tuple[list[str], list[tuple[Any, ...]]]

# Statement kinds accepted: for anyone, and for a tenant-scoped token.
_ALLOWED_ROOTS: Final = frozenset(
    {"SelectWithUnionQuery", "SelectIntersectExceptQuery", "ShowTablesQuery", "ExplainQuery"}
)
_TENANT_ROOTS: Final = frozenset({"SelectWithUnionQuery", "SelectIntersectExceptQuery"})
# Table functions that generate rows or read tables the reader may read anyway.
SAFE_TABLE_FUNCTIONS: Final = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateSeries",
     "values", "null", "view", "merge", "primes"}
)  # fmt: skip
# Scalar functions that reach outside the query's tables or the machine.
_DENIED_FUNCTIONS: Final = frozenset(
    {"file", "joinget", "joingetornull", "getserversetting", "getmacro", "getclienthttpheader",
     "filesystemavailable", "filesystemcapacity", "filesystemunreserved", "fuzzquery", "input"}
)  # fmt: skip
_DENIED_PREFIXES: Final = ("dictget", "dicthas", "dictisin")
# Tables every tenant may read whole: reference data with nothing per tenant.
SHARED_TABLES: Final = frozenset({"model_prices", "schema_migrations"})
_TENANT_COLUMN: Final = "tenant"


def quote_string(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class TenantFilters:
    """Row filters of one tenant for every table of the database: a filter
    expression per table, and the tables a tenant may not read at all."""

    filters: dict[str, str]
    denied: frozenset[str]


def tenant_filters(client: SerialClient, tenant: str) -> TenantFilters:
    """Filters of ``tenant`` for the current database's tables: rows whose
    ``tenant`` column is the tenant; for tables without one, their ``labels``
    map's tenant, or the tenant's own budgets; shared reference tables whole; any
    other table nothing (``0``), so a table added later is closed until mapped."""
    rows = client.rows(
        "SELECT t.name, t.engine, groupArray(c.name) FROM system.tables AS t"
        " LEFT JOIN system.columns AS c ON c.database = t.database AND c.table = t.name"
        " WHERE t.database = currentDatabase() GROUP BY t.name, t.engine"
    )
    t = quote_string(tenant)
    filters: dict[str, str] = {}
    denied: set[str] = set()
    for name, engine, columns in rows:
        if engine in ("View", "MaterializedView"):
            continue  # filtered where it reads its tables
        cols = set(columns)
        if _TENANT_COLUMN in cols:
            filters[name] = f"{_TENANT_COLUMN} = {t}"
        elif name == "budgets":
            filters[name] = f"scope = 'tenant' AND name = {t}"
        elif "labels" in cols:
            filters[name] = f"labels['tenant'] = {t}"
        elif name not in SHARED_TABLES:
            filters[name] = "0"
            denied.add(name)
    return TenantFilters(filters, frozenset(denied))


@dataclass(frozen=True)
class CheckedQuery:
    sql: str  # the engine's formatting of the accepted query: what runs
    tables: frozenset[tuple[str, ...]]  # table references: (table,) or (database, table)


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _refuse(client: SerialClient, why: str) -> ReadOnlyQueryError:
    return ReadOnlyQueryError(client.dsn, why)


def check_query(client: SerialClient, sql: str, *, tenant: str | None = None) -> CheckedQuery:
    """Parse ``sql`` with the engine and apply the guard's rules (module docstring)."""
    try:
        rows = client.rows(
            "SELECT parseQueryToJSON({q:String}), formatQuery({q:String})", {"q": sql}, readonly=1
        )
    except Exception as exc:
        text = str(exc)
        if "parseQueryToJSON" in text and "not supported" in text:
            raise _refuse(
                client,
                "only SELECT, SHOW TABLES and EXPLAIN queries are allowed here"
                " (for columns, query system.columns)",
            ) from None
        if "Multi-statements are not allowed" in text:
            raise _refuse(client, "one statement at a time") from None
        raise StoreError(client.dsn, _first_line(_strip_scope(text))) from exc
    tree = json.loads(rows[0][0])
    formatted = str(rows[0][1])
    root = tree.get("type")
    roots = _TENANT_ROOTS if tenant is not None else _ALLOWED_ROOTS
    if root not in roots:
        kinds = "SELECT" if tenant is not None else "SELECT, SHOW TABLES and EXPLAIN"
        raise _refuse(client, f"only {kinds} queries are allowed here, got {root}")
    tables: set[tuple[str, ...]] = set()
    for node in _nodes(tree):
        if node.get("out_file") is not None or node.get("is_into_outfile_with_stdout"):
            raise _refuse(client, "INTO OUTFILE is not allowed")
        if node.get("format_ast") is not None:
            raise _refuse(client, "FORMAT is chosen by the endpoint, drop the FORMAT clause")
        if node.get("settings") is not None or node.get("type") == "SetQuery":
            raise _refuse(client, "settings cannot be changed here (drop the SETTINGS clause)")
        fn = node.get("table_function")
        if isinstance(fn, dict):
            name = str(fn.get("name", ""))
            if tenant is not None:
                raise _refuse(
                    client, f"table functions are not allowed with a tenant token, got {name}()"
                )
            if name not in SAFE_TABLE_FUNCTIONS:
                raise _refuse(client, f"table function {name}() is not allowed here")
        kind = node.get("type")
        if kind == "Function":
            name = str(node.get("name", ""))
            low = name.lower()
            if low in _DENIED_FUNCTIONS or low.startswith(_DENIED_PREFIXES):
                raise _refuse(client, f"function {name}() is not allowed here")
        elif kind == "TableIdentifier":
            parts = node.get("name_parts") or [node.get("name", "")]
            tables.add(tuple(str(p) for p in parts))
    return CheckedQuery(formatted, frozenset(tables))


def _check_tenant_tables(client: SerialClient, checked: CheckedQuery, scope: TenantFilters) -> None:
    database = client.rows("SELECT currentDatabase()")[0][0]
    for parts in checked.tables:
        shown = ".".join(parts)
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != database):
            raise _refuse(client, f"a tenant token reads only this database's tables, got {shown}")
        if parts[-1] in scope.denied:
            raise _refuse(
                client, f"table {shown} has no tenant column: not readable with a tenant token"
            )


def run_readonly(
    client: SerialClient,
    sql: str,
    *,
    tenant: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> QueryResult:
    """Run one read-only query; ``tenant`` restricts it to that tenant's rows.

    ``settings`` are extra query limits (``max_execution_time``...) set by the
    server, never by the query text.
    """
    checked = check_query(client, sql, tenant=tenant)
    query_settings: dict[str, Any] = dict(settings or {})
    if tenant is not None:
        scope = tenant_filters(client, tenant)
        _check_tenant_tables(client, checked, scope)
        query_settings["additional_table_filters"] = scope.filters
    # Last, so the settings before it are applied while changes are still allowed.
    query_settings["readonly"] = 1
    try:
        return client.query(checked.sql, **query_settings)
    except Exception as exc:
        text = str(exc).strip()
        if "READONLY" in text or "readonly mode" in text:
            raise ReadOnlyQueryError(client.dsn, "only read queries are allowed here") from exc
        raise StoreError(client.dsn, _first_line(_strip_scope(text))) from exc


def _strip_scope(text: str) -> str:
    # The engine quotes the whole query, settings included, after "In scope":
    # a tenant's filters are not for the caller to read.
    cut = text.find(" In scope ")
    return text[:cut] if cut >= 0 else text


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


def query_worker(
    base_url: str, sql: str, timeout: float = 60.0, *, token: str | None = None
) -> QueryResult:
    """Run ``sql`` through a worker's read-only endpoint (``POST {base_url}/sql``),
    with ``Authorization: Bearer <token>`` when a token is given."""
    headers = {"Content-Type": "text/plain"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        base_url.rstrip("/") + "/sql", data=sql.encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read()).get("error", str(exc))
        except ValueError:
            problem = str(exc)
        if exc.code == 401:
            raise StoreError(
                base_url, f"{problem} (set LLMPULSE_WORKER_TOKEN to the worker's token)"
            ) from None
        if exc.code == 403:
            raise ReadOnlyQueryError(base_url, problem) from None
        raise StoreError(base_url, problem) from None
    except (urllib.error.URLError, OSError) as exc:
        raise StoreError(base_url, f"worker SQL endpoint unreachable ({exc})") from None
    return list(payload["columns"]), [tuple(r) for r in payload["rows"]]
