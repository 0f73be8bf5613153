"""The ingest pipeline against the real ClickHouse engine (chDB) and the memory fake."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from llmpulse.pipeline import IngestPipeline
from llmpulse.processors.cost import PriceTable
from llmpulse.processors.traces import RawMessage, TraceProcessor
from llmpulse.runtime import build_pipeline, prepare_store
from llmpulse.settings import Settings
from llmpulse.stages.base import Rows
from llmpulse.stages.intake import Intake
from llmpulse.stages.traces import TraceStage
from llmpulse.store.client import SerialClient
from llmpulse.store.migrations import LATEST_VERSION, MIGRATIONS, migrate
from llmpulse.store.writer import Lineage, StoreWriter
from llmpulse.topology.task import Task
from tests.helpers import event, raw

FIXED_NOW = datetime(2026, 2, 1, tzinfo=UTC)


def msgs(events: list[dict], prefix: str = "t") -> list[RawMessage]:
    return [RawMessage(raw(e), f"{prefix}:{i}") for i, e in enumerate(events)]


def count(client: SerialClient, sql: str) -> int:
    return int(client.rows(sql)[0][0])


def test_migrate_is_idempotent(client: SerialClient) -> None:
    assert migrate(client) == []
    versions = client.rows("SELECT version FROM schema_migrations ORDER BY version")
    assert [v[0] for v in versions] == sorted(m.version for m in MIGRATIONS)
    assert versions[-1][0] == LATEST_VERSION
    tables = {r[0] for r in client.rows("SHOW TABLES")}
    assert {"traces", "rejected_events", "model_prices", "schema_migrations"} <= tables


def test_retention_ttl_is_applied_and_removed(client: SerialClient) -> None:
    migrate(client, retention_days=30)
    ddl = client.rows("SHOW CREATE TABLE traces")[0][0]
    assert "TTL toDateTime(ingested_at) + toIntervalDay(30)" in ddl
    migrate(client, retention_days=None)
    assert " TTL " not in client.rows("SHOW CREATE TABLE traces")[0][0]


def test_valid_invalid_and_duplicates_exact_counts(
    settings: Settings, client: SerialClient
) -> None:
    pipeline = build_pipeline(settings, client, clock=lambda: FIXED_NOW)
    good = [event(i) for i in range(50)]
    bad = [event(100 + i, latency_ms=-i - 1) for i in range(7)]
    batch = msgs(good + bad)
    out = pipeline.handle(batch)
    assert (len(out.written), len(out.rejections)) == (50, 7)
    # The same messages again (a redelivery) and a second pipeline (a restart).
    pipeline.handle(batch)
    restarted = build_pipeline(settings, client, clock=lambda: FIXED_NOW)
    again = restarted.handle(batch)
    assert again.stats.accepted == 0 and again.stats.duplicates == 50
    assert count(client, "SELECT count() FROM traces") == 50
    assert count(client, "SELECT uniqExact(event_id) FROM traces") == 50
    assert count(client, "SELECT count() FROM rejected_events") == 7
    reasons = client.rows("SELECT reason, source, raw FROM rejected_events ORDER BY source")
    assert reasons[0][0].startswith("latency_ms: must be >= 0, got -")
    assert reasons[0][2].startswith("{")


def test_cost_columns(settings: Settings, client: SerialClient) -> None:
    pipeline = build_pipeline(settings, client, clock=lambda: FIXED_NOW)
    pipeline.handle(msgs([event(1), event(2, cost_usd=0.5), event(3, model="no-such-model-xyz")]))
    rows = {
        r[0]: (r[1], r[2])
        for r in client.rows("SELECT event_id, cost_usd, cost_source FROM traces")
    }
    assert rows["evt-2"] == (0.5, "event")
    assert rows["evt-3"] == (None, "unpriced")
    assert rows["evt-1"][1] == "price_table" and rows["evt-1"][0] > 0
    assert pipeline.stats.unpriced_models == {"no-such-model-xyz": 1}
    assert count(client, "SELECT count() FROM model_prices") > 10


def test_text_stored_only_when_enabled(settings: Settings) -> None:
    for store_text in (False, True):
        s = settings.model_copy(
            update={
                "clickhouse": settings.clickhouse.model_copy(
                    update={
                        "store_text": store_text,
                        "database": f"{settings.clickhouse.database}_{store_text}",
                    }
                )
            }
        )
        c = prepare_store(s)
        build_pipeline(s, c).handle(msgs([event(1, prompt="hello", response="world")]))
        assert c.rows("SELECT prompt, response FROM traces") == (
            [("hello", "world")] if store_text else [(None, None)]
        )
        c.close()


class FlakyClient(SerialClient):
    """Fault injection at the store client seam (tests only): the next inserts fail."""

    def __init__(self, inner: SerialClient, failures: int) -> None:
        super().__init__(inner.raw, inner.dsn)
        self.failures = failures

    def insert_arrow(self, table: str, data: object, settings: dict | None = None) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("injected: store unavailable")
        super().insert_arrow(table, data, settings)


def test_failed_write_is_retried_without_loss_or_duplicates(
    settings: Settings, client: SerialClient
) -> None:
    flaky = FlakyClient(client, failures=2)
    pipeline = build_pipeline(settings, flaky, clock=lambda: FIXED_NOW)
    pipeline.writer.client = flaky
    batch = msgs([event(i) for i in range(10)])
    assert pipeline.handle(batch).stats.accepted == 10
    assert flaky.failures == 0
    assert pipeline.handle(batch).stats.duplicates == 10
    assert count(client, "SELECT count() FROM traces") == 10


class RecordingWriter(StoreWriter):
    """Keeps the rows instead of writing them: for properties over many examples."""

    def __init__(self) -> None:
        self.rows: list[Rows] = []

    def write(self, rows: Iterable[Rows], lineage: Lineage | None = None) -> int:
        batch = list(rows)
        self.rows.extend(batch)
        return sum(len(r) for r in batch)


@hsettings(max_examples=40, deadline=None)
@given(
    order=st.lists(st.integers(min_value=0, max_value=29), min_size=1, max_size=120),
    batch_size=st.integers(min_value=1, max_value=25),
)
def test_any_delivery_order_with_repeats_stores_each_event_once(
    order: list[int], batch_size: int
) -> None:
    """At-least-once delivery in any order and any batching: each id stored exactly once."""
    prices = PriceTable.default()
    writer = RecordingWriter()
    pipeline = IngestPipeline(
        Intake(TraceProcessor(prices)),
        Task("traces", [TraceStage(prices)]),
        Task("keyed", []),
        writer,
        clock=lambda: FIXED_NOW,
    )
    delivered = [RawMessage(raw(event(i)), f"k:{n}") for n, i in enumerate(order)]
    accepted = 0
    for start in range(0, len(delivered), batch_size):
        accepted += pipeline.handle(delivered[start : start + batch_size]).stats.accepted
    stored = [
        i for r in writer.rows if r.table == "traces" for i in r.data.column("event_id").to_pylist()
    ]
    assert accepted == len(set(order)) == len(stored) == len(set(stored))
    assert pipeline.stats.duplicates == len(order) - len(set(order))
