"""Where notified transitions go: PagerDuty, webhooks, Slack, the control topic.

A :class:`Sink` turns one transition into one delivery and raises
:class:`SinkError` saying whether a retry may help. The :class:`Dispatcher`
keeps stream processing free of all of it: ``submit`` only appends to a
bounded per-sink queue (dropping, counted, when it is full); one daemon thread
per sink delivers in order, retrying 429, 5xx and network errors with
exponential backoff and jitter, never retrying other 4xx. Per-sink order
matters: a resolve must never overtake its trigger, and a slow Slack must not
delay PagerDuty.

HTTP goes through ``urllib.request`` (no extra dependency); Kafka publishing
is injected into :class:`ControlSink`, so nothing here imports a Kafka client.

>>> from datetime import UTC, datetime
>>> from llmpulse.alerts.rules import ThresholdRule
>>> from llmpulse.alerts.engine import synthetic_transition
>>> t = synthetic_transition(ThresholdRule(name="p99", signal="latency_p99_ms",
...     threshold=800, severity="error"), datetime(2026, 1, 1, tzinfo=UTC))
>>> ev = pagerduty_event(t, "R" * 32)
>>> ev["event_action"], ev["payload"]["severity"], ev["payload"]["source"], ev["client"]
('trigger', 'error', 'llmpulse-test', 'llmpulse')
>>> sink = MemorySink()
>>> d = Dispatcher([sink])
>>> d.submit(t), d.flush(timeout=5), [x.rule for x in sink.transitions]
(True, True, ['p99'])
>>> d.close()
True
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any, Final, Protocol, runtime_checkable

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import SecretStr

from llmpulse import __version__
from llmpulse.alerts.config import (
    DEFAULT_ACTION_MAP,
    PAGERDUTY_EVENTS_URL,
    AlertSinkSettings,
    check_routing_key,
)
from llmpulse.alerts.state import AlertState, Transition
from llmpulse.errors import ConfigError, LlmpulseError

__all__ = [
    "ControlSink",
    "Dispatcher",
    "DispatcherMetrics",
    "MemorySink",
    "PagerDutySink",
    "Publish",
    "Sink",
    "SinkError",
    "SlackSink",
    "WebhookSink",
    "build_sinks",
    "control_event",
    "pagerduty_event",
    "post_json",
    "slack_message",
]

log = logging.getLogger("llmpulse.alerts")

Publish = Callable[[str, bytes, bytes], None]
"""``publish(topic, key, value)``: hands one message to Kafka, raising on failure."""

PD_SUMMARY_MAX: Final = 1024
_USER_AGENT: Final = f"llmpulse/{__version__}"
_SEVERITY_EMOJI: Final = {
    "critical": ":red_circle:",
    "error": ":large_orange_circle:",
    "warning": ":large_yellow_circle:",
    "info": ":large_blue_circle:",
}


class SinkError(LlmpulseError):
    """A delivery failed. ``retryable`` says whether trying again may help;
    ``retry_after`` is the receiver's hint in seconds (``Retry-After``)."""

    def __init__(
        self,
        sink: str,
        problem: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.sink = sink
        self.problem = problem
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"sink {sink}: {problem}")


@runtime_checkable
class Sink(Protocol):
    """Delivers transitions somewhere. ``send`` is called from a dispatcher thread,
    one transition at a time per sink, and raises :class:`SinkError` on failure."""

    @property
    def name(self) -> str: ...

    def send(self, transition: Transition) -> None: ...


# --- HTTP ------------------------------------------------------------------------------


def post_json(
    sink: str,
    url: str,
    body: Any,
    *,
    timeout: float,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, bytes]:
    """POST ``body`` as JSON; return (status, body) of a 2xx answer, raise SinkError otherwise.

    429, 408 and 5xx answers and network errors are retryable; other 4xx are not.
    """
    req = urllib.request.Request(
        url,
        data=orjson.dumps(body),
        headers={"Content-Type": "application/json", "User-Agent": _USER_AGENT, **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        status = int(exc.code)
        try:
            text = exc.read()[:300].decode("utf-8", "replace").strip()
        except OSError:
            text = ""
        raise SinkError(
            sink,
            f"HTTP {status}: {text or exc.reason}",
            retryable=status in (408, 429) or status >= 500,
            status=status,
            retry_after=_retry_after(exc.headers.get("Retry-After") if exc.headers else None),
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SinkError(sink, f"cannot reach the endpoint: {reason}", retryable=True) from None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds or an HTTP date).

    >>> _retry_after("2"), _retry_after(None), _retry_after("soon")
    (2.0, None, None)
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clean(value: Any) -> Any:
    """Drop NaN/inf (no JSON spelling) from nested detail values."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    return value


# --- PagerDuty -------------------------------------------------------------------------


def pagerduty_event(
    t: Transition,
    routing_key: str,
    *,
    client: str = "llmpulse",
    client_url: str | None = None,
) -> dict[str, Any] | None:
    """The Events API v2 body of a transition: ``trigger`` when it fires, ``resolve``
    when it resolves (same ``dedup_key``: the incident key), None for transitions
    not notified."""
    if t.suppressed:
        return None
    if t.to_state is AlertState.FIRING:
        action = "trigger"
    elif t.to_state is AlertState.RESOLVED and t.from_state is AlertState.FIRING:
        action = "resolve"
    else:
        return None
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": t.page_key,
    }
    if action == "resolve":
        return body  # PagerDuty ignores a payload on resolve; the dedup key says it all
    labels = dict(t.labels)
    payload: dict[str, Any] = {
        "summary": _truncate(t.summary or t.rule, PD_SUMMARY_MAX),
        "source": labels.get("service") or "llmpulse",
        "severity": t.severity,
        "timestamp": t.event_time.isoformat(timespec="milliseconds"),
        "class": t.signal or t.rule,
        "custom_details": _clean(
            {
                "rule": t.rule,
                "kind": t.kind,
                "signal": t.signal,
                "value": t.value,
                "threshold": t.threshold,
                "window_seconds": t.window_seconds,
                "labels": labels,
                "event_time": t.event_time.isoformat(timespec="milliseconds"),
                "reason": t.reason,
                "alert_key": t.dedup_key,
                **({"details": dict(t.extra)} if t.extra else {}),
            }
        ),
    }
    if labels.get("model"):
        payload["component"] = labels["model"]
    if labels.get("service"):
        payload["group"] = labels["service"]
    body["payload"] = payload
    body["client"] = client
    if client_url:
        body["client_url"] = client_url
    links = [
        {"href": href, "text": text}
        for href, text in ((t.runbook_url, "Runbook"), (t.dashboard_url, "Dashboard"))
        if href
    ]
    if links:
        body["links"] = links
    return body


class PagerDutySink:
    """PagerDuty Events API v2."""

    name = "pagerduty"

    def __init__(
        self,
        routing_key: str | SecretStr,
        url: str = PAGERDUTY_EVENTS_URL,
        *,
        timeout: float = 10.0,
        client: str = "llmpulse",
        client_url: str | None = None,
    ) -> None:
        key = routing_key if isinstance(routing_key, SecretStr) else SecretStr(routing_key)
        try:
            check_routing_key(key)
        except ValueError as exc:
            raise ConfigError("pagerduty.routing_key", str(exc)) from None
        self._key = key
        self.url = url
        self.timeout = timeout
        self.client = client
        self.client_url = client_url

    def event(self, t: Transition) -> dict[str, Any] | None:
        return pagerduty_event(
            t, self._key.get_secret_value(), client=self.client, client_url=self.client_url
        )

    def send(self, transition: Transition) -> None:
        body = self.event(transition)
        if body is not None:
            post_json(self.name, self.url, body, timeout=self.timeout)

    def __repr__(self) -> str:
        return f"PagerDutySink(url={self.url!r})"


# --- generic webhook and Slack ---------------------------------------------------------


class WebhookSink:
    """POSTs every notified transition as JSON (``Transition.to_dict`` plus ``version``)."""

    name = "webhook"

    def __init__(
        self, url: str, *, timeout: float = 10.0, headers: Mapping[str, str] | None = None
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.headers = dict(headers or {})

    def send(self, transition: Transition) -> None:
        if transition.notify:
            body = {"version": 1, **transition.to_dict()}
            post_json(self.name, self.url, body, timeout=self.timeout, headers=self.headers)


def slack_message(t: Transition) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (notifications) plus Block Kit ``blocks``."""
    firing = t.to_state is AlertState.FIRING
    icon = _SEVERITY_EMOJI.get(t.severity, "") if firing else ":white_check_mark:"
    state = "FIRING" if firing else "RESOLVED"
    title = _truncate(f"[{state}] {t.rule} ({t.severity})", 150)
    series = ", ".join(f"{k}={v}" for k, v in sorted(t.labels.items()) if k != "grouping")
    fields = [
        f"*Value*\n{t.value:.4g}",
        f"*Threshold*\n{t.threshold:.4g}",
        f"*Window*\n{t.window_seconds}s" if t.window_seconds else "*Window*\n-",
        f"*Series*\n{_truncate(series or 'all', 1900)}",
    ]
    links = " · ".join(
        f"<{href}|{text}>"
        for href, text in ((t.runbook_url, "Runbook"), (t.dashboard_url, "Dashboard"))
        if href
    )
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _truncate(t.summary, 3000)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    context = f"event time {t.event_time:%Y-%m-%d %H:%M:%S} UTC · dedup `{t.dedup_key}`"
    if links:
        context = f"{links} · {context}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": _truncate(f"{icon} {state}: {t.summary}".strip(), 3000), "blocks": blocks}


class SlackSink:
    """Slack incoming webhook (the URL is a secret: it is never logged)."""

    name = "slack"

    def __init__(self, webhook_url: str | SecretStr, *, timeout: float = 10.0) -> None:
        self._url = webhook_url if isinstance(webhook_url, SecretStr) else SecretStr(webhook_url)
        self.timeout = timeout

    def send(self, transition: Transition) -> None:
        if transition.notify:
            post_json(
                self.name,
                self._url.get_secret_value(),
                slack_message(transition),
                timeout=self.timeout,
            )

    def __repr__(self) -> str:
        return "SlackSink(webhook_url=**********)"


# --- control topic -----------------------------------------------------------------------


def _norm(name: str) -> str:
    return name.replace("-", "_").replace(":", "_").lower()


def actions_for(t: Transition, action_map: Mapping[str, str]) -> tuple[str, ...]:
    """The control actions of a transition: the rule's ``actions``, else the first of
    its rule name, ``category`` label and signal found in ``action_map`` (a key also
    matches names it prefixes, so ``cost_spike`` covers ``cost-spike-per-minute``).

    >>> from datetime import UTC, datetime
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> t = Transition("cost-spike-per-minute", {}, AlertState.PENDING, AlertState.FIRING,
    ...                1.0, 0.5, 60, t0, t0, "k", "warning", "s")
    >>> actions_for(t, DEFAULT_ACTION_MAP)
    ('throttle',)
    """
    if t.actions:
        return tuple(t.actions)
    keys = {_norm(k): v for k, v in action_map.items()}
    for candidate in (t.rule, t.labels.get("category", ""), t.signal):
        c = _norm(candidate)
        if not c:
            continue
        for key, action in keys.items():
            if c == key or c.startswith(key + "_"):
                return (action,)
    return ()


def control_event(t: Transition, action: str) -> dict[str, Any]:
    """The JSON body of one control event on ``llm.control``."""
    return {
        "version": 1,
        "type": "llmpulse.control",
        "action": action,
        "state": str(t.to_state),
        "rule": t.rule,
        "signal": t.signal,
        "severity": t.severity,
        "labels": dict(t.labels),
        "value": _clean(t.value),
        "threshold": _clean(t.threshold),
        "dedup_key": t.dedup_key,
        "event_time": t.event_time.isoformat(timespec="milliseconds"),
        "wall_time": t.wall_time.isoformat(timespec="milliseconds"),
        "summary": t.summary,
    }


class ControlSink:
    """Publishes control actions (retrain, rollback, throttle...) for firing alerts.

    Messages are keyed by dedup key, so the events of one series stay in order
    in one partition. ``publish`` is called from the dispatcher thread: with an
    asyncio producer, wrap it with ``asyncio.run_coroutine_threadsafe(...).result()``.
    """

    name = "control"

    def __init__(
        self,
        publish: Publish,
        topic: str = "llm.control",
        action_map: Mapping[str, str] | None = None,
        *,
        emit_resolved: bool = False,
    ) -> None:
        self.publish = publish
        self.topic = topic
        self.action_map = dict(DEFAULT_ACTION_MAP if action_map is None else action_map)
        self.emit_resolved = emit_resolved

    def events(self, t: Transition) -> list[dict[str, Any]]:
        """The control events ``t`` produces (none for most transitions)."""
        if t.suppressed:
            return []
        if t.to_state is not AlertState.FIRING and not (
            self.emit_resolved and t.to_state is AlertState.RESOLVED
        ):
            return []
        return [control_event(t, a) for a in actions_for(t, self.action_map)]

    def send(self, transition: Transition) -> None:
        for event in self.events(transition):
            try:
                self.publish(self.topic, transition.dedup_key.encode(), orjson.dumps(event))
            except Exception as exc:  # whatever the producer raises, it may pass
                raise SinkError(
                    self.name, f"publish to {self.topic} failed: {exc!r}", retryable=True
                ) from exc


# --- test double -----------------------------------------------------------------------


class MemorySink:
    """Records what it is sent; ``fail_with`` scripts errors for the next sends.

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


# --- the dispatcher ------------------------------------------------------------------------


class DispatcherMetrics:
    """The dispatcher's counters on one registry (create once per registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
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


class _Lane:
    """One sink's queue and delivery thread."""

    def __init__(self, sink: Sink, owner: Dispatcher) -> None:
        self.sink = sink
        self.name = sink.name
        self.owner = owner
        self.queue: deque[Transition] = deque()
        self.cond = threading.Condition()
        self.busy = False
        self.closed = False
        self.thread = threading.Thread(target=self._run, name=f"alerts-{self.name}", daemon=True)

    def offer(self, t: Transition) -> bool:
        with self.cond:
            if self.closed or len(self.queue) >= self.owner.queue_size:
                return False
            self.queue.append(t)
            self.cond.notify_all()
            return True

    def depth(self) -> int:
        return len(self.queue) + int(self.busy)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def wait_idle(self, deadline: float) -> bool:
        with self.cond:
            while self.queue or self.busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def drain(self) -> int:
        with self.cond:
            n = len(self.queue)
            self.queue.clear()
            self.cond.notify_all()
            return n

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.closed:
                    self.cond.wait()
                if not self.queue:
                    return
                t = self.queue.popleft()
                self.busy = True
            try:
                self.owner._deliver(self, t)
            finally:
                with self.cond:
                    self.busy = False
                    self.cond.notify_all()


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
        self.dry_run = dry_run
        self._abort = threading.Event()
        self._sleep: Callable[[float], object] = sleep or self._abort.wait
        self._rng = rng
        self._closed = False
        self._lock = threading.Lock()
        self.recorded: list[tuple[str, Transition]] = []
        self._stats: dict[str, dict[str, int]] = {
            n: {"sent": 0, "failed": 0, "dropped": 0, "retried": 0} for n in names
        }
        self._lanes = [_Lane(s, self) for s in sinks]
        for lane in self._lanes:
            self.metrics.queued.labels(lane.name).set_function(lane.depth)
            if not dry_run:
                lane.thread.start()

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
            if not self._closed and lane.offer(transition):
                accepted = True
            else:
                self._count(lane.name, "dropped")
        return accepted

    def submit_all(self, transitions: Iterable[Transition]) -> int:
        return sum(self.submit(t) for t in transitions)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued transition is delivered or given up; False on timeout."""
        deadline = time.monotonic() + timeout
        return all(lane.wait_idle(deadline) for lane in self._lanes if not self.dry_run)

    def close(self, timeout: float = 5.0) -> bool:
        """Stop accepting, deliver what is queued within ``timeout``, then give up.

        Returns True when everything queued was delivered (or given up) in time;
        otherwise what is left is counted as dropped and the threads, daemons,
        are left to finish their current attempt.
        """
        self._closed = True
        deadline = time.monotonic() + timeout
        for lane in self._lanes:
            lane.close()
        clean = True
        for lane in self._lanes:
            if lane.thread.is_alive():
                lane.thread.join(max(0.0, deadline - time.monotonic()))
            if lane.thread.is_alive():
                clean = False
        if not clean:
            self._abort.set()  # wakes retry back-offs; current attempts run to their timeout
            for lane in self._lanes:
                self._count(lane.name, "dropped", lane.drain())
        return clean

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _delay(self, attempt: int, hint: float | None) -> float:
        delay = min(self.max_backoff_s, self.backoff_s * 2.0 ** (attempt - 1))
        if hint is not None:
            delay = max(delay, min(hint, self.max_backoff_s))
        # Jitter spreads the retries of many workers hitting one rate limit.
        return delay * (1.0 + self.jitter * self._rng())

    def _deliver(self, lane: _Lane, t: Transition) -> None:
        name = lane.name
        for attempt in range(1, self.max_attempts + 1):
            if self._abort.is_set():
                self._count(name, "dropped")
                return
            try:
                lane.sink.send(t)
            except SinkError as exc:
                if not exc.retryable or attempt == self.max_attempts:
                    self._count(name, "failed")
                    log.error(
                        "alert %s (%s) not delivered to %s after %d attempt(s): %s",
                        t.dedup_key,
                        t.to_state,
                        name,
                        attempt,
                        exc.problem,
                    )
                    return
                delay = self._delay(attempt, exc.retry_after)
                self._count(name, "retried")
                log.warning(
                    "alert %s to %s failed (attempt %d/%d): %s; retrying in %.1fs",
                    t.dedup_key,
                    name,
                    attempt,
                    self.max_attempts,
                    exc.problem,
                    delay,
                )
                self._sleep(delay)
            except Exception:
                # A bug in one sink must not kill its thread (the queue would stall).
                self._count(name, "failed")
                log.exception("alert %s: sink %s raised unexpectedly", t.dedup_key, name)
                return
            else:
                self._count(name, "sent")
                log.info("alert %s (%s) delivered to %s", t.dedup_key, t.to_state, name)
                return


# --- construction from settings ------------------------------------------------------------


def build_sinks(
    settings: AlertSinkSettings,
    pagerduty_url: str | None = None,
    pagerduty_routing_key: str | SecretStr | None = None,
    *,
    publish: Publish | None = None,
    control_topic: str = "llm.control",
) -> list[Sink]:
    """The sinks the settings configure.

    ``pagerduty_url``/``pagerduty_routing_key`` (the ``pagerduty`` section:
    ``LLMPULSE_PAGERDUTY_URL``, ``LLMPULSE_PAGERDUTY_ROUTING_KEY``) win over the
    ``alerts.pagerduty_*`` fields. PagerDuty needs a routing key; the control sink
    needs ``publish`` and is left out (with a log line) without one.

    >>> [s.name for s in build_sinks(AlertSinkSettings(), None, "K" * 32,
    ...                              publish=lambda topic, key, value: None)]
    ['pagerduty', 'control']
    """
    sinks: list[Sink] = []
    timeout = settings.http_timeout_s
    key = pagerduty_routing_key or settings.pagerduty_routing_key
    if key is not None:
        sinks.append(PagerDutySink(key, pagerduty_url or settings.pagerduty_url, timeout=timeout))
    if settings.webhook_url:
        sinks.append(WebhookSink(settings.webhook_url, timeout=timeout))
    if settings.slack_webhook_url is not None:
        sinks.append(SlackSink(settings.slack_webhook_url, timeout=timeout))
    if settings.control_enabled:
        if publish is None:
            log.info("alerts: no Kafka producer given, control events are not published")
        else:
            sinks.append(
                ControlSink(
                    publish,
                    control_topic,
                    settings.action_map,
                    emit_resolved=settings.control_emit_resolved,
                )
            )
    return sinks
