"""``llmpulse bench privacy``: redaction cost per MB of text.

Three kinds of text, as prompts and responses hold them: prose with a value to
redact every ~40 lines, the same prose with none, and number-heavy text (tables,
logs) where every digit run is a candidate for the phone and card checks.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from llmpulse.privacy.policy import RedactionPolicy, Redactor

_PROSE = (
    "the model answered quickly but the user asked again about their order and"
    " the refund policy so we summarised the previous conversation for context"
)
_WORDS = _PROSE.split()
_PII = (
    "ann.smith@example.com",
    "+44 20 7946 0958",
    "(201) 555-0123",
    "4111 1111 1111 1111",
    "DE89 3704 0044 0532 0130 00",
    "192.168.10.24",
    "2001:db8:85a3::8a2e:370:7334",
    "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
    "Bearer abcDEF123456789xyzABC",
)


def _prose(rng: random.Random, size: int, pii_every: int) -> str:
    out: list[str] = []
    n = 0
    while n < size:
        line = " ".join(rng.choice(_WORDS) for _ in range(12))
        if pii_every and rng.randrange(pii_every) == 0:
            line += " " + rng.choice(_PII)
        out.append(line)
        n += len(line) + 1
    return "\n".join(out)


def _numbers(rng: random.Random, size: int) -> str:
    out: list[str] = []
    n = 0
    while n < size:
        line = (
            f"2026-01-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
            f" order {rng.randint(10**5, 10**9)} qty {rng.randint(1, 99)}"
            f" total {rng.randint(1, 9999)}.{rng.randint(0, 99):02d}"
            f" ref {rng.randint(10**6, 10**8)}"
        )
        out.append(line)
        n += len(line) + 1
    return "\n".join(out)


@dataclass(frozen=True)
class PrivacyBenchRow:
    text: str
    megabytes: float
    found: int
    ms_per_mb: float

    @property
    def mb_per_second(self) -> float:
        return 1000.0 / self.ms_per_mb if self.ms_per_mb else 0.0


def run_privacy_bench(
    megabytes: float = 1.0,
    *,
    seed: int = 7,
    chunk: int = 2000,
    perf: Callable[[], float] = time.perf_counter,
) -> list[PrivacyBenchRow]:
    """Redact ``megabytes`` of each kind of text in prompt-sized chunks (default
    policy: every type masked) and report milliseconds per MB."""
    rng = random.Random(seed)
    size = int(megabytes * 1_000_000)
    texts = {
        "prose, a value every ~40 lines": _prose(rng, size, 40),
        "prose, no PII": _prose(rng, size, 0),
        "number-heavy (dates, ids, amounts)": _numbers(rng, size),
    }
    redactor = Redactor(RedactionPolicy())
    rows = []
    for name, text in texts.items():
        pieces = [text[i : i + chunk] for i in range(0, len(text), chunk)]
        mb = len(text.encode()) / 1_000_000
        started = perf()
        found = sum(sum(redactor.redact(p, "prompt").counts.values()) for p in pieces)
        elapsed = perf() - started
        rows.append(PrivacyBenchRow(name, mb, found, elapsed * 1000 / mb))
    return rows
