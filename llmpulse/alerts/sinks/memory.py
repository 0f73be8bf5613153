"""A sink that records what it is sent, for tests."""

from __future__ import annotations

import threading
from collections import deque

from llmpulse.alerts.state import Transition

__all__ = ["MemorySink"]


class MemorySink:
    """Records what it is sent; ``fail_with`` scripts errors for the next sends.

    >>> from llmpulse.errors import SinkError
    >>> s = MemorySink()
    >>> s.fail_with(SinkError("memory", "HTTP 429", retryable=True))
    >>> s.name, s.transitions
    ('memory', [])
    """

    def __init__(self, name: str = "memory") -> None:
        self._name = name
        self.transitions: list[Transition] = []
        self.attempts = 0
        self._failures: deque[BaseException] = deque()
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    def fail_with(self, *errors: BaseException) -> None:
        with self._lock:
            self._failures.extend(errors)

    def send(self, transition: Transition) -> None:
        with self._lock:
            self.attempts += 1
            if self._failures:
                raise self._failures.popleft()
            self.transitions.append(transition)
