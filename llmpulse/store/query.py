"""Where a read-only query goes: the store itself, or the worker that owns it."""

from __future__ import annotations

from llmpulse.errors import StoreLockedError
from llmpulse.runtime import open_store
from llmpulse.settings import Settings
from llmpulse.store.readonly import QueryResult, query_worker, run_readonly


def query_store(settings: Settings, sql: str) -> QueryResult:
    try:
        client = open_store(settings)
    except StoreLockedError:
        # An embedded store is owned by the running worker; it answers for it.
        return query_worker(settings.worker_url, sql)
    try:
        return run_readonly(client, sql)
    finally:
        client.close()
