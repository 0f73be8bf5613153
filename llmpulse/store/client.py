"""Opening the ClickHouse store through clickhouse-connect (chDB or a server)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from llmpulse.errors import StoreError, StoreLockedError


def is_embedded(dsn: str) -> bool:
    return dsn.startswith("chdb:")


def embedded_path(dsn: str) -> Path | None:
    """The directory of an on-disk chDB store, or None (memory or a server)."""
    if not dsn.startswith("chdb://") or dsn.startswith("chdb://memory"):
        return None
    return Path(dsn.removeprefix("chdb://"))


def connect(dsn: str, database: str | None = None) -> Client:
    """A clickhouse-connect client for ``dsn``; creates ``database`` if needed.

    An on-disk chDB store is locked by the process that opened it: a second
    process gets ``StoreLockedError`` (the worker serves read-only SQL instead).
    """
    path = embedded_path(dsn)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        client = clickhouse_connect.get_client(dsn=dsn)
        if database:
            client.command(f"CREATE DATABASE IF NOT EXISTS {quote_ident(database)}")
            client = clickhouse_connect.get_client(dsn=dsn, database=database)
    except Exception as exc:
        text = str(exc)
        if path is not None and (path / "status").exists() and "initializing" in text.lower():
            raise StoreLockedError(
                dsn, "the embedded store is in use by another process (a running worker?)"
            ) from exc
        raise StoreError(dsn, text.splitlines()[0] if text else type(exc).__name__) from exc
    return client


def quote_ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class SerialClient:
    """A client whose calls are serialised: chDB runs in-process, and the worker
    writes from its batch thread while its SQL endpoint reads from another."""

    def __init__(self, client: Client, dsn: str) -> None:
        self.raw = client
        self.dsn = dsn
        self._lock = threading.RLock()

    @contextmanager
    def locked(self) -> Iterator[Client]:
        with self._lock:
            yield self.raw

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        with self._lock:
            return self.raw.command(sql, parameters=parameters)

    def rows(
        self, sql: str, parameters: dict[str, Any] | None = None, **settings: Any
    ) -> list[tuple[Any, ...]]:
        with self._lock:
            result = self.raw.query(sql, parameters=parameters, settings=settings or None)
            return [tuple(r) for r in result.result_rows]

    def query(
        self, sql: str, parameters: dict[str, Any] | None = None, **settings: Any
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self._lock:
            result = self.raw.query(sql, parameters=parameters, settings=settings or None)
            return list(result.column_names), [tuple(r) for r in result.result_rows]

    def raw_columns(self, sql: str, parameters: dict[str, Any] | None = None) -> list[list[Any]]:
        """Result as columns (for loading many rows into numpy)."""
        with self._lock:
            result = self.raw.query(sql, parameters=parameters)
            return [list(c) for c in result.result_columns]

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        settings: dict[str, Any] | None = None,
    ) -> None:
        with self._lock:
            self.raw.insert(table, rows, column_names=list(column_names), settings=settings)

    def insert_arrow(self, table: str, data: Any, settings: dict[str, Any] | None = None) -> None:
        """Insert a pyarrow Table (whole columns, no Python object per value)."""
        with self._lock:
            self.raw.insert_arrow(table, data, settings=settings)

    def close(self) -> None:
        with self._lock:
            self.raw.close()
