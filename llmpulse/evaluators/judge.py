"""An LLM judge on any OpenAI-compatible chat-completions endpoint, off the hot path.

``LLMJudge.submit`` only decides (sampling) and enqueues: it never waits. One
background thread takes calls from a bounded queue, waits for the token bucket
(``max_per_minute``), POSTs ``{"model", "messages": [system: rubric, user: the
call's prompt and response], "temperature": 0}`` and reads the first choice's
message content as a JSON object with a numeric ``score`` (and an optional
``reason``, kept as the score's comment). Results are collected for the score
path (``drain``). A full queue drops the call; every outcome is counted.

Sampling is by a hash of the event id, so a replay judges the same calls and a
redelivered call is not judged twice for one share of traffic.

>>> sampled("evt-1", 1.0), sampled("evt-1", 0.0)
(True, False)
>>> b = TokenBucket(per_minute=60, clock=iter([0.0, 0.0, 2.5]).__next__)
>>> b.wait_time(), b.wait_time(), b.wait_time()  # the second waits for its slot
(0.0, 1.0, 0.0)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import queue
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

log = logging.getLogger("llmpulse.judge")

_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_STOP: Final = object()


def sampled(event_id: str, rate: float) -> bool:
    """Whether ``event_id`` is in the sampled share ``rate`` (deterministic)."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    h = int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < rate


class TokenBucket:
    """``per_minute`` requests per minute, bursts of one; the clock is injected."""

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 60.0 / per_minute
        self.clock = clock
        self._next = -math.inf

    def wait_time(self) -> float:
        """Seconds to wait before the next request (0 if it may go now); takes the slot."""
        now = self.clock()
        start = max(now, self._next)
        self._next = start + self.interval
        return start - now


@dataclass(frozen=True)
class JudgeCall:
    event_id: str
    prompt: str
    response: str


@dataclass(frozen=True)
class Judgement:
    event_id: str
    score: float
    reason: str
    wall_ms: int


@dataclass
class JudgeCounters:
    submitted: int = 0
    not_sampled: int = 0
    dropped: int = 0  # queue full
    calls: int = 0  # HTTP requests made
    failures: int = 0  # HTTP errors, timeouts, unreadable answers
    results: int = 0
    last_error: str = ""
    by_failure: dict[str, int] = field(default_factory=dict)


def parse_reply(body: bytes) -> tuple[float, str]:
    """Score and reason from a chat-completions response body.

    >>> parse_reply(b'{"choices":[{"message":{"content":"Sure: {\\\\"score\\\\": 0.8, '
    ...             b'\\\\"reason\\\\": \\\\"ok\\\\"}"}}]}')
    (0.8, 'ok')
    """
    doc = json.loads(body)
    content = doc["choices"][0]["message"]["content"]
    m = _JSON_OBJECT.search(content or "")
    if m is None:
        raise ValueError("the judge's answer holds no JSON object")
    verdict = json.loads(m.group(0))
    score = verdict["score"]
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise ValueError(f"score must be a finite number, got {score!r}")
    return float(score), str(verdict.get("reason", ""))[:1000]


class LLMJudge:
    def __init__(
        self,
        *,
        url: str,
        model: str,
        rubric: str,
        api_key: str | None = None,
        sample_rate: float = 0.05,
        max_per_minute: float = 60.0,
        queue_size: int = 1000,
        timeout_s: float = 30.0,
        max_chars: int = 8000,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        bucket: TokenBucket | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self.model = model
        self.rubric = rubric
        self.api_key = api_key
        self.sample_rate = sample_rate
        self.timeout_s = timeout_s
        self.max_chars = max_chars
        self.wall_ms = wall_ms
        self.bucket = bucket or TokenBucket(max_per_minute)
        self.sleep = sleep
        self.counters = JudgeCounters()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._results: list[Judgement] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0
        self._thread = threading.Thread(target=self._run, name="llmpulse-judge", daemon=True)
        self._thread.start()

    # -- the stream side (never blocks) -------------------------------------------------

    def submit(self, call: JudgeCall) -> bool:
        """Queue ``call`` if sampled; False if not sampled or dropped (queue full)."""
        with self._lock:
            self.counters.submitted += 1
            if not sampled(call.event_id, self.sample_rate):
                self.counters.not_sampled += 1
                return False
            try:
                self._queue.put_nowait(call)
            except queue.Full:
                self.counters.dropped += 1
                return False
            self._busy += 1
            return True

    def drain(self) -> list[Judgement]:
        with self._lock:
            out, self._results = self._results, []
        return out

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every queued call is answered (tests, end of a replay)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def close(self, timeout: float = 10.0) -> None:
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    # -- the judge thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self._judge(item)
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

    def _judge(self, call: JudgeCall) -> None:
        wait = self.bucket.wait_time()
        if wait > 0:
            self.sleep(wait)
        body = json.dumps(
            {
                "model": self.model,
                "temperature": 0,
                "messages": [
                    {"role": "system", "content": self.rubric},
                    {
                        "role": "user",
                        "content": f"Question:\n{call.prompt[: self.max_chars]}\n\n"
                        f"Answer:\n{call.response[: self.max_chars]}",
                    },
                ],
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with self._lock:
            self.counters.calls += 1
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                score, reason = parse_reply(resp.read())
        except urllib.error.HTTPError as exc:
            self._fail(f"http {exc.code}")
            return
        except (urllib.error.URLError, OSError) as exc:
            self._fail(f"unreachable: {exc}")
            return
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            self._fail(f"unreadable answer: {exc}")
            return
        with self._lock:
            self.counters.results += 1
            self._results.append(Judgement(call.event_id, score, reason, self.wall_ms()))

    def _fail(self, why: str) -> None:
        kind = why.split(":", maxsplit=1)[0]
        with self._lock:
            self.counters.failures += 1
            self.counters.last_error = why
            self.counters.by_failure[kind] = self.counters.by_failure.get(kind, 0) + 1
        log.warning("judge: %s", why)
