"""Shared fixtures: a real Kafka broker for the session, isolated stores per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Kafka broker: the address in LLMPULSE_KAFKA_BOOTSTRAP if set, else a
    testcontainers broker where a Docker engine answers, else a local KRaft broker
    started from the Maven-resolved jars (stopped at the end of the session)."""
    from llmpulse.devkafka.testing import broker_for_tests

    with broker_for_tests(tmp_path_factory.mktemp("kafka")) as bootstrap:
        yield bootstrap


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One on-disk chDB store per test process (chDB opens one path per process);
    tests isolate themselves with a database each."""
    return tmp_path_factory.mktemp("chdb") / "store"


@pytest.fixture
def settings(chdb_dir: Path, tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    import re

    from llmpulse.settings import Settings

    db = "t_" + re.sub(r"\W", "_", request.node.name)[:40] + "_" + str(abs(hash(tmp_path)) % 10**6)
    return Settings(
        data_dir=tmp_path / "data",
        cache_dir=tmp_path / "cache",
        clickhouse={"dsn": f"chdb://{chdb_dir}", "database": db},
    )


@pytest.fixture(scope="session")
def showcase(chdb_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The showcase hour (llmpulse.synth.scenarios.showcase_events) ending now, replayed
    into a database of the session's store: (settings of that database, end time in ms).

    No client stays open between modules: chDB keeps its embedded server on one
    path while any client lives, and other tests open their own stores later."""
    import time

    from llmpulse.synth.scenarios import showcase_events
    from tests.seed import replay_events, seed_comparisons, showcase_settings

    end_ms = int(time.time() * 1000)
    settings = showcase_settings(chdb_dir, tmp_path_factory.mktemp("showcase"), "t_showcase")
    replay_events(settings, showcase_events(end_ms)).close()
    seed_comparisons(settings, end_ms)
    yield settings, end_ms
