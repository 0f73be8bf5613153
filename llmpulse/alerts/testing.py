"""Local HTTP receivers for alert sinks: a strict PagerDuty Events API v2 stand-in
and a plain JSON recorder (webhooks, Slack).

Library code, used by the tests and by ``llmpulse alerts test --local``. Each
receiver is an ``http.server`` on 127.0.0.1 and a free port, served by a thread;
it can be told to answer 429/5xx for the next requests, or to hang for a while.

>>> import urllib.request, json
>>> with PagerDutyReceiver() as pd:
...     body = {"routing_key": "R" * 32, "event_action": "trigger", "dedup_key": "k",
...             "payload": {"summary": "p99 high", "source": "api", "severity": "error"}}
...     req = urllib.request.Request(pd.url, data=json.dumps(body).encode(), method="POST")
...     with urllib.request.urlopen(req, timeout=5) as resp:
...         answer = json.loads(resp.read())
>>> resp.status, answer["status"], answer["dedup_key"], pd.incidents
(202, 'success', 'k', {'k': 'triggered'})
>>> for problem in validate_event({"routing_key": "short", "event_action": "fire"}):
...     print(problem)
routing_key: must be a string of 32 characters
event_action: must be one of trigger, acknowledge, resolve, got 'fire'
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Self
from urllib.parse import urlsplit

__all__ = [
    "PagerDutyReceiver",
    "ReceivedRequest",
    "RecordingReceiver",
    "validate_event",
]

PD_ACTIONS: Final = ("trigger", "acknowledge", "resolve")
PD_SEVERITIES: Final = ("critical", "error", "warning", "info")
PD_MAX_BYTES: Final = 512 * 1024
_PD_TOP: Final = frozenset(
    {
        "routing_key",
        "event_action",
        "dedup_key",
        "payload",
        "links",
        "images",
        "client",
        "client_url",
    }
)
_PD_PAYLOAD: Final = frozenset(
    {"summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"}
)


def _is_url(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    parts = urlsplit(v)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _optional_str(errors: list[str], obj: dict[str, Any], key: str, where: str) -> None:
    if key in obj and not isinstance(obj[key], str):
        errors.append(f"{where}{key}: must be a string")


def validate_event(body: Any) -> list[str]:
    """Every way ``body`` breaks the Events API v2 contract (empty when valid)."""
    if not isinstance(body, dict):
        return ["body: must be a JSON object"]
    errors: list[str] = [f"{k}: unknown field" for k in sorted(body.keys() - _PD_TOP)]
    key = body.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        errors.append("routing_key: must be a string of 32 characters")
    action = body.get("event_action")
    if action not in PD_ACTIONS:
        errors.append(f"event_action: must be one of {', '.join(PD_ACTIONS)}, got {action!r}")
    dedup = body.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or not dedup or len(dedup) > 255):
        errors.append("dedup_key: must be a non-empty string of at most 255 characters")
    if action in ("acknowledge", "resolve") and dedup is None:
        errors.append(f"dedup_key: is required to {action}")
    payload = body.get("payload")
    if action == "trigger" and payload is None:
        errors.append("payload: is required to trigger")
    if payload is not None:
        errors.extend(_payload_errors(payload, required=action == "trigger"))
    errors.extend(_list_errors(body, "links", "href"))
    errors.extend(_list_errors(body, "images", "src"))
    _optional_str(errors, body, "client", "")
    if "client_url" in body and not _is_url(body["client_url"]):
        errors.append("client_url: must be an http(s) URL")
    return errors


def _payload_errors(payload: Any, *, required: bool) -> list[str]:
    if not isinstance(payload, dict):
        return ["payload: must be an object"]
    errors = [f"payload.{k}: unknown field" for k in sorted(payload.keys() - _PD_PAYLOAD)]
    summary = payload.get("summary")
    if required or summary is not None:
        if not isinstance(summary, str) or not summary:
            errors.append("payload.summary: is required (a non-empty string)")
        elif len(summary) > 1024:
            errors.append(f"payload.summary: at most 1024 characters, got {len(summary)}")
    source = payload.get("source")
    if (required or source is not None) and (not isinstance(source, str) or not source):
        errors.append("payload.source: is required (a non-empty string)")
    severity = payload.get("severity")
    if (required or severity is not None) and severity not in PD_SEVERITIES:
        errors.append(
            f"payload.severity: must be one of {', '.join(PD_SEVERITIES)}, got {severity!r}"
        )
    if "timestamp" in payload:
        ts = payload["timestamp"]
        try:
            if not isinstance(ts, str):
                raise ValueError
            datetime.fromisoformat(ts)
        except ValueError:
            errors.append(f"payload.timestamp: must be an ISO 8601 date-time, got {ts!r}")
    for key in ("component", "group", "class"):
        _optional_str(errors, payload, key, "payload.")
    return errors


def _list_errors(body: dict[str, Any], key: str, url_field: str) -> list[str]:
    if key not in body:
        return []
    items = body[key]
    if not isinstance(items, list):
        return [f"{key}: must be a list"]
    errors = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not _is_url(item.get(url_field)):
            errors.append(f"{key}[{i}].{url_field}: must be an http(s) URL")
        elif "text" in item and not isinstance(item["text"], str):
            errors.append(f"{key}[{i}].text: must be a string")
    return errors


@dataclass
class ReceivedRequest:
    """One request as the receiver saw it, and what it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    json: Any = None
    errors: list[str] = field(default_factory=list)
    received_at: float = field(default_factory=time.time)


@dataclass
class _Scripted:
    status: int
    retry_after: float | None


class RecordingReceiver:
    """Records JSON POSTs and answers 200 (``answer()`` decides; subclasses validate).

    ``fail_next(n, status)`` answers ``status`` to the next ``n`` requests;
    ``delay`` (seconds) holds every answer back, to simulate a hanging endpoint
    (``stop`` releases the held requests).
    """

    path = "/"

    def __init__(self, *, delay: float = 0.0, path: str | None = None) -> None:
        if path is not None:
            self.path = path
        self.delay = delay
        self.requests: list[ReceivedRequest] = []
        self._script: deque[_Scripted] = deque()
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> Self:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self._server = server
        # a short poll interval makes stop() quick (shutdown waits for the next poll)
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), daemon=True, name="receiver"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("receiver not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    # -- scripting and inspection -----------------------------------------------------

    def fail_next(self, n: int = 1, status: int = 500, *, retry_after: float | None = None) -> None:
        with self._lock:
            self._script.extend(_Scripted(status, retry_after) for _ in range(n))

    @property
    def accepted(self) -> list[Any]:
        """JSON bodies of the requests answered 2xx, in arrival order."""
        with self._lock:
            return [r.json for r in self.requests if 200 <= r.status < 300]

    def wait_for(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until ``n`` requests were answered (any status)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    def answer(self, body: Any) -> tuple[int, Any, list[str]]:
        """(status, response JSON, errors) for an accepted-so-far request body."""
        return 200, {"ok": True}, []

    # -- the handler ------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        req = ReceivedRequest(h.path, dict(h.headers.items()), raw)
        if self.delay:
            self._stopping.wait(self.delay)
        with self._lock:
            scripted = self._script.popleft() if self._script else None
        headers: dict[str, str] = {}
        if scripted is not None:
            status, answer = scripted.status, {"status": "scripted failure"}
            if scripted.retry_after is not None:
                headers["Retry-After"] = f"{scripted.retry_after:g}"
        elif h.path != self.path:
            status, answer = 404, {"status": "not found"}
        else:
            try:
                req.json = json.loads(raw)
            except ValueError:
                status, answer, req.errors = 400, {"status": "invalid json"}, ["body: not JSON"]
            else:
                status, answer, req.errors = self.answer(req.json)
        req.status = status
        # Recorded before answering: a client that got its answer must find it here.
        with self._lock:
            self.requests.append(req)
            self._record(req)
            self._lock.notify_all()
        data = json.dumps(answer).encode()
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _record(self, req: ReceivedRequest) -> None:
        """Hook for subclasses, called under the lock for every answered request."""


class PagerDutyReceiver(RecordingReceiver):
    """A strict stand-in for ``POST /v2/enqueue`` of the PagerDuty Events API v2.

    Valid events get 202 ``{"status": "success", "dedup_key": ...}``; invalid ones
    400 with the list of ``errors``. ``events`` holds the accepted events,
    ``incidents`` the state of each dedup key (``triggered``, ``acknowledged``,
    ``resolved``).
    """

    path = "/v2/enqueue"

    def __init__(self, *, delay: float = 0.0) -> None:
        super().__init__(delay=delay)
        self.incidents: dict[str, str] = {}

    def answer(self, body: Any) -> tuple[int, Any, list[str]]:
        errors = validate_event(body)
        if len(json.dumps(body).encode()) > PD_MAX_BYTES:
            errors.append("body: larger than 512 KB")
        if errors:
            return (
                400,
                {"status": "invalid event", "message": "Event object is invalid", "errors": errors},
                errors,
            )
        key = body.get("dedup_key") or uuid.uuid4().hex
        body["dedup_key"] = key
        return 202, {"status": "success", "message": "Event processed", "dedup_key": key}, []

    def _record(self, req: ReceivedRequest) -> None:
        if req.status == 202:
            state = {"trigger": "triggered", "acknowledge": "acknowledged", "resolve": "resolved"}
            self.incidents[req.json["dedup_key"]] = state[req.json["event_action"]]

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self.accepted)

    @property
    def triggers(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event_action"] == "trigger"]

    @property
    def resolves(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event_action"] == "resolve"]

    @property
    def rejected(self) -> list[ReceivedRequest]:
        with self._lock:
            return [r for r in self.requests if r.status == 400]
