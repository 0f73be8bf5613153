"""Task checkpoints: the commit point of a worker's tasks, kept in a changelog topic.

A checkpoint says: the task's input up to ``offset`` is done; its state is the
stage snapshots here, plus what its stages rebuild by replaying input from
``replay_from``; rows it wrote up to checkpoint ``seq`` of ``generation`` are
final. Rows written after it are undone when the task restarts from it (see
``llmpulse.store.writer.StoreWriter.roll_back``), so a crash repeats work but
never stores it twice.

Each checkpoint is one Kafka message, keyed by the task, in a compacted topic:
the latest is the only one kept, and it is written whole or not at all.
``generation`` grows each time a worker takes the task over; ``lineage`` keeps
the last checkpoint of earlier generations, so a worker restarting after a
crash knows which of its own rows were never committed.

>>> cp = Checkpoint("app:traces/0", seq=3, generation=2, offset=120, replay_from=90,
...                 lineage=[(1, 7)], meta={"hwm": {"a": 5}}, blobs={"windows": b"{}"})
>>> back = Checkpoint.decode(cp.encode())
>>> (back.seq, back.generation, back.offset, back.replay_from, back.lineage, back.blobs)
(3, 2, 120, 90, [(1, 7)], {'windows': b'{}'})
>>> back.committed_seq(1), back.committed_seq(2), back.committed_seq(9)
(7, 3, None)
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

_MAGIC: Final = b"LPC1"
_LINEAGE_KEPT: Final = 16


@dataclass
class Checkpoint:
    task: str
    seq: int
    generation: int
    offset: int
    replay_from: int | None = None
    lineage: list[tuple[int, int]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    wall_s: float = 0.0

    def committed_seq(self, generation: int) -> int | None:
        """The last committed checkpoint of ``generation`` (None: unknown, too old)."""
        if generation == self.generation:
            return self.seq
        for g, s in self.lineage:
            if g == generation:
                return s
        return None

    def successor(self, offset: int) -> Checkpoint:
        """The first checkpoint of the next owner, which resumes from this one."""
        lineage = [*self.lineage, (self.generation, self.seq)][-_LINEAGE_KEPT:]
        return Checkpoint(
            self.task,
            seq=0,
            generation=self.generation + 1,
            offset=offset,
            replay_from=self.replay_from,
            lineage=lineage,
            meta=dict(self.meta),
            blobs=dict(self.blobs),
        )

    def encode(self) -> bytes:
        header = orjson.dumps(
            {
                "task": self.task,
                "seq": self.seq,
                "generation": self.generation,
                "offset": self.offset,
                "replay_from": self.replay_from,
                "lineage": self.lineage,
                "meta": self.meta,
                "blobs": [[k, len(v)] for k, v in self.blobs.items()],
                "wall_s": self.wall_s,
            }
        )
        body = b"".join([struct.pack(">I", len(header)), header, *self.blobs.values()])
        return _MAGIC + zlib.compress(body, 1)

    @classmethod
    def decode(cls, data: bytes) -> Checkpoint:
        if not data.startswith(_MAGIC):
            raise ValueError("not an llmpulse checkpoint")
        body = zlib.decompress(data[len(_MAGIC) :])
        (size,) = struct.unpack(">I", body[:4])
        h = orjson.loads(body[4 : 4 + size])
        pos = 4 + size
        blobs: dict[str, bytes] = {}
        for name, length in h["blobs"]:
            blobs[name] = body[pos : pos + length]
            pos += length
        return cls(
            task=h["task"],
            seq=int(h["seq"]),
            generation=int(h["generation"]),
            offset=int(h["offset"]),
            replay_from=h["replay_from"],
            lineage=[(int(g), int(s)) for g, s in h["lineage"]],
            meta=h["meta"],
            blobs=blobs,
            wall_s=float(h.get("wall_s", 0.0)),
        )
