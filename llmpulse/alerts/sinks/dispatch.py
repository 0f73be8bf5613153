"""Delivery of transitions to the sinks, off the stream's thread.

``submit`` only appends to a bounded per-sink buffer (dropping, counted, when
it is full); one :class:`~llmpulse.sender.BackgroundSender` per sink delivers
in order, retrying 429, 5xx and network errors with exponential backoff and
jitter, never retrying other 4xx. Per-sink order matters: a resolve must never
overtake its trigger, and a slow Slack must not delay PagerDuty.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge

from llmpulse.alerts.sinks.base import Sink
from llmpulse.alerts.state import Transition
from llmpulse.errors import ConfigError, SinkError
from llmpulse.sender import BackgroundSender, Backoff, SenderListener

__all__ = ["Dispatcher", "DispatcherMetrics"]

log = logging.getLogger("llmpulse.alerts")


class DispatcherMetrics:
    """The dispatcher's counters on one registry (create once per registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry  # for a process that serves /metrics to expose

        def counter(what: str, doc: str) -> Counter:
            return Counter(f"llmpulse_alert_notifications_{what}", doc, ["sink"], registry=registry)

        self.sent = counter("sent", "Alert notifications delivered")
        self.failed = counter("failed", "Alert notifications given up (4xx, or retries exhausted)")
        self.dropped = counter("dropped", "Alert notifications dropped (queue full or closing)")
        self.retried = counter("retried", "Alert delivery attempts retried")
        self.queued = Gauge(
            "llmpulse_alert_notifications_queued",
            "Alert notifications waiting for delivery",
            ["sink"],
            registry=registry,
        )


def _retryable(error: BaseException) -> bool:
    # Anything but a retryable SinkError is a bug or a refusal: retrying repeats it.
    return isinstance(error, SinkError) and error.retryable


class _Lane(SenderListener[Transition]):
    """One sink, its sender, and what the sender reports turned into counts and logs."""

    def __init__(self, sink: Sink, owner: Dispatcher, sleep: Callable[[float], object] | None):
        self.sink = sink
        self.name = sink.name
        self.owner = owner
        self.sender: BackgroundSender[Transition] = BackgroundSender(
            self._export,
            name=f"alerts-{self.name}",
            max_queue=owner.queue_size,
            backoff=Backoff(
                attempts=owner.max_attempts,
                initial_s=owner.backoff_s,
                max_s=owner.max_backoff_s,
                jitter=owner.jitter,
            ),
            retryable=_retryable,
            listener=self,
            sleep=sleep,
            rng=owner.rng,
        )

    def _export(self, batch: list[Transition]) -> None:
        for t in batch:  # batches of one: each transition succeeds or fails alone
            self.sink.send(t)

    def sent(self, batch: Sequence[Transition]) -> None:
        for t in batch:
            self.owner._count(self.name, "sent")
            log.info("alert %s (%s) delivered to %s", t.dedup_key, t.to_state, self.name)

    def retrying(
        self, batch: Sequence[Transition], error: BaseException, attempt: int, delay: float
    ) -> None:
        self.owner._count(self.name, "retried", len(batch))
        for t in batch:
            log.warning(
                "alert %s to %s failed (attempt %d/%d): %s; retrying in %.1fs",
                t.dedup_key,
                self.name,
                attempt,
                self.owner.max_attempts,
                error.problem if isinstance(error, SinkError) else error,
                delay,
            )

    def gave_up(self, batch: Sequence[Transition], error: BaseException, attempts: int) -> None:
        self.owner._count(self.name, "failed", len(batch))
        for t in batch:
            if isinstance(error, SinkError):
                log.error(
                    "alert %s (%s) not delivered to %s after %d attempt(s): %s",
                    t.dedup_key,
                    t.to_state,
                    self.name,
                    attempts,
                    error.problem,
                )
            else:
                # A bug in one sink: logged with its traceback, and its queue goes on.
                log.error(
                    "alert %s: sink %s raised unexpectedly",
                    t.dedup_key,
                    self.name,
                    exc_info=error,
                )

    def dropped(self, count: int, reason: str) -> None:
        self.owner._count(self.name, "dropped", count)


def _depth_of(sender: BackgroundSender[Transition]) -> Callable[[], float]:
    return lambda: sender.pending


class Dispatcher:
    """Delivers transitions to sinks without ever blocking the caller.

    ``submit`` ignores transitions that are not notified, queues the others for
    every sink and returns at once. With ``dry_run`` nothing is sent: transitions
    are recorded in ``recorded`` as (sink name, transition). ``sleep`` and
    ``rng`` are injectable for tests; the default sleep wakes up on ``close``.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        registry: CollectorRegistry | None = None,
        metrics: DispatcherMetrics | None = None,
        queue_size: int = 1000,
        max_attempts: int = 6,
        backoff_s: float = 0.5,
        max_backoff_s: float = 60.0,
        jitter: float = 0.2,
        sleep: Callable[[float], object] | None = None,
        rng: Callable[[], float] = random.random,
        dry_run: bool = False,
    ) -> None:
        if queue_size < 1 or max_attempts < 1:
            raise ConfigError("alerts.queue_size", "queue_size and max_attempts must be >= 1")
        names = [s.name for s in sinks]
        if len(set(names)) != len(names):
            raise ConfigError("alerts.sinks", f"sink names must be unique, got {names}")
        self.metrics = metrics or DispatcherMetrics(registry or CollectorRegistry())
        self.queue_size = queue_size
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.jitter = jitter
        self.rng = rng
        self.dry_run = dry_run
        self._closed = False
        self._lock = threading.Lock()
        self.recorded: list[tuple[str, Transition]] = []
        self._stats: dict[str, dict[str, int]] = {
            n: {"sent": 0, "failed": 0, "dropped": 0, "retried": 0} for n in names
        }
        self._lanes = [_Lane(s, self, sleep) for s in sinks]
        for lane in self._lanes:
            self.metrics.queued.labels(lane.name).set_function(_depth_of(lane.sender))

    @property
    def sinks(self) -> list[Sink]:
        return [lane.sink for lane in self._lanes]

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        """Per sink: sent, failed, dropped and retried counts (as the Prometheus counters)."""
        with self._lock:
            return {k: dict(v) for k, v in self._stats.items()}

    def _count(self, sink: str, what: str, n: int = 1) -> None:
        if n <= 0:
            return
        with self._lock:
            self._stats[sink][what] += n
            total = self._stats[sink][what]
        getattr(self.metrics, what).labels(sink).inc(n)
        if what == "dropped" and (total == n or total // 100 > (total - n) // 100):
            log.warning("alert sink %s: %d notifications dropped so far", sink, total)

    def submit(self, transition: Transition) -> bool:
        """Queue a transition for every sink; False if it is not notified or was dropped
        everywhere. Never blocks, never raises."""
        if not transition.notify:
            return False
        if self.dry_run:
            with self._lock:
                self.recorded.extend((lane.name, transition) for lane in self._lanes)
            return bool(self._lanes)
        accepted = False
        for lane in self._lanes:
            # A closed sender refuses and counts the drop itself.
            accepted = lane.sender.offer(transition) or accepted
        return accepted

    def submit_all(self, transitions: Iterable[Transition]) -> int:
        return sum(self.submit(t) for t in transitions)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued transition is delivered or given up; False on timeout."""
        if self.dry_run:
            return True
        deadline = time.monotonic() + timeout
        return all(lane.sender.flush(max(0.0, deadline - time.monotonic())) for lane in self._lanes)

    def close(self, timeout: float = 5.0) -> bool:
        """Stop accepting, deliver what is queued within ``timeout``, then give up.

        Returns True when everything queued was delivered (or given up) in time;
        otherwise what is left is counted as dropped and the threads, daemons,
        are left to finish their current attempt.
        """
        self._closed = True
        deadline = time.monotonic() + timeout
        for lane in self._lanes:  # every lane drains meanwhile, not one after the other
            lane.sender.stop_accepting()
        clean = True
        for lane in self._lanes:
            if not lane.sender.shutdown(max(0.0, deadline - time.monotonic())):
                clean = False
        return clean

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
