"""PII redaction against a real chDB store: a batch reaches the store redacted, and the
migration adds the redaction column (the redaction itself: tests/unit/privacy)."""

from __future__ import annotations

from datetime import UTC, datetime

from llmpulse.privacy import (
    RedactionPolicy,
    redact_batch,
)
from tests.helpers import event
from tests.unit.privacy.test_policy import _batch


def test_redacted_batch_is_stored_with_counts_and_without_pii(settings: object) -> None:
    from llmpulse.processors.batch_cost import price_batch
    from llmpulse.processors.cost import PriceTable
    from llmpulse.runtime import prepare_store
    from llmpulse.stages.base import Rows
    from llmpulse.store.encode import traces_table
    from llmpulse.store.writer import StoreWriter

    client = prepare_store(settings)  # type: ignore[arg-type]
    try:
        batch = _batch(
            event(1, prompt="I am ann@example.com, card 4111-1111-1111-1111"),
            event(2, prompt="plain"),
        )
        redact_batch(batch, RedactionPolicy())  # type: ignore[arg-type]
        price_batch(PriceTable.default(), batch)  # type: ignore[arg-type]
        table = traces_table(batch, datetime(2026, 1, 2, tzinfo=UTC), store_text=True)  # type: ignore[arg-type]
        StoreWriter(client).write([Rows("traces", table)])
        rows = client.rows("SELECT event_id, prompt, redactions FROM traces ORDER BY event_id")
        assert rows == [
            ("evt-1", "I am [EMAIL], card [CARD]", {"card": 1, "email": 1}),
            ("evt-2", "plain", {}),
        ]
        leaked = client.rows("SELECT count() FROM traces WHERE position(prompt, 'ann@') > 0")
        assert leaked == [(0,)]
    finally:
        client.close()


def test_migration_7_adds_the_column_to_an_existing_traces_table(settings: object) -> None:
    from llmpulse.runtime import open_store
    from llmpulse.schemas.rows import TRACE_COLUMNS, ddl_columns
    from llmpulse.store.migrations import migrate

    client = open_store(settings)  # type: ignore[arg-type]
    try:
        old = tuple(c for c in TRACE_COLUMNS if c[0] != "redactions")
        client.command(
            f"CREATE TABLE traces ({ddl_columns(old)}) ENGINE = MergeTree ORDER BY event_id"
        )
        client.command("INSERT INTO traces (event_id) VALUES ('old')")
        migrate(client)
        migrate(client)  # idempotent
        assert client.rows("SELECT event_id, redactions FROM traces") == [("old", {})]
    finally:
        client.close()
