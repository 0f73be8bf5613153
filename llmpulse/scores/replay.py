"""Score events in replay files: telling them from trace events (pure).

A recorded stream is one JSON Lines file in arrival order, so scores sit
between the calls they follow, marked ``"kind": "score"`` (trace events have no
``kind``; the field is reserved). A file of scores alone (the ``llm.scores``
topic dumped) works too: ``llmpulse replay --scores FILE`` reads every line of
FILE as a score, ``kind`` or not. See docs/canary.md.

>>> from llmpulse.processors.traces import RawMessage
>>> lines = [RawMessage(b'{"schema_version":1,"event_id":"a"}', "f:1"),
...          RawMessage(b'{"kind":"score","event_id":"a","name":"x"}', "f:2"),
...          RawMessage(b'{"event_id":"b","attributes":{"kind":"score"}}', "f:3"),
...          RawMessage(b'{not json', "f:4")]
>>> traces, scores = split_batch(lines)
>>> [m.source for m in traces], [m.source for m in scores]
(['f:1', 'f:3', 'f:4'], ['f:2'])
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from llmpulse.processors.traces import RawMessage
from llmpulse.schemas.score import SCORE_KIND

_MARK = b'"kind"'


def is_score(raw: bytes) -> bool:
    """True for a JSON object whose top-level ``kind`` is ``"score"``."""
    if _MARK not in raw:  # the common case costs one substring search
        return False
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False  # the trace validator rejects it with the usual reason
    return isinstance(doc, dict) and doc.get("kind") == SCORE_KIND


def split_batch(messages: Sequence[RawMessage]) -> tuple[list[RawMessage], list[RawMessage]]:
    """(trace messages, score messages) of one batch, each in file order."""
    traces: list[RawMessage] = []
    scores: list[RawMessage] = []
    for m in messages:
        (scores if is_score(m.value) else traces).append(m)
    return traces, scores
