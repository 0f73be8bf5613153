"""Unit tests need no broker and no store (``tests/integration`` has those): this
guard fails a unit test that opens either in its own process."""

from __future__ import annotations

from typing import Any

import pytest


class NeedsIntegration(RuntimeError):
    """A unit test reached for Kafka or ClickHouse: it belongs in tests/integration."""


@pytest.fixture(autouse=True)
def _no_broker_no_store(monkeypatch: pytest.MonkeyPatch) -> None:
    import aiokafka

    import llmpulse.store.client

    def no_store(*args: Any, **kwargs: Any) -> Any:
        raise NeedsIntegration("unit tests have no store")

    async def no_broker(self: Any, *args: Any, **kwargs: Any) -> None:
        raise NeedsIntegration("unit tests have no broker")

    monkeypatch.setattr(llmpulse.store.client, "connect", no_store)
    monkeypatch.setattr(aiokafka.AIOKafkaProducer, "start", no_broker)
    monkeypatch.setattr(aiokafka.AIOKafkaConsumer, "start", no_broker)
