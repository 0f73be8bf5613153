"""One background sender for everything llmpulse hands off to a slow receiver.

The event emitter, the Kafka publisher of the alert control topic and the alert
dispatcher all need the same machine, in the spirit of OpenTelemetry's
``BatchProcessor``: callers :meth:`~BackgroundSender.offer` items without ever
blocking, a bounded buffer drops (and counts) what does not fit, one daemon
thread takes batches (lingering a little so a trickle still makes real
batches) and hands them to an export function, retrying with exponential
backoff and jitter; :meth:`~BackgroundSender.flush` waits for what was offered
so far and :meth:`~BackgroundSender.shutdown` stops within a deadline, counting
what it could not send.

Fork safety: a thread does not survive ``os.fork()``, and the locks it held may
be held forever in the child. ``os.register_at_fork`` gives the child a fresh
buffer, fresh locks and a fresh thread (started on the next offer); the events
the parent had buffered stay the parent's to send, never sent twice.

>>> batches = []
>>> sender = BackgroundSender(batches.append, name="demo", max_queue=10, batch_size=2)
>>> [sender.offer(i) for i in range(3)], sender.flush(timeout=5)
([True, True, True], True)
>>> sorted(i for b in batches for i in b), sender.sent
([0, 1, 2], 3)
>>> sender.shutdown(timeout=5), sender.offer(4), sender.dropped
(True, False, 1)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from llmpulse.errors import ConfigError

__all__ = ["BackgroundSender", "Backoff", "LoopRunner", "SenderListener"]

T = TypeVar("T")
R = TypeVar("R")

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Backoff:
    """How often and how patiently a failed batch is tried again.

    ``attempts`` counts every try (1: never retried). The n-th retry waits
    ``initial_s * 2**(n-1)`` seconds, at most ``max_s``, at least the receiver's
    hint (``Retry-After``) when it gave one, then stretched by up to ``jitter``
    (a fraction) so that many clients hitting one rate limit spread out.

    >>> b = Backoff(attempts=4, initial_s=1.0, max_s=5.0, jitter=0.5)
    >>> [b.delay(n, None, lambda: 1.0) for n in (1, 2, 3, 4)], b.delay(1, 2.0, lambda: 0.0)
    ([1.5, 3.0, 6.0, 7.5], 2.0)
    """

    attempts: int = 1
    initial_s: float = 0.1
    max_s: float = 5.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError("attempts", f"must be >= 1, got {self.attempts!r}")
        for name in ("initial_s", "max_s", "jitter"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0, got {getattr(self, name)!r}")

    def delay(self, retry: int, hint: float | None, rng: Callable[[], float]) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        delay = min(self.max_s, self.initial_s * 2.0 ** (retry - 1))
        if hint is not None:
            delay = max(delay, min(hint, self.max_s))
        return delay * (1.0 + self.jitter * rng())


class SenderListener(Generic[T]):
    """What a sender reports as it goes; subclass and override what you need.

    Called from the sender thread, except ``dropped``, which is called from the
    thread that offered (or closed). None of them may raise.
    """

    def sent(self, batch: Sequence[T]) -> None:
        """``batch`` was exported."""

    def retrying(
        self, batch: Sequence[T], error: BaseException, attempt: int, delay: float
    ) -> None:
        """Attempt ``attempt`` of ``batch`` failed; the next one comes in ``delay`` s."""

    def gave_up(self, batch: Sequence[T], error: BaseException, attempts: int) -> None:
        """``batch`` is counted as failed after ``attempts`` tries."""

    def dropped(self, count: int, reason: str) -> None:
        """``count`` items were refused or abandoned unsent."""


def _retryable(error: BaseException) -> bool:
    # Errors that know whether retrying helps say so (SinkError does).
    return bool(getattr(error, "retryable", True))


def _retry_after(error: BaseException) -> float | None:
    hint = getattr(error, "retry_after", None)
    return float(hint) if isinstance(hint, int | float) else None


class BackgroundSender(Generic[T]):
    """A bounded buffer drained by one daemon thread into ``export``.

    ``export(batch)`` returns once the batch is delivered and raises otherwise;
    ``retryable(error)`` decides whether a failure is tried again (by default:
    the error's ``retryable`` attribute, else yes) and ``retry_after(error)``
    reads the receiver's hint. ``interrupt`` is called once when
    :meth:`shutdown` gives up waiting, to break an export stuck on a dead
    receiver; ``after_fork`` is called in a forked child, to drop connections
    that belong to the parent. ``sleep`` (backoff waits, woken by an aborted
    shutdown by default) and ``rng`` (jitter) are injectable for tests.

    Counters, in items: ``sent``, ``failed`` (given up), ``dropped`` (refused or
    abandoned), ``retried`` (failed attempts tried again) and ``pending``
    (accepted, not yet sent nor given up).
    """

    def __init__(
        self,
        export: Callable[[list[T]], object],
        *,
        name: str,
        max_queue: int,
        batch_size: int = 1,
        linger_s: float = 0.0,
        backoff: Backoff = Backoff(),
        retryable: Callable[[BaseException], bool] = _retryable,
        retry_after: Callable[[BaseException], float | None] = _retry_after,
        listener: SenderListener[T] | None = None,
        interrupt: Callable[[], None] | None = None,
        after_fork: Callable[[], None] | None = None,
        sleep: Callable[[float], object] | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if max_queue < 1:
            raise ConfigError("max_queue", f"must be >= 1, got {max_queue!r}")
        if batch_size < 1:
            raise ConfigError("batch_size", f"must be >= 1, got {batch_size!r}")
        if linger_s < 0:
            raise ConfigError("linger_s", f"must be >= 0, got {linger_s!r}")
        self.name = name
        self._export = export
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._backoff = backoff
        self._retryable = retryable
        self._retry_after = retry_after
        self._listener: SenderListener[T] = listener or SenderListener()
        self._interrupt = interrupt
        self._after_fork = after_fork
        self._custom_sleep = sleep
        self._rng = rng
        self._closing = False
        self._reset()
        # A weak reference: the registration outlives the sender (it cannot be
        # undone), and must not keep it alive.
        child = weakref.WeakMethod(self._reinit_in_child)
        os.register_at_fork(after_in_child=lambda: _call_if_alive(child))

    def _reset(self) -> None:
        """Fresh state: at construction, and in a forked child."""
        # One condition guards the buffer and the counters; offer() holds it for
        # an append only, never across an export.
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[T] = deque()
        self._inflight = 0
        self._accepted = 0  # sequence number of the last accepted item
        self._done = 0  # every item up to this one is sent, failed or dropped
        self._waiters: list[tuple[int, Callable[[], None]]] = []
        self._urgent = 0  # flush() callers waiting: the sender skips lingering
        self._abort = threading.Event()
        self._sleep: Callable[[float], object] = self._custom_sleep or self._abort.wait
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.retried = 0

    def _reinit_in_child(self) -> None:
        # The parent's buffered items stay the parent's: sending them here too
        # would deliver them twice. Closed stays closed.
        self._reset()
        if self._after_fork is not None:
            self._after_fork()

    # -- the callers' side

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + self._inflight

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def running(self) -> bool:
        """Whether the thread is alive (False before the first offer and once stopped)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        """Start the thread (idempotent; the first offer does it too)."""
        with self._cond:
            self._start_locked()

    def _start_locked(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def offer(self, item: T) -> bool:
        """Queue one item; True if accepted. Never blocks, never raises."""
        with self._cond:
            refused = self._closing or len(self._queue) >= self._max_queue
            if not refused:
                self._queue.append(item)
                self._accepted += 1
                self._start_locked()
                # A lingering sender only cares about a full batch, an idle one
                # about the first item: other appends need not wake it.
                if len(self._queue) in (1, self._batch_size):
                    self._cond.notify_all()
        if refused:
            self.count_dropped(1, "closed" if self._closing else "buffer full")
            return False
        return True

    def count_dropped(self, count: int, reason: str) -> None:
        """Count items refused before reaching the buffer (unencodable...)."""
        if count <= 0:
            return
        with self._cond:
            self.dropped += count
        self._listener.dropped(count, reason)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every item accepted before this call is sent or given up;
        False on timeout."""
        with self._cond:
            target = self._accepted
            if self._done >= target:
                return True
            self._start_locked()
            self._urgent += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: self._done >= target, timeout)
            finally:
                self._urgent -= 1

    def when_flushed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from any thread) once every item accepted so far is
        sent or given up: the building block of an ``await``-able flush."""
        with self._cond:
            target = self._accepted
            if self._done < target:
                self._start_locked()
                self._waiters.append((target, callback))
                self._cond.notify_all()
                return
        callback()

    def stop_accepting(self) -> None:
        """Refuse new items from now on (the first half of :meth:`shutdown`)."""
        with self._cond:
            self._closing = True
            if self._queue:
                self._start_locked()
            self._cond.notify_all()

    def shutdown(self, timeout: float | None = 10.0, *, grace_s: float = 0.0) -> bool:
        """Refuse new items, send the buffered ones within ``timeout`` seconds, stop.

        True when everything was sent or given up in time. Otherwise retries are
        aborted, ``interrupt`` is called, what is still buffered is counted as
        dropped and the export in flight gets ``grace_s`` more seconds to end
        (then it is counted as failed; the thread, a daemon, is left behind).
        """
        self.stop_accepting()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if not thread.is_alive():
                return True
        elif self.pending == 0:
            return True
        self._abort.set()
        if self._interrupt is not None:
            try:
                self._interrupt()
            except Exception:
                _log.exception("%s: interrupting the export failed", self.name)
        with self._cond:
            leftover = len(self._queue)
            self._queue.clear()
            self.dropped += leftover
            self._done += leftover
            self._notify_progress_locked()
        if leftover:
            self._listener.dropped(leftover, "shut down before sent")
        if thread is not None and grace_s > 0:
            thread.join(grace_s)
        return False

    # -- the sender thread

    def _take_batch(self) -> list[T] | None:
        """The next batch, or None once closed and empty."""
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            if self._linger_s > 0:
                deadline = time.monotonic() + self._linger_s
                while len(self._queue) < self._batch_size and not (
                    self._urgent or self._waiters or self._closing
                ):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            count = min(self._batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(count)]
            self._inflight = count
            return batch

    def _run(self) -> None:
        while (batch := self._take_batch()) is not None:
            outcome = "failed"
            try:
                outcome = self._export_with_retries(batch)
            finally:
                with self._cond:
                    if outcome == "sent":
                        self.sent += len(batch)
                    elif outcome == "failed":
                        self.failed += len(batch)
                    else:
                        self.dropped += len(batch)
                    self._done += len(batch)
                    self._inflight = 0
                    self._notify_progress_locked()

    def _export_with_retries(self, batch: list[T]) -> str:
        attempt = 0
        while True:
            if self._abort.is_set():
                self._listener.dropped(len(batch), "shut down before sent")
                return "dropped"
            attempt += 1
            try:
                self._export(batch)
            except BaseException as exc:  # a sender thread must not die
                if (
                    attempt >= self._backoff.attempts
                    or self._abort.is_set()
                    or not isinstance(exc, Exception)
                    or not self._retryable(exc)
                ):
                    self._listener.gave_up(batch, exc, attempt)
                    return "failed"
                delay = self._backoff.delay(attempt, self._retry_after(exc), self._rng)
                with self._cond:
                    self.retried += len(batch)
                self._listener.retrying(batch, exc, attempt, delay)
                self._sleep(delay)
            else:
                self._listener.sent(batch)
                return "sent"

    def _notify_progress_locked(self) -> None:
        self._cond.notify_all()
        if not self._waiters:
            return
        ready = [cb for target, cb in self._waiters if self._done >= target]
        self._waiters = [(t, cb) for t, cb in self._waiters if self._done < t]
        for callback in ready:
            try:
                callback()
            except Exception:
                _log.exception("%s: a flush callback raised", self.name)


def _call_if_alive(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    bound = method()
    if bound is not None:
        bound()


# Objects a forked child must never touch nor let the garbage collector close:
# an event loop's epoll instance is shared with the parent, and closing the
# loop (or a transport on it) in the child would unregister the parent's
# sockets. They are kept here, unused, for the life of the child.
_ABANDONED_IN_CHILD: list[object] = []


def abandon_in_child(*objects: object) -> None:
    """Keep ``objects`` (inherited through ``fork``) alive and untouched."""
    _ABANDONED_IN_CHILD.extend(o for o in objects if o is not None)


def _loop_running_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _in_thread(call: Callable[[], R]) -> R:
    box: list[R] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            box.append(call())
        except BaseException as exc:  # handed to the caller below
            errors.append(exc)

    thread = threading.Thread(target=target, name="llmpulse-loop-runner")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return box[0]


class LoopRunner:
    """A private asyncio loop run by whichever thread calls :meth:`run`.

    aiokafka is asyncio-only; a :class:`BackgroundSender` thread exports through
    this loop. :meth:`interrupt` cancels the coroutine in flight from another
    thread; :meth:`after_fork` replaces the loop in a forked child.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[Any] | None = None
        self._lock = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, R], timeout: float | None = None) -> R:
        """Run ``coro`` to its end on the loop (at most ``timeout`` seconds)."""
        if _loop_running_here():
            # asyncio refuses to run a loop inside another one (a sync close()
            # called from async code): a short-lived thread runs it instead.
            return _in_thread(lambda: self.run(coro, timeout))
        if timeout is not None:
            coro = asyncio.wait_for(coro, timeout)
        with self._lock:
            task = self._loop.create_task(coro)
            self._task = task
        try:
            return self._loop.run_until_complete(task)
        except asyncio.CancelledError:
            raise TimeoutError("interrupted") from None
        finally:
            with self._lock:
                self._task = None

    def interrupt(self) -> None:
        with self._lock:
            task = self._task
        if task is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(task.cancel)

    def after_fork(self) -> None:
        abandon_in_child(self._loop, self._task)
        self._loop = asyncio.new_event_loop()
        self._task = None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the loop (only once no thread runs it any more)."""
        if _loop_running_here():
            _in_thread(self.close)
            return
        with contextlib.suppress(Exception):
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()
