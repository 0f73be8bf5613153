"""Time one LLM call and emit its event.

``track_llm_call`` works as ``with`` and ``async with``; the block gets a
:class:`CallRecord` to note the usage, the first token and other fields. On exit
the event gets its latency (from a monotonic counter), its status, and is handed
to the emitter's non-blocking ``emit``. An exception raised in the block marks
the call as failed and is re-raised, never swallowed.

>>> class Printer:
...     def emit(self, event):
...         print(event["status"], event["input_tokens"], event["cached_input_tokens"])
...         return True
>>> with track_llm_call(Printer(), service="chat-api", model="claude-haiku-4-5") as call:
...     call.record_usage({"input_tokens": 20, "cache_read_input_tokens": 1000,
...                        "cache_creation_input_tokens": 0, "output_tokens": 50})
ok 1020 1000
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Literal, Protocol

from llmpulse.schemas.version import SCHEMA_VERSION

__all__ = [
    "CallRecord",
    "CallTracker",
    "SupportsEmit",
    "UsageApi",
    "track_llm_call",
    "usage_fields",
]

_log = logging.getLogger(__name__)

UsageApi = Literal["auto", "openai_chat", "openai_responses", "anthropic", "gemini"]


class SupportsEmit(Protocol):
    """Anything with a non-blocking ``emit``: :class:`~llmpulse.client.emitter.Emitter`
    and :class:`~llmpulse.client.emitter.AsyncEmitter` both qualify."""

    def emit(self, event: Mapping[str, Any], /) -> bool: ...


# --------------------------------------------------------------------------- usage


def _has(usage: Any, name: str) -> bool:
    if isinstance(usage, Mapping):
        return name in usage
    return hasattr(usage, name)


def _get(usage: Any, *names: str) -> Any:
    """The first non-None of ``names`` on a mapping or an SDK object."""
    for name in names:
        value = usage.get(name) if isinstance(usage, Mapping) else getattr(usage, name, None)
        if value is not None:
            return value
    return None


def _count(value: Any) -> int | None:
    # bool is an int subclass; a True token count is a bug upstream, not 1 token.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return int(value)


def _nested(usage: Any, parent: str, child: str) -> int | None:
    details = _get(usage, parent)
    return None if details is None else _count(_get(details, child))


def _detect(usage: Any) -> UsageApi:
    if _has(usage, "prompt_tokens") or _has(usage, "completion_tokens"):
        # Also what LiteLLM and most OpenAI-compatible gateways return; their
        # prompt_tokens already include the cached tokens, as OpenAI's do.
        return "openai_chat"
    if _has(usage, "prompt_token_count") or _has(usage, "promptTokenCount"):
        return "gemini"
    # Anthropic's Usage always has these attributes, even when they are None.
    if _has(usage, "cache_read_input_tokens") or _has(usage, "cache_creation_input_tokens"):
        return "anthropic"
    if _has(usage, "input_tokens") or _has(usage, "output_tokens"):
        # Without cache fields both remaining conventions read the same.
        return "openai_responses"
    raise ValueError(f"unrecognised usage object: {type(usage).__name__}")


def usage_fields(usage: Any, *, api: UsageApi = "auto") -> dict[str, int]:
    """Token counts of a provider's ``usage`` (object or dict) in the event's convention:
    ``input_tokens`` includes cached reads and cache creation, ``output_tokens``
    includes reasoning. Counts the usage does not carry are left out.

    >>> chat = usage_fields({"prompt_tokens": 1200, "completion_tokens": 300,
    ...                      "prompt_tokens_details": {"cached_tokens": 1024},
    ...                      "completion_tokens_details": {"reasoning_tokens": 128}})
    >>> chat["input_tokens"], chat["cached_input_tokens"], chat["reasoning_tokens"]
    (1200, 1024, 128)
    >>> claude = usage_fields({"input_tokens": 10, "cache_read_input_tokens": 900,
    ...                        "cache_creation_input_tokens": 90, "output_tokens": 40})
    >>> claude["input_tokens"], claude["cached_input_tokens"], claude["cache_creation_input_tokens"]
    (1000, 900, 90)
    """
    kind = _detect(usage) if api == "auto" else api
    out: dict[str, int | None] = {}
    if kind == "openai_chat":
        out["input_tokens"] = _count(_get(usage, "prompt_tokens"))
        out["output_tokens"] = _count(_get(usage, "completion_tokens"))
        out["cached_input_tokens"] = _nested(usage, "prompt_tokens_details", "cached_tokens")
        out["reasoning_tokens"] = _nested(usage, "completion_tokens_details", "reasoning_tokens")
    elif kind == "openai_responses":
        out["input_tokens"] = _count(_get(usage, "input_tokens"))
        out["output_tokens"] = _count(_get(usage, "output_tokens"))
        out["cached_input_tokens"] = _nested(usage, "input_tokens_details", "cached_tokens")
        out["reasoning_tokens"] = _nested(usage, "output_tokens_details", "reasoning_tokens")
    elif kind == "anthropic":
        # Anthropic's input_tokens counts only the uncached part after the last
        # cache breakpoint; cache reads and writes are reported beside it.
        uncached = _count(_get(usage, "input_tokens"))
        read = _count(_get(usage, "cache_read_input_tokens"))
        created = _count(_get(usage, "cache_creation_input_tokens"))
        if uncached is not None:
            out["input_tokens"] = uncached + (read or 0) + (created or 0)
        out["output_tokens"] = _count(_get(usage, "output_tokens"))
        out["cached_input_tokens"] = read
        out["cache_creation_input_tokens"] = created
    elif kind == "gemini":
        # Gemini's prompt count includes cached content, but its candidates count
        # excludes the thinking tokens, which are billed as output.
        out["input_tokens"] = _count(_get(usage, "prompt_token_count", "promptTokenCount"))
        visible = _count(_get(usage, "candidates_token_count", "candidatesTokenCount"))
        thoughts = _count(_get(usage, "thoughts_token_count", "thoughtsTokenCount"))
        if visible is not None or thoughts is not None:
            out["output_tokens"] = (visible or 0) + (thoughts or 0)
        out["cached_input_tokens"] = _count(
            _get(usage, "cached_content_token_count", "cachedContentTokenCount")
        )
        out["reasoning_tokens"] = thoughts
    else:
        raise ValueError(f"unknown usage api {api!r}")
    return {k: v for k, v in out.items() if v is not None}


# --------------------------------------------------------------------------- the record


class CallRecord:
    """The event of one call under construction, handed to the ``with`` block."""

    def __init__(self, fields: dict[str, Any], perf: Callable[[], float], start: float) -> None:
        self._fields = fields
        self._perf = perf
        self._start = start
        self.emitted: bool | None = None
        """What ``emit`` answered once the block exited (None before)."""

    @property
    def event_id(self) -> str:
        """Known from the start, to correlate logs with the event."""
        event_id: str = self._fields["event_id"]
        return event_id

    @property
    def event(self) -> dict[str, Any]:
        """A copy of the event as it stands."""
        return dict(self._fields)

    def set(self, **fields: Any) -> None:
        """Set any event fields (``finish_reason``, ``response_model``, ``scores``,
        ``prompt``, ``response``, ``user_id``, ``trace_id``...); None removes one."""
        for name, value in fields.items():
            if value is None:
                self._fields.pop(name, None)
            else:
                self._fields[name] = value

    def record_usage(self, usage: Any, *, api: UsageApi = "auto") -> None:
        """Take the token counts of a provider's ``usage`` (see :func:`usage_fields`).

        Counts missing from ``usage`` keep their earlier value, so the partial usages
        of a stream (Anthropic's ``message_start`` then ``message_delta``) can be fed
        in turn. An unrecognised shape is logged and ignored: instrumentation must
        not break the call it observes.
        """
        try:
            self._fields.update(usage_fields(usage, api=api))
        except ValueError as exc:
            _log.warning("llmpulse: usage ignored: %s", exc)

    def first_token(self) -> None:
        """Mark the arrival of the first token; later calls are ignored."""
        if "ttft_ms" not in self._fields:
            self._fields["ttft_ms"] = _ms(self._perf() - self._start)

    def fail(self, error_type: str) -> None:
        """Mark the call as failed without raising (a refusal, an error the caller handled)."""
        self._fields["status"] = "error"
        self._fields["error_type"] = error_type


def _ms(seconds: float) -> float:
    return round(max(0.0, seconds) * 1000.0, 3)


class CallTracker:
    """The context manager returned by :func:`track_llm_call` (single use)."""

    def __init__(
        self,
        emitter: SupportsEmit,
        fields: dict[str, Any],
        clock: Callable[[], float],
        perf: Callable[[], float],
    ) -> None:
        self._emitter = emitter
        self._fields = fields
        self._clock = clock
        self._perf = perf
        self._record: CallRecord | None = None

    def __enter__(self) -> CallRecord:
        if self._record is not None:
            raise RuntimeError("a CallTracker times one call; call track_llm_call again")
        self._fields["timestamp"] = round(self._clock() * 1000.0)
        self._record = CallRecord(self._fields, self._perf, self._perf())
        return self._record

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        record = self._record
        if record is None:
            return
        fields = self._fields
        fields["latency_ms"] = _ms(self._perf() - record._start)
        if exc_type is not None:
            # Cancellation and KeyboardInterrupt end calls too: record them.
            fields["status"] = "error"
            fields["error_type"] = exc_type.__name__
        else:
            fields.setdefault("status", "ok")
        try:
            record.emitted = self._emitter.emit(dict(fields))
        except Exception:
            # An emitter is not supposed to raise; if one does it must not mask
            # the caller's own exception nor fail a call that succeeded.
            _log.exception("llmpulse: emit raised")
            record.emitted = False

    async def __aenter__(self) -> CallRecord:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def track_llm_call(
    emitter: SupportsEmit,
    *,
    service: str,
    model: str,
    endpoint: str | None = None,
    provider: str | None = None,
    tenant: str | None = None,
    team: str | None = None,
    prompt_version: str | None = None,
    variant: str | None = None,
    operation: str = "chat",
    attributes: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
    perf: Callable[[], float] = time.perf_counter,
) -> CallTracker:
    """Time one LLM call; use as ``with`` or ``async with`` (see the module doc).

    ``clock`` gives the wall-clock start (seconds since the epoch, stored as epoch
    ms) and ``perf`` the monotonic counter the durations come from; both are
    injectable for tests.
    """
    fields: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "event_id": uuid.uuid4().hex,
        "service": service,
        "model": model,
        "operation": operation,
    }
    optional = {
        "endpoint": endpoint,
        "provider": provider,
        "tenant": tenant,
        "team": team,
        "prompt_version": prompt_version,
        "variant": variant,
    }
    fields.update({k: v for k, v in optional.items() if v is not None})
    if attributes:
        fields["attributes"] = dict(attributes)
    return CallTracker(emitter, fields, clock, perf)
