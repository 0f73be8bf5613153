"""Fixtures of the integration tests (a real store; the broker is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from llmpulse.runtime import prepare_store
from llmpulse.settings import Settings
from llmpulse.store.client import SerialClient
from llmpulse.synth.messy import MessyStream


@pytest.fixture
def client(settings: Settings) -> Iterator[SerialClient]:
    """The test's database (``settings``), migrated; closed after the test."""
    with closing(prepare_store(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def reference(stream: MessyStream, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store of a replay of the module's messy ``stream``, as sent to the workers
    (see test_topology_kafka.replay_reference)."""
    from tests.integration.test_topology_kafka import replay_reference

    return replay_reference(stream, tmp_path_factory.mktemp("replay"))
