"""What the worker's messages look like on Kafka: headers, sizes, the DLQ form.

The hops, the score path, the takeover's replay and the checkpoints all read or
write these messages; keeping their format in one place means a header added by
a sender is one a replaying reader understands.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson
from aiokafka import TopicPartition

from llmpulse.processors.traces import RawMessage, Rejection
from llmpulse.topology.watermarks import Report

Headers = list[tuple[str, bytes]]
FROM = "llmpulse-from"
_WM = "llmpulse-wm"
# Marks a keyed message carrying score contributions (JSON) instead of a batch.
KIND = "llmpulse-kind"
QUALITY = b"quality"
# A repartition message above this size is split (the topics allow 16 MiB).
_MAX_MESSAGE = 4 * 1024 * 1024
# Producer batches big enough for several repartition messages to one partition.
REPARTITION_BATCH_BYTES = 2 * _MAX_MESSAGE
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass
class Message:
    topic: str
    value: bytes | None
    key: bytes | None = None
    partition: int | None = None
    headers: Headers = field(default_factory=list)


class Sender(Protocol):
    """Hands one message to Kafka; the awaitable resolves when the broker has it."""

    async def send(self, message: Message) -> Awaitable[Any]: ...


def progress_headers(sender: str, reports: Iterable[Report]) -> Headers:
    wm = orjson.dumps([[r.source, r.time_ms, r.idle] for r in reports])
    return [(FROM, sender.encode()), (_WM, wm)]


def is_quality(headers: Sequence[tuple[str, bytes]] | None) -> bool:
    return any(k == KIND and v == QUALITY for k, v in headers or ())


def read_headers(headers: Sequence[tuple[str, bytes]] | None) -> tuple[str, list[Report]]:
    sender, reports = "", []
    for k, v in headers or ():
        if k == FROM:
            sender = v.decode()
        elif k == _WM:
            reports = [Report(str(s), t, bool(i)) for s, t, i in orjson.loads(v)]
    return sender, reports


def raw_messages(tp: TopicPartition, msgs: Iterable[Any]) -> list[RawMessage]:
    """Consumer records as the processors take them, named by where they came from
    (the name is what a rejection row and the DLQ point back to)."""
    return [
        RawMessage(
            m.value if isinstance(m.value, bytes) else b"",
            f"kafka:{tp.topic}/{tp.partition}@{m.offset}",
            m.key,
        )
        for m in msgs
    ]


def dlq_message(topic: str, rej: Rejection) -> Message:
    return Message(
        topic,
        rej.raw,
        key=rej.rejection_id.encode(),
        headers=[
            ("llmpulse-reason", rej.reason.encode()),
            ("llmpulse-source", rej.source.encode()),
        ],
    )


def progress_to_all(topic: str, partitions: int, headers: Headers) -> list[Message]:
    """An empty message to every partition of ``topic``: progress without rows."""
    return [Message(topic, b"", partition=q, headers=headers) for q in range(partitions)]


def split(
    topic: str,
    partition: int,
    headers: Headers,
    rows: npt.NDArray[np.int64],
    encode: Callable[[npt.NDArray[np.int64]], bytes],
    origin: npt.NDArray[np.int64] | None = None,
) -> list[Message]:
    """The rows as one message, or as several when too big for one. With
    ``origin``, rows of one origin stay in one message: the receiver recognises
    a resent message by its rows' origins, so one origin must not straddle two."""
    value = encode(rows)
    if len(value) <= _MAX_MESSAGE or len(rows) < 2:
        return [Message(topic, value, partition=partition, headers=headers)]
    half = len(rows) // 2
    if origin is not None:
        o = origin[rows]
        cuts = np.flatnonzero(o[1:] != o[:-1]) + 1
        if not cuts.size:
            return [Message(topic, value, partition=partition, headers=headers)]
        half = int(cuts[np.argmin(np.abs(cuts - half))])
    return [
        *split(topic, partition, headers, rows[:half], encode, origin),
        *split(topic, partition, headers, rows[half:], encode, origin),
    ]
