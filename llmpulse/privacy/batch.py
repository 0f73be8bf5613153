"""Redaction of whole batches, and of rejected messages, before anything is written.

The ingest path calls ``redact_batch`` on every validated ``TraceBatch`` (whatever
its entrance: JSON events from Kafka, OTLP spans, replay files) before the batch
reaches the store, and ``scrub_raw`` on the raw bytes of every rejected message
before it is stored in ``rejected_events`` or sent to the DLQ. Both are pure and
rewrite values in place; counts per PII type go to ``batch.redactions`` (one map
per row, the ``traces.redactions`` column) and come back as a total for metrics.

>>> from llmpulse.schemas.batch import TraceBatch
>>> from llmpulse.schemas.event import TraceEvent
>>> e = TraceEvent.model_validate({"schema_version": 1, "event_id": "a", "service": "s",
...     "model": "m", "timestamp": 1767225600000, "latency_ms": 5,
...     "prompt": "I am ann@example.com", "attributes": {"ip": "10.1.2.3"}})
>>> b = TraceBatch.from_events([e], ["test:1"])
>>> counts = redact_batch(b, RedactionPolicy())
>>> b.objects["prompt"][0], b.objects["attributes"][0], b.redactions[0]
('I am [EMAIL]', {'ip': '[IPV4]'}, {'email': 1, 'ipv4': 1})
>>> dict(counts.by_type), counts.events
({'email': 1, 'ipv4': 1}, 1)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import orjson

from llmpulse.privacy.policy import Redacted, RedactionPolicy, Redactor
from llmpulse.processors.traces import Rejection
from llmpulse.schemas.batch import TraceBatch

_TEXT_FIELDS: Final = ("prompt", "response")


@dataclass
class RedactionCounts:
    """What a redaction pass found: PII per type, texts dropped per field, events
    with at least one redaction, and user ids pseudonymised."""

    by_type: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    events: int = 0
    pseudonymised: int = 0

    def add(self, other: RedactionCounts) -> None:
        self.by_type.update(other.by_type)
        self.dropped.update(other.dropped)
        self.events += other.events
        self.pseudonymised += other.pseudonymised


def _merge(row: dict[str, int] | None, counts: dict[str, int]) -> dict[str, int]:
    if row is None:
        return dict(counts)
    for k, v in counts.items():
        row[k] = row.get(k, 0) + v
    return row


def redact_batch(batch: TraceBatch, policy: RedactionPolicy) -> RedactionCounts:
    """Redact ``batch`` in place under ``policy``; see the module docstring."""
    out = RedactionCounts()
    n = len(batch)
    if not n:
        return out
    r = policy.redactor
    rows: list[dict[str, int] | None] = batch.redactions.tolist()
    for name in _TEXT_FIELDS:
        if name not in policy.fields or not r.active(name):
            continue
        col = batch.objects[name]
        for i, text in enumerate(col.tolist()):
            if not text:
                continue
            done = r.redact(text, name)
            if not done.counts:
                continue
            col[i] = done.text
            rows[i] = _merge(rows[i], done.counts)
            if done.text is None:
                out.dropped[name] += 1
    if "attributes" in policy.fields and r.active("attributes"):
        col = batch.objects["attributes"]
        # Attribute values repeat across a batch (regions, versions, flags): each
        # distinct value is searched once.
        seen: dict[str, Redacted] = {}
        for i, attrs in enumerate(col.tolist()):
            if not attrs:
                continue
            changed: dict[str, str] | None = None
            for key, value in attrs.items():
                hit = seen.get(value)
                if hit is None:
                    hit = seen[value] = r.redact(value, "attributes")
                done = hit
                if not done.counts:
                    continue
                if changed is None:
                    changed = dict(attrs)  # the parsed dict may be shared: copy on write
                if done.text is None:
                    del changed[key]
                    out.dropped["attributes"] += 1
                else:
                    changed[key] = done.text
                rows[i] = _merge(rows[i], done.counts)
            if changed is not None:
                col[i] = changed
    if policy.pseudonymise_user_id:
        out.pseudonymised = _pseudonymise(batch, r)
    for row in rows:
        if row:
            out.events += 1
            out.by_type.update(row)
    batch.redactions[:] = rows
    return out


def _pseudonymise(batch: TraceBatch, r: Redactor) -> int:
    col = batch.objects["user_id"]
    ids = col.tolist()
    mapping = {u: r.pseudonym(u) for u in set(ids) if u}
    if not mapping:
        return 0
    col[:] = [mapping.get(u, u) for u in ids]
    return sum(1 for u in ids if u)


def scrub_raw(raw: bytes, policy: RedactionPolicy, *, store_text: bool) -> bytes:
    """The raw bytes of a rejected message as they may be stored: every string in
    it redacted under the policy's ``raw`` field, and prompt and response dropped
    when text is not stored. Text that is not JSON is redacted as text, so a
    message that failed to parse keeps no PII either.

    >>> p = RedactionPolicy()
    >>> scrub_raw(b'{"prompt": "hi", "note": "ann@example.com", "x": 1}', p, store_text=False)
    b'{"prompt":null,"note":"[EMAIL]","x":1}'
    >>> scrub_raw(b'not json, ann@example.com', p, store_text=True)
    b'not json, [EMAIL]'
    """
    r = policy.redactor
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _scrub_text(raw, r)
    if isinstance(data, dict) and not store_text:
        for name in _TEXT_FIELDS:
            if data.get(name) is not None:
                data[name] = None
    if r.active("raw"):
        data = _redact_tree(data, r)
    try:
        return orjson.dumps(data)
    except TypeError:  # nested deeper than orjson writes (it reads deeper)
        return _scrub_text(raw, r)


def scrub_rejections(
    rejections: Sequence[Rejection], policy: RedactionPolicy, *, store_text: bool
) -> list[Rejection]:
    """``scrub_raw`` on each rejection's bytes (ids, reasons and sources kept)."""
    return [replace(r, raw=scrub_raw(r.raw, policy, store_text=store_text)) for r in rejections]


def _scrub_text(raw: bytes, r: Redactor) -> bytes:
    if not r.active("raw"):
        return raw
    done = r.redact(raw.decode("utf-8", "replace"), "raw")
    return b"" if done.text is None else done.text.encode()


def _redact_tree(data: Any, r: Redactor) -> Any:
    """Every string value in a parsed JSON tree redacted; iterative, because a
    hostile message may nest as deep as the parser allows."""
    root: list[Any] = [data]
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        keys = range(len(node)) if isinstance(node, list) else list(node)
        for k in keys:
            v = node[k]
            if isinstance(v, str):
                done = r.redact(v, "raw")
                if done.counts:
                    node[k] = done.text
            elif isinstance(v, list | dict):
                stack.append(v)
    return root[0]
