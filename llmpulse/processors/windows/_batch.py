"""Parsed events as columns: the aggregator's input."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from llmpulse._types import FloatArray, IntArray
from llmpulse.errors import FieldProblem, ValidationError
from llmpulse.processors.windows._config import (
    MAX_COST_USD,
)
from llmpulse.schemas.event import DIMENSIONS

# --- input ---------------------------------------------------------------------------


@dataclass
class EventBatch:
    """Parsed events as columns. ``ttft_ms``/``cost_usd`` use NaN for missing/unpriced,
    tokens 0 for missing, dimensions "" for missing (absent dimensions are filled)."""

    ts_ms: IntArray
    latency_ms: FloatArray
    ttft_ms: FloatArray
    is_error: npt.NDArray[np.bool_]
    input_tokens: IntArray
    output_tokens: IntArray
    cost_usd: FloatArray
    dims: dict[str, npt.NDArray[Any]]

    def __post_init__(self) -> None:
        self.ts_ms = np.asarray(self.ts_ms, dtype=np.int64)
        n = self.ts_ms.shape[0]
        self.latency_ms = np.asarray(self.latency_ms, dtype=np.float64)
        self.ttft_ms = np.asarray(self.ttft_ms, dtype=np.float64)
        self.is_error = np.asarray(self.is_error, dtype=np.bool_)
        self.input_tokens = np.asarray(self.input_tokens, dtype=np.int64)
        self.output_tokens = np.asarray(self.output_tokens, dtype=np.int64)
        self.cost_usd = np.asarray(self.cost_usd, dtype=np.float64)
        unknown = sorted(set(self.dims) - set(DIMENSIONS))
        if unknown:
            raise ValidationError([FieldProblem("dims", "unknown dimension", unknown)])
        dims: dict[str, npt.NDArray[Any]] = {}
        for d in DIMENSIONS:
            col = self.dims.get(d)
            dims[d] = np.full(n, "", dtype=object) if col is None else np.asarray(col)
        self.dims = dims
        for name in ("latency_ms", "ttft_ms", "is_error", "input_tokens", "output_tokens"):
            self._check_length(name, getattr(self, name), n)
        self._check_length("cost_usd", self.cost_usd, n)
        for d, col in dims.items():
            self._check_length(d, col, n)

    @staticmethod
    def _check_length(name: str, col: npt.NDArray[Any], n: int) -> None:
        if col.shape != (n,):
            raise ValidationError([FieldProblem(name, f"must be a 1-D column of {n}", col.shape)])

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> EventBatch:
        """Columns from dict-like events (keys as the field names and DIMENSIONS)."""

        def num(r: Mapping[str, Any], key: str, missing: float) -> float:
            v = r.get(key)
            return missing if v is None else float(v)

        for i, r in enumerate(records):
            for key in ("ts_ms", "latency_ms"):
                if r.get(key) is None:
                    raise ValidationError([FieldProblem(f"[{i}].{key}", "is required")])
        return cls(
            ts_ms=np.array([int(r["ts_ms"]) for r in records], dtype=np.int64),
            latency_ms=np.array([float(r["latency_ms"]) for r in records], dtype=np.float64),
            ttft_ms=np.array([num(r, "ttft_ms", math.nan) for r in records], dtype=np.float64),
            is_error=np.array([bool(r.get("is_error", False)) for r in records], dtype=np.bool_),
            input_tokens=np.array([int(r.get("input_tokens") or 0) for r in records], np.int64),
            output_tokens=np.array([int(r.get("output_tokens") or 0) for r in records], np.int64),
            cost_usd=np.array([num(r, "cost_usd", math.nan) for r in records], dtype=np.float64),
            dims={
                d: np.array([str(r.get(d) or "") for r in records], dtype=object)
                for d in DIMENSIONS
            },
        )

    def select(self, index: slice | npt.NDArray[Any]) -> EventBatch:
        """The events at ``index`` (a slice, boolean mask or integer indices)."""
        return EventBatch(
            ts_ms=self.ts_ms[index],
            latency_ms=self.latency_ms[index],
            ttft_ms=self.ttft_ms[index],
            is_error=self.is_error[index],
            input_tokens=self.input_tokens[index],
            output_tokens=self.output_tokens[index],
            cost_usd=self.cost_usd[index],
            dims={d: col[index] for d, col in self.dims.items()},
        )

    @classmethod
    def concat(cls, batches: Iterable[EventBatch]) -> EventBatch:
        parts = list(batches)
        if not parts:
            return cls.from_records([])
        return cls(
            ts_ms=np.concatenate([b.ts_ms for b in parts]),
            latency_ms=np.concatenate([b.latency_ms for b in parts]),
            ttft_ms=np.concatenate([b.ttft_ms for b in parts]),
            is_error=np.concatenate([b.is_error for b in parts]),
            input_tokens=np.concatenate([b.input_tokens for b in parts]),
            output_tokens=np.concatenate([b.output_tokens for b in parts]),
            cost_usd=np.concatenate([b.cost_usd for b in parts]),
            dims={d: np.concatenate([b.dims[d] for b in parts]) for d in DIMENSIONS},
        )

    def validate(self) -> None:
        """Raise ValidationError naming the first value that breaks the numeric contract."""
        checks: tuple[tuple[str, npt.NDArray[Any], npt.NDArray[np.bool_], str], ...] = (
            ("latency_ms", self.latency_ms, _finite_nonneg(self.latency_ms), "finite and >= 0"),
            (
                "ttft_ms",
                self.ttft_ms,
                np.isnan(self.ttft_ms) | _finite_nonneg(self.ttft_ms),
                "NaN (missing) or finite and >= 0",
            ),
            ("input_tokens", self.input_tokens, self.input_tokens >= 0, ">= 0"),
            ("output_tokens", self.output_tokens, self.output_tokens >= 0, ">= 0"),
            (
                "cost_usd",
                self.cost_usd,
                np.isnan(self.cost_usd)
                | (_finite_nonneg(self.cost_usd) & (self.cost_usd <= MAX_COST_USD)),
                f"NaN (unpriced) or between 0 and {MAX_COST_USD:g}",
            ),
        )
        problems = []
        for name, col, ok, rule in checks:
            if not ok.all():
                first = int(np.argmin(ok))
                problems.append(
                    FieldProblem(f"{name}[{first}]", f"must be {rule}", col[first].item())
                )
        if problems:
            raise ValidationError(problems)


def _finite_nonneg(x: FloatArray) -> npt.NDArray[np.bool_]:
    return (x >= 0.0) & (x < np.inf)  # NaN fails the first test
