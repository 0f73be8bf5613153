"""Window specs, grouping sets and the constants the windowing modules share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from llmpulse.errors import ConfigError
from llmpulse.processors.sketch import (
    ZERO_KEY,
)
from llmpulse.schemas.event import DIMENSIONS

OTHER: Final = "__other__"
LATENCY_QUANTILES: Final = (0.5, 0.9, 0.95, 0.99)
TTFT_QUANTILES: Final = (0.5, 0.95, 0.99)
ALL_QUANTILES: Final = tuple(sorted(set(LATENCY_QUANTILES) | set(TTFT_QUANTILES)))
LAT_Q_ROWS: Final = [ALL_QUANTILES.index(q) for q in LATENCY_QUANTILES]
TTFT_Q_ROWS: Final = [ALL_QUANTILES.index(q) for q in TTFT_QUANTILES]

# "No watermark yet": far below any epoch-ms, yet safe to subtract lateness from.
NEG: Final = -(2**62)
# Sketch rows are packed as series << 32 | (key - ZERO_KEY): one int64 sorts by
# (series, key) with the zero bucket first in each series.
KEY_SHIFT: Final = 32
KEY_MASK: Final = (1 << 32) - 1
KEY_BIAS: Final = -ZERO_KEY
# Cost is summed in integer pico-dollars so the total does not depend on how events
# are split into batches or in which order panes merge (float sums would).
PICO: Final = 1e12
MAX_COST_USD: Final = 1e6
EXACT_FLOAT_INT: Final = 2**53
MAX_CHUNKS: Final = 8  # bucket-row chunks a pane holds before merging them
KEY_MARGIN: Final = 16  # keys added on each side when a sliding grid's range moves
EMIT_CHUNK: Final = 64  # windows computed together in one emission pass
MAX_CODES: Final = 1 << 20  # distinct values of a dimension remembered across batches

# Rows of the integer pane counters.
REQ, ERR, IN_TOK, OUT_TOK, COST, UNPRICED, TTFT_N = range(7)
N_INTS: Final = 7
LAT, TTFT = 0, 1


# --- configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class WindowSpec:
    """A hopping window: ``length_s`` long, starting every ``hop_s`` (epoch aligned)."""

    length_s: int
    hop_s: int

    def __post_init__(self) -> None:
        for name, value in (("length_s", self.length_s), ("hop_s", self.hop_s)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"window.{name}", f"must be a positive integer, got {value!r}")
        if self.length_s % self.hop_s:
            raise ConfigError(
                "window.length_s", f"{self.length_s} is not a multiple of hop {self.hop_s}"
            )

    @property
    def length_ms(self) -> int:
        return self.length_s * 1000

    @property
    def hop_ms(self) -> int:
        return self.hop_s * 1000

    @property
    def name(self) -> str:
        return f"{self.length_s}s/{self.hop_s}s"


DEFAULT_SPECS: Final = (WindowSpec(60, 10), WindowSpec(300, 60))


@dataclass(frozen=True)
class GroupingSet:
    """A set of DIMENSIONS that defines a series, named like ``service+endpoint+model``.

    Dimensions are kept in DIMENSIONS order so one set has exactly one name.

    >>> GroupingSet(("model", "service")).name
    'service+model'
    >>> GroupingSet.parse("tenant").dims
    ('tenant',)
    """

    dims: tuple[str, ...]

    def __post_init__(self) -> None:
        dims = tuple(self.dims)
        unknown = [d for d in dims if d not in DIMENSIONS]
        if not dims or unknown or len(set(dims)) != len(dims):
            raise ConfigError(
                "grouping",
                f"needs distinct dimensions among {', '.join(DIMENSIONS)}, got {dims!r}",
            )
        object.__setattr__(self, "dims", tuple(d for d in DIMENSIONS if d in dims))

    @property
    def name(self) -> str:
        return "+".join(self.dims)

    @classmethod
    def parse(cls, name: str) -> GroupingSet:
        return cls(tuple(part.strip() for part in name.split("+")))

    def __str__(self) -> str:
        return self.name


DEFAULT_GROUPINGS: Final = (
    GroupingSet(("service", "endpoint", "model")),
    GroupingSet(("model",)),
    GroupingSet(("tenant",)),
)
