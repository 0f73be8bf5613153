"""Signals: the one shape every alert rule reads, whatever produced it.

A :class:`Signal` is one observation of one named quantity on one series at one
event time: a window's p99 latency, a budget's usage ratio, a drift detector's
verdict. Producers (window statistics, budgets, drift and quality detectors)
turn their results into signals; the rule engine only ever sees signals, so a
new producer plugs in by emitting a name listed in :data:`SIGNAL_NAMES`.

>>> from datetime import UTC, datetime
>>> s = Signal("error_rate", {"grouping": "model", "model": "m1"}, 60,
...            datetime(2026, 1, 1, 0, 1, tzinfo=UTC), 0.08, 200)
>>> s.series
(('grouping', 'model'), ('model', 'm1'))
>>> lookup_signal("score_mean:relevance").unit, lookup_signal("latency_p98_ms") is None
('score', True)
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from functools import cached_property
from typing import TYPE_CHECKING, Final, Literal

import numpy as np

from llmpulse._types import FloatArray
from llmpulse.processors.sketch import bucket_keys

if TYPE_CHECKING:
    from llmpulse.processors.budgets import BudgetStatus
    from llmpulse.processors.sketch import SketchColumns
    from llmpulse.processors.windows import WindowResult

__all__ = [
    "SIGNAL_NAMES",
    "SLO_LATENCY_PREFIX",
    "Signal",
    "SignalInfo",
    "fraction_above",
    "fractions_above",
    "latency_signal_name",
    "lookup_signal",
    "signal_from_drift",
    "signals_from_budget",
    "signals_from_window",
    "window_labels",
]

Source = Literal["window", "budget", "drift", "quality", "canary"]

SLO_LATENCY_PREFIX: Final = "slo_latency_bad_fraction:"


@dataclass(frozen=True)
class Signal:
    """One value of one signal on one series.

    ``labels`` name the series: ``grouping`` plus the non-empty dimensions for
    window signals, ``scope``/``name``/``period`` for budgets. ``requests`` is the
    sample size behind ``value`` (rules ignore signals below their
    ``min_requests``); ``event_time`` is the end of the window it describes.
    ``extra`` carries numbers a rule may need besides ``value`` (``bad``: the count
    of bad requests behind a ratio, used by SLO burn rates).
    """

    name: str
    labels: Mapping[str, str]
    window_seconds: int
    event_time: datetime
    value: float
    requests: int
    extra: Mapping[str, float] = field(default_factory=dict)

    # Cached: the engine, its save points and the no_data monitor each ask for it,
    # for every signal (labels are never changed once a signal is made).
    @cached_property
    def series(self) -> tuple[tuple[str, str], ...]:
        """The labels as a sorted tuple: a hashable series identity."""
        return tuple(sorted(self.labels.items()))

    @property
    def window_aligned(self) -> bool:
        """True when the window starts on a multiple of its length (epoch aligned).

        Aligned windows of one length never overlap, so sums over them count each
        request once: baselines and burn rates only learn from those.
        """
        ws = self.window_seconds
        return ws > 0 and round(self.event_time.timestamp()) % ws == 0


@dataclass(frozen=True)
class SignalInfo:
    """What a signal name means, for rule validation and documentation."""

    description: str
    unit: str
    source: Source
    min_requests: int = 0  # default ``min_requests`` of rules on this signal
    windowed: bool = True  # produced per window of a window spec

    @property
    def direction(self) -> str:
        return "higher is worse" if self.unit != "score" else "depends on the score"


_PCT_MIN: Final = 50  # a p99 of fewer values is mostly the maximum

SIGNAL_NAMES: Final[Mapping[str, SignalInfo]] = {
    "latency_p50_ms": SignalInfo("median latency in the window", "ms", "window", _PCT_MIN),
    "latency_p90_ms": SignalInfo("90th percentile latency", "ms", "window", _PCT_MIN),
    "latency_p95_ms": SignalInfo("95th percentile latency", "ms", "window", _PCT_MIN),
    "latency_p99_ms": SignalInfo("99th percentile latency", "ms", "window", _PCT_MIN),
    "latency_max_ms": SignalInfo("largest latency in the window", "ms", "window", 1),
    "ttft_p50_ms": SignalInfo("median time to first token", "ms", "window", _PCT_MIN),
    "ttft_p95_ms": SignalInfo("95th percentile time to first token", "ms", "window", _PCT_MIN),
    "ttft_p99_ms": SignalInfo("99th percentile time to first token", "ms", "window", _PCT_MIN),
    "error_rate": SignalInfo("share of requests that failed", "ratio", "window", 50),
    "errors": SignalInfo("failed requests in the window", "requests", "window"),
    "requests": SignalInfo("requests in the window", "requests", "window"),
    "cost_usd": SignalInfo("cost of the priced requests in the window", "USD", "window"),
    "cost_per_minute": SignalInfo("cost rate: cost_usd * 60 / window length", "USD/min", "window"),
    "cost_per_request": SignalInfo("mean cost of a priced request", "USD", "window", 10),
    "input_tokens": SignalInfo("input tokens in the window", "tokens", "window"),
    "output_tokens": SignalInfo("output tokens in the window", "tokens", "window"),
    SLO_LATENCY_PREFIX + "*": SignalInfo(
        "share of requests slower than the threshold in ms after ':' (SLO burn rates)",
        "ratio",
        "window",
        1,
    ),
    "budget_usage_ratio": SignalInfo(
        "spend divided by the budget limit of the period", "ratio", "budget", windowed=False
    ),
    "drift_detected": SignalInfo(
        "1.0 when a drift detector fired on the series, 0.0 when it watched and did not",
        "flag",
        "drift",
        windowed=False,
    ),
    "score_mean:*": SignalInfo(
        "mean of the named evaluation score (relevance, toxicity...) over the window",
        "score",
        "quality",
        20,
        windowed=False,
    ),
    "hallucination_rate": SignalInfo(
        "share of scored responses flagged as hallucinations", "ratio", "quality", 50, False
    ),
    "score_rate_below:*": SignalInfo(
        "share of the named score's values below its threshold (scores.thresholds), by the"
        " window of the scored call",
        "ratio",
        "quality",
        20,
        windowed=False,
    ),
    "canary_regression": SignalInfo(
        "1.0 when a configured canary pair's candidate fails the comparison, 0.0 when it"
        " passes (labels: pair, metric)",
        "flag",
        "canary",
        windowed=False,
    ),
}


def lookup_signal(name: str) -> SignalInfo | None:
    """The registry entry of ``name``; prefix names like ``score_mean:x`` match ``score_mean:*``.

    >>> lookup_signal("slo_latency_bad_fraction:800").source
    'window'
    >>> lookup_signal("score_mean:") is None
    True
    """
    info = SIGNAL_NAMES.get(name)
    if info is not None:
        return info
    prefix, sep, rest = name.partition(":")
    if sep and rest:
        return SIGNAL_NAMES.get(f"{prefix}:*")
    return None


def latency_signal_name(threshold_ms: float) -> str:
    """Name of the "share slower than ``threshold_ms``" signal.

    >>> latency_signal_name(800.0), latency_signal_name(250.5)
    ('slo_latency_bad_fraction:800', 'slo_latency_bad_fraction:250.5')
    """
    return f"{SLO_LATENCY_PREFIX}{threshold_ms:g}"


def fraction_above(result: WindowResult, threshold_ms: float) -> float:
    """Share of the window's latencies strictly above ``threshold_ms`` (NaN if empty).

    Read from the latency sketch, so it is exact except for the values in the one
    bucket that holds the threshold (all within the sketch accuracy, 1 %, of it):
    those count as not above. The tracked min and max are exact and settle the
    cases where the threshold is outside the data.

    >>> import numpy as np
    >>> from llmpulse.processors.sketch import LogHistogram
    >>> h = LogHistogram()
    >>> h.update_many(np.array([100.0, 200.0, 900.0, 1500.0]))
    >>> class W:  # a stand-in for a WindowResult
    ...     latency_sketch = h
    >>> fraction_above(W(), 800.0), fraction_above(W(), 2000.0), fraction_above(W(), 50.0)
    (0.5, 0.0, 1.0)
    """
    sketch = result.latency_sketch
    n = sketch.count
    if n == 0:
        return math.nan
    if threshold_ms < sketch.min:
        return 1.0
    if threshold_ms >= sketch.max:
        return 0.0
    # Here min <= threshold < max, hence threshold > 0 unless every value is 0.
    if threshold_ms <= 0.0:
        return (n - sketch.zero_count) / n
    keys, counts = sketch.to_arrays()
    key_t = int(bucket_keys(np.array([threshold_ms], dtype=np.float64), sketch.params)[0])
    above = int(counts[keys > key_t].sum())
    return above / n


def fractions_above(columns: SketchColumns, threshold_ms: float) -> FloatArray:
    """``fraction_above`` of every sketch of ``columns`` at once (the same numbers,
    by the same rules), without building a LogHistogram per window: a window stage
    closes thousands of burn-rate tiles at a time."""
    n = columns.n
    if threshold_ms <= 0.0:
        above = (n - columns.zeros).astype(np.float64)
    else:
        key_t = int(bucket_keys(np.array([threshold_ms], dtype=np.float64), columns.params)[0])
        # The zero row (ZERO_KEY, the smallest key) is never above a real bucket key.
        counts = np.where(columns.keys > key_t, columns.counts, 0).astype(np.uint64)
        cum = np.zeros(counts.size + 1, dtype=np.uint64)
        np.cumsum(counts, out=cum[1:])
        above = (cum[columns.ends] - cum[columns.starts]).astype(np.float64)
    share = np.divide(
        above,
        n.astype(np.float64),
        out=np.full(n.size, math.nan),
        where=n > 0,
    )
    share = np.where(threshold_ms >= columns.hi, 0.0, share)
    share = np.where(threshold_ms < columns.lo, 1.0, share)
    return np.where(n > 0, share, math.nan)


_TTFT_SIGNALS: Final = frozenset(n for n in SIGNAL_NAMES if n.startswith("ttft_"))
# The precomputed signals of a window, in the order they are emitted (the engine
# sees signals in this order, which incident suppression depends on).
_WINDOW_SIGNALS: Final = (
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "ttft_p50_ms",
    "ttft_p95_ms",
    "ttft_p99_ms",
    "errors",
    "requests",
    "cost_usd",
    "cost_per_minute",
    "cost_per_request",
    "input_tokens",
    "output_tokens",
)
# ``names`` -> the precomputed signals among them, in emission order. Rules ask
# for a handful of distinct sets, so this stays small.
_ORDERED: dict[frozenset[str], tuple[str, ...]] = {}


def _ordered(names: Collection[str] | None) -> tuple[str, ...]:
    key = frozenset(_WINDOW_SIGNALS) if names is None else frozenset(names)
    found = _ORDERED.get(key)
    if found is None:
        found = _ORDERED[key] = tuple(n for n in _WINDOW_SIGNALS if n in key)
    return found


def window_labels(result: WindowResult) -> dict[str, str]:
    """The labels of a window's signals: its grouping and non-empty dimensions."""
    labels = {"grouping": result.grouping}
    labels.update((k, v) for k, v in result.dims.items() if v)
    return labels


def signals_from_window(
    result: WindowResult,
    *,
    names: Collection[str] | None = None,
    latency_thresholds_ms: Collection[float] = (),
    labels: tuple[dict[str, str], tuple[tuple[str, str], ...]] | None = None,
    shares: Mapping[float, float] | None = None,
) -> list[Signal]:
    """The signals of one closed window.

    ``names`` limits the output to the signals some rule reads (``None``: all the
    precomputed ones); ``latency_thresholds_ms`` adds one
    ``slo_latency_bad_fraction:<ms>`` signal per threshold (SLO rules ask for
    them; the engine passes ``RuleSet.latency_thresholds_ms``). NaN values (no
    ttft in the window, no priced request) produce no signal. ``labels``: the
    ``window_labels`` of the result and their ``Signal.series``, when the caller
    shares them between the windows of one series (read only); ``shares``: the
    ``fraction_above`` of each threshold, when the caller read them from columns.
    """
    if labels is None:
        own = window_labels(result)
        labels = own, tuple(sorted(own.items()))
    ws = result.window_seconds
    end = result.window_end
    n = result.requests
    out: list[Signal] = []
    wanted = _ordered(names)
    if wanted:
        priced = n - result.unpriced_requests
        extra = {"errors": float(result.errors), "late_events": float(result.late_events)}
        # Reading the ttft sketch builds it (results hold their sketches as shared
        # columns until then): only when some rule reads a ttft signal.
        ttft_n = result.ttft_sketch.count if not _TTFT_SIGNALS.isdisjoint(wanted) else 0
        for name in wanted:
            value, requests = _window_value(result, name, n, priced, ttft_n)
            if not math.isnan(value):
                out.append(_signal(name, labels, ws, end, float(value), requests, extra))
    if (names is None or "error_rate" in names) and n:
        out.append(
            _signal("error_rate", labels, ws, end, result.error_rate, n, {"bad": result.errors})
        )
    for threshold in latency_thresholds_ms:
        share = fraction_above(result, threshold) if shares is None else shares[threshold]
        if not math.isnan(share):
            name = latency_signal_name(threshold)
            out.append(_signal(name, labels, ws, end, share, n, {"bad": share * n}))
    return out


_new: Final = object.__new__


def _signal(
    name: str,
    labels: tuple[dict[str, str], tuple[tuple[str, str], ...]],
    window_seconds: int,
    event_time: datetime,
    value: float,
    requests: int,
    extra: Mapping[str, float],
) -> Signal:
    """``Signal(name, labels[0], ...)`` with its cached ``series`` set to ``labels[1]``.

    Filled through ``__dict__`` as ``Signal.__init__`` would (every field given):
    the frozen ``__init__`` makes one ``object.__setattr__`` call per field, about
    three times the cost, and windows make hundreds of thousands of signals.
    """
    sig: Signal = _new(Signal)
    sig.__dict__.update(
        name=name,
        labels=labels[0],
        window_seconds=window_seconds,
        event_time=event_time,
        value=value,
        requests=requests,
        extra=extra,
        series=labels[1],
    )
    return sig


def _window_value(
    result: WindowResult, name: str, n: int, priced: int, ttft_n: int
) -> tuple[float, int]:
    """The value of the precomputed signal ``name`` of a window, and its sample size."""
    if name.startswith("ttft_"):
        return float(getattr(result, name)), ttft_n
    if name == "errors":
        return float(result.errors), n
    if name == "requests":
        return float(n), n
    if name == "cost_usd":
        return result.cost_usd, priced
    if name == "cost_per_minute":
        return result.cost_usd * 60.0 / result.window_seconds, priced
    if name == "cost_per_request":
        return (result.cost_usd / priced if priced else math.nan), priced
    return float(getattr(result, name)), n  # latencies and token counts


def signals_from_budget(status: BudgetStatus, event_time: datetime) -> Signal:
    """The ``budget_usage_ratio`` signal of one budget status.

    ``event_time`` is the event time of the spend that produced the status (the
    status itself only knows its period); it keeps budget alerts on the same
    clock as the windows.

    >>> from datetime import date
    >>> from llmpulse.processors.budgets import Budget, BudgetStatus
    >>> st = BudgetStatus(Budget("tenant", "acme", "day", 10.0), date(2026, 1, 1), 12.5)
    >>> s = signals_from_budget(st, datetime(2026, 1, 1, 9, tzinfo=UTC))
    >>> s.value, dict(s.labels)
    (1.25, {'scope': 'tenant', 'name': 'acme', 'period': 'day', 'tenant': 'acme'})
    """
    b = status.budget
    labels = {"scope": b.scope, "name": b.name, "period": b.period, b.scope: b.name}
    start = datetime.combine(status.period_start, time(0), tzinfo=UTC)
    return Signal(
        "budget_usage_ratio",
        labels,
        0,
        event_time,
        status.usage_ratio,
        0,
        {
            "spent_usd": status.spent_usd,
            "limit_usd": b.limit_usd,
            "period_start": start.timestamp(),
        },
    )


def signal_from_drift(
    name: str,
    labels: Mapping[str, str],
    event_time: datetime,
    value: float,
    *,
    requests: int = 0,
    window_seconds: int = 0,
    extra: Mapping[str, float] | None = None,
) -> Signal:
    """A drift or quality signal, its name checked against the registry.

    Names: ``drift_detected`` (1.0 fired, 0.0 watched and quiet; emitting the
    0.0 lets a drift alert resolve instead of waiting for ``stale_after``),
    ``score_mean:<score>`` and ``hallucination_rate``.

    >>> s = signal_from_drift("score_mean:relevance", {"model": "m"},
    ...                       datetime(2026, 1, 1, tzinfo=UTC), 0.42, requests=80)
    >>> s.name, s.requests
    ('score_mean:relevance', 80)
    >>> signal_from_drift("drift", {}, datetime(2026, 1, 1, tzinfo=UTC), 1.0)
    Traceback (most recent call last):
    ...
    ValueError: unknown signal 'drift'
    """
    info = lookup_signal(name)
    if info is None or info.source not in ("drift", "quality"):
        raise ValueError(f"unknown signal {name!r}")
    return Signal(
        name, dict(labels), window_seconds, event_time, float(value), requests, dict(extra or {})
    )
