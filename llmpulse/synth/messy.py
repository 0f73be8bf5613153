"""Delivery-ordered traffic the way real producers deliver it: late, twice, broken.

A share of the events arrives up to ``max_delay_s`` after later ones (their
delivery time is their event time plus a random delay), a share is delivered a
second time (a producer retry), and malformed lines are mixed in. Everything
is seeded, so a test can replay exactly what it sent to Kafka.

>>> s = messy_stream(200, seed=3)
>>> len(s.lines) == 200 + s.duplicates + s.malformed, s.unique_events
(True, 200)
>>> s.lines == messy_stream(200, seed=3).lines
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import orjson

from llmpulse.synth.malformed import malformed_events
from llmpulse.synth.traffic import TrafficConfig, TrafficGenerator


@dataclass
class MessyStream:
    lines: list[bytes]
    unique_events: int
    duplicates: int
    malformed: int
    start_ms: int
    end_ms: int  # newest event time
    events: list[dict[str, Any]] = field(default_factory=list)

    def sentinels(self, partitions: int, *, after_s: float = 3600) -> list[bytes]:
        """One far-future event per partition (the i-th for partition i): it moves
        every partition's event time past the data, so every window of the data
        closes without waiting for idleness."""
        base = self.events[0]
        t = self.end_ms + int(after_s * 1000)
        return [
            orjson.dumps({**base, "event_id": f"sentinel-{p}", "timestamp": t + p})
            for p in range(partitions)
        ]


def messy_stream(
    n: int,
    *,
    seed: int,
    rate_per_s: float = 40.0,
    start_ms: int = 1_767_225_600_000,
    late_share: float = 0.05,
    max_delay_s: float = 10.0,
    duplicate_share: float = 0.02,
    malformed_share: float = 0.005,
    config: TrafficConfig | None = None,
) -> MessyStream:
    rng = random.Random(f"llmpulse-messy:{seed}")
    gen = TrafficGenerator(
        config or TrafficConfig(include_text=False), seed=seed, start_ms=start_ms,
        rate_per_s=rate_per_s,
    )  # fmt: skip
    events = list(gen.events(n))
    timed: list[tuple[float, int, bytes]] = []
    for i, e in enumerate(events):
        line = orjson.dumps(e)
        delay = rng.uniform(0, max_delay_s * 1000) if rng.random() < late_share else 0.0
        timed.append((e["timestamp"] + delay, i, line))
        if rng.random() < duplicate_share:
            timed.append((e["timestamp"] + delay + rng.uniform(0, 5000), i, line))
    dups = len(timed) - n
    timed.sort(key=lambda t: (t[0], t[1]))
    lines = [t[2] for t in timed]
    bad = malformed_events(max(1, int(n * malformed_share)), seed=seed)
    for b in bad:
        lines.insert(rng.randrange(len(lines) + 1), b)
    return MessyStream(
        lines=lines,
        unique_events=n,
        duplicates=dups,
        malformed=len(bad),
        start_ms=start_ms,
        end_ms=max(e["timestamp"] for e in events),
        events=events,
    )
