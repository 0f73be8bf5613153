"""JSON over HTTP for the webhook sinks, through ``urllib.request`` (no extra
dependency), with the receiver's answer turned into a :class:`SinkError` that
says whether a retry may help."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Final

import orjson

from llmpulse import __version__
from llmpulse.errors import SinkError

__all__ = ["post_json"]

_USER_AGENT: Final = f"llmpulse/{__version__}"


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
