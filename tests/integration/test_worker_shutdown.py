"""SIGTERM while the broker is down: the worker exits within a bounded time, and
commits nothing it has not written (the next start, with the broker back, ends
with every table equal to a replay).

This test stops its broker, so it runs one of its own (never the shared one).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmpulse.devkafka import broker
from llmpulse.devkafka.testing import cache_dir
from llmpulse.synth.messy import MessyStream, messy_stream
from tests.integration.test_topology_kafka import (
    PARTITIONS,
    Cluster,
    assert_union_equals_replay,
    settle,
    wait_until,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

# The bound, with the default worker.shutdown_timeout_s of 12 s inside it.
EXIT_BOUND_S = 15.0


@pytest.fixture(scope="module")
def stream() -> MessyStream:
    return messy_stream(4000, seed=5)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    state, port = tmp_path / "broker", broker.free_port()
    broker.start(state_dir=state, cache_dir=cache_dir(), port=port)
    yield state, port
    broker.stop(state)


def test_sigterm_with_the_broker_down_exits_in_bounded_time_and_loses_nothing(
    own_broker: tuple[Path, int], tmp_path: Path, stream: MessyStream, reference: Path
) -> None:
    state, port = own_broker
    cluster = Cluster(f"127.0.0.1:{port}", tmp_path)
    try:
        total = stream.unique_events + PARTITIONS
        w = cluster.worker("a")
        w.start()
        w.wait_ready()
        cluster.produce(stream, seconds=6).join(60)
        wait_until(lambda: cluster.stored("a") >= total // 3, 120, "a third stored", cluster)
        assert broker.stop(state)
        time.sleep(2)  # the worker notices: fetches and sends start failing
        assert w.proc is not None
        started = time.monotonic()
        w.proc.send_signal(signal.SIGTERM)
        w.proc.wait(60)
        took = time.monotonic() - started
        print(f"exit after SIGTERM with the broker down: {took:.1f}s, code {w.proc.returncode}")
        assert took <= EXIT_BOUND_S, w.log_tail()

        broker.start(state_dir=state, cache_dir=cache_dir(), port=port)
        w.start()
        settle(cluster, ["a"], total)
        assert_union_equals_replay(cluster, ["a"], reference, stream)
    finally:
        cluster.stop_all()
