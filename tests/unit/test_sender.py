"""The one background sender (what runs on it across ``os.fork()`` against a real
broker: tests/integration/test_sender.py)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from llmpulse import KafkaError
from llmpulse.errors import ConfigError, SinkError
from llmpulse.ingest.publisher import KafkaPublisher
from llmpulse.sender import BackgroundSender, Backoff, SenderListener


class Recorder(SenderListener[Any]):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def _add(self, *event: Any) -> None:
        with self.lock:
            self.events.append(event)

    def sent(self, batch: Sequence[Any]) -> None:
        self._add("sent", list(batch))

    def retrying(
        self, batch: Sequence[Any], error: BaseException, attempt: int, delay: float
    ) -> None:
        self._add("retrying", attempt, delay)

    def gave_up(self, batch: Sequence[Any], error: BaseException, attempts: int) -> None:
        self._add("gave_up", list(batch), attempts)

    def dropped(self, count: int, reason: str) -> None:
        self._add("dropped", count, reason)


class Gate:
    """An export that blocks until opened, like a receiver that stopped answering."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[int]] = []

    def __call__(self, batch: list[int]) -> None:
        self.entered.set()
        self.opened.wait()
        self.batches.append(batch)


# --------------------------------------------------------------------------- unit


def test_batches_in_order_and_flush_skips_the_linger() -> None:
    batches: list[list[int]] = []
    sender = BackgroundSender(batches.append, name="t", max_queue=100, batch_size=4, linger_s=30)
    assert all(sender.offer(i) for i in range(10))
    assert sender.flush(timeout=10)  # long before the 30 s linger
    assert [i for b in batches for i in b] == list(range(10))
    assert max(len(b) for b in batches) <= 4
    assert (sender.sent, sender.pending, sender.failed, sender.dropped) == (10, 0, 0, 0)
    assert sender.shutdown(timeout=5)


def test_full_buffer_drops_and_counts() -> None:
    gate, listener = Gate(), Recorder()
    sender = BackgroundSender(gate, name="t", max_queue=3, listener=listener)
    assert sender.offer(0)
    assert gate.entered.wait(10)  # item 0 is in flight, the buffer is empty
    results = [sender.offer(i) for i in range(1, 11)]
    assert results == [True] * 3 + [False] * 7
    assert sender.dropped == 7 and sender.pending == 4
    assert ("dropped", 1, "buffer full") in listener.events
    gate.opened.set()
    assert sender.flush(timeout=10) and gate.batches == [[0], [1], [2], [3]]
    assert sender.shutdown(timeout=5)
    assert sender.offer(99) is False and listener.events[-1] == ("dropped", 1, "closed")


def test_retries_with_backoff_and_the_receivers_hint() -> None:
    failures = [SinkError("s", "429", retryable=True, retry_after=7.0), KafkaError("k", "down")]
    delivered: list[list[str]] = []

    def export(batch: list[str]) -> None:
        if failures:
            raise failures.pop(0)
        delivered.append(batch)

    delays: list[float] = []
    listener = Recorder()
    sender = BackgroundSender(
        export,
        name="t",
        max_queue=10,
        backoff=Backoff(attempts=3, initial_s=1.0, max_s=10.0, jitter=0.5),
        listener=listener,
        sleep=delays.append,
        rng=lambda: 1.0,
    )
    sender.offer("a")
    assert sender.flush(timeout=10)
    assert delivered == [["a"]] and delays == [10.5, 3.0]  # hint 7 s beats 1 s, then 2 s
    assert (sender.sent, sender.retried, sender.failed) == (1, 2, 0)
    assert [e[0] for e in listener.events] == ["retrying", "retrying", "sent"]
    sender.shutdown()


def test_not_retryable_and_exhausted_batches_fail_and_the_queue_goes_on() -> None:
    calls: list[int] = []

    def export(batch: list[int]) -> None:
        calls.append(batch[0])
        if batch[0] == 0:
            raise SinkError("s", "HTTP 400", retryable=False)
        if batch[0] == 1:
            raise KafkaError("k", "down")  # retryable, until attempts run out

    listener = Recorder()
    sender = BackgroundSender(
        export,
        name="t",
        max_queue=10,
        backoff=Backoff(attempts=2),
        listener=listener,
        sleep=lambda s: None,
    )
    for i in range(3):
        sender.offer(i)
    assert sender.flush(timeout=10)
    assert calls == [0, 1, 1, 2]
    assert (sender.sent, sender.failed, sender.retried) == (1, 2, 1)
    assert ("gave_up", [0], 1) in listener.events and ("gave_up", [1], 2) in listener.events
    sender.shutdown()


def test_shutdown_meets_its_deadline_and_accounts_for_everything() -> None:
    gate = Gate()
    interrupted = threading.Event()
    sender = BackgroundSender(
        gate, name="t", max_queue=10, interrupt=lambda: (interrupted.set(), gate.opened.set())
    )
    for i in range(5):
        sender.offer(i)
    assert gate.entered.wait(10)
    assert sender.flush(timeout=0.05) is False
    # The interrupt releases the stuck export, which then completes within the grace.
    assert sender.shutdown(timeout=0.1, grace_s=10) is False
    assert interrupted.is_set() and not sender.running
    assert (sender.sent, sender.dropped, sender.pending) == (1, 4, 0)
    assert gate.batches == [[0]]


def test_when_flushed_calls_back_once_everything_offered_is_done() -> None:
    gate = Gate()
    sender = BackgroundSender(gate, name="t", max_queue=10)
    called = threading.Event()
    sender.offer(1)
    sender.when_flushed(called.set)
    assert not called.is_set()
    gate.opened.set()
    assert called.wait(10)
    immediate: list[bool] = []
    sender.when_flushed(lambda: immediate.append(True))
    assert immediate == [True]
    sender.shutdown()


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError):
        Backoff(attempts=0)
    with pytest.raises(ConfigError):
        BackgroundSender(print, name="t", max_queue=0)


def test_a_forked_child_gets_its_own_sender_and_never_sends_the_parents_items(
    tmp_path: Path,
) -> None:
    parent = os.getpid()
    out = tmp_path / "exported.txt"
    gate = threading.Event()

    def export(batch: list[str]) -> None:
        if os.getpid() == parent:
            gate.wait()
        with out.open("a") as f:
            f.writelines(f"{os.getpid()} {item}\n" for item in batch)

    sender = BackgroundSender(export, name="t", max_queue=100)
    for i in range(3):
        sender.offer(f"parent-{i}")  # stuck behind the gate when the fork happens

    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 1
        try:
            ok = all(sender.offer(f"child-{i}") for i in range(4)) and sender.flush(timeout=20)
            ok = ok and sender.sent == 4 and sender.shutdown(timeout=5)
            code = 0 if ok else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    gate.set()
    assert sender.flush(timeout=10) and sender.sent == 3
    assert sender.offer("parent-after") and sender.shutdown(timeout=10)
    lines = [line.split() for line in out.read_text().splitlines()]
    assert sorted(item for p, item in lines if int(p) == pid) == [f"child-{i}" for i in range(4)]
    assert [item for p, item in lines if int(p) == parent] == [
        "parent-0",
        "parent-1",
        "parent-2",
        "parent-after",
    ]


# --------------------------------------------------------------------------- real Kafka


def test_kafka_publisher_reports_an_unreachable_broker() -> None:
    publisher = KafkaPublisher("127.0.0.1:1", timeout_s=5)
    with pytest.raises(KafkaError, match="publishing to t failed"):
        publisher.publish("t", b"k", b"v")
    publisher.close()


async def test_sync_close_called_from_async_code_closes_the_transport() -> None:
    from llmpulse import Emitter, MemoryTransport

    transport = MemoryTransport()
    emitter = Emitter(transport)
    emitter.emit({"service": "s", "model": "m", "timestamp": 0, "latency_ms": 1.0})
    emitter.close()  # a plain call on this running loop, as a shutdown hook would make
    assert emitter.sent == 1 and transport.closed
