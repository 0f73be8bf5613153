"""Where a read-only query goes: the store itself, or the worker that owns it."""

from __future__ import annotations

from llmpulse.errors import ConfigError, StoreLockedError
from llmpulse.runtime import open_store
from llmpulse.settings import Settings
from llmpulse.store.readonly import QueryResult, query_worker, run_readonly


def sql_limits(settings: Settings) -> dict[str, float]:
    """Query settings the server imposes on every read-only query."""
    return {"max_execution_time": settings.worker.sql_max_execution_s}


def query_store(settings: Settings, sql: str, *, tenant: str | None = None) -> QueryResult:
    """Run a read-only query (only ``tenant``'s rows when given). An embedded
    store owned by a running worker is queried through the worker's ``/sql``,
    with ``worker.token`` as the bearer token."""
    try:
        client = open_store(settings)
    except StoreLockedError:
        # An embedded store is owned by the running worker; it answers for it,
        # scoped by the token it is sent (a tenant token scopes to its tenant).
        if tenant is not None:
            raise ConfigError(
                "--tenant",
                "the store is owned by a running worker: scope with the tenant's token"
                " (LLMPULSE_WORKER_TOKEN) instead",
            ) from None
        token = settings.worker.token.get_secret_value() if settings.worker.token else None
        return query_worker(settings.worker_url, sql, token=token)
    try:
        return run_readonly(client, sql, tenant=tenant, settings=sql_limits(settings))
    finally:
        client.close()
