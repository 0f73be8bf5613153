"""ClickHouse tables of the drift detectors: DDL strings and row builders (pure).

Nothing here talks to ClickHouse; the store layer runs ``DRIFT_DDL`` in a
migration and inserts the tuples built below (values in column order, as
``names(COLUMNS)`` lists them).

* ``drift_baselines``: one row per reference (``Reference.to_json`` in
  ``payload``); the newest row per (grouping, series, signal) is the live one
  (``LATEST_BASELINES_SQL``), so a restarted worker restores its baselines.
* ``drift_events``: one row per detection; ``drift_id`` is deterministic, so a
  replay or a retried insert collapses into the same row (ReplacingMergeTree).
* ``drift_scores``: one row per tumbling window per drift signal: the windowed
  test's statistic and p-value, and the signal's window value (mean cosine
  distance to the reference centroid, mean score, error share...).

>>> len(DRIFT_DDL), all(s.startswith("CREATE TABLE IF NOT EXISTS") for s in DRIFT_DDL)
(3, True)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from llmpulse.detectors.reference import Reference
from llmpulse.detectors.results import DriftEvent, WindowScore
from llmpulse.schemas.batch import to_ms
from llmpulse.schemas.rows import DEDUP_SETTING, Column, ddl_columns

# Dimensions stored as their own columns; any other grouping label is still in
# ``labels``.
SERIES_DIMENSIONS: tuple[str, ...] = ("service", "endpoint", "model", "prompt_version", "tenant")
_DIMS: tuple[Column, ...] = tuple((d, "LowCardinality(String)") for d in SERIES_DIMENSIONS)
_TIME = "DateTime64(3, 'UTC')"

DRIFT_BASELINE_COLUMNS: tuple[Column, ...] = (
    ("baseline_id", "String"),
    ("grouping", "LowCardinality(String)"),
    ("series", "String"),
    ("labels", "Map(String, String)"),
    ("signal", "LowCardinality(String)"),
    ("created_at", _TIME),
    ("n", "UInt32"),
    ("dim", "UInt32"),
    ("null_n", "UInt32"),
    ("payload", "String"),
)

DRIFT_EVENT_COLUMNS: tuple[Column, ...] = (
    ("drift_id", "String"),
    ("event_time", _TIME),
    ("detected_at", _TIME),
    ("grouping", "LowCardinality(String)"),
    *_DIMS,
    ("labels", "Map(String, String)"),
    ("signal", "LowCardinality(String)"),
    ("detector", "LowCardinality(String)"),
    ("score", "Float64"),
    ("threshold", "Float64"),
    ("p_value", "Float64"),
    ("baseline_id", "String"),
    ("details", "String"),
    ("event_id_hint", "String"),
)

DRIFT_SCORE_COLUMNS: tuple[Column, ...] = (
    ("window_id", "String"),
    ("window_start", _TIME),
    ("window_end", _TIME),
    ("grouping", "LowCardinality(String)"),
    *_DIMS,
    ("labels", "Map(String, String)"),
    ("signal", "LowCardinality(String)"),
    ("detector", "LowCardinality(String)"),
    ("statistic", "Float64"),
    ("p_value", "Float64"),
    ("threshold", "Float64"),
    ("n", "UInt32"),
    ("value", "Float64"),
    ("baseline_id", "String"),
    ("emitted_at", _TIME),
)


DRIFT_BASELINES_DDL = f"""CREATE TABLE IF NOT EXISTS drift_baselines (
    {ddl_columns(DRIFT_BASELINE_COLUMNS)}
) ENGINE = ReplacingMergeTree(created_at)
ORDER BY (signal, grouping, series, baseline_id)
SETTINGS {DEDUP_SETTING}"""

DRIFT_EVENTS_DDL = f"""CREATE TABLE IF NOT EXISTS drift_events (
    {ddl_columns(DRIFT_EVENT_COLUMNS)}
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (signal, event_time, drift_id)
SETTINGS {DEDUP_SETTING}"""

DRIFT_SCORES_DDL = f"""CREATE TABLE IF NOT EXISTS drift_scores (
    {ddl_columns(DRIFT_SCORE_COLUMNS)}
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_end)
ORDER BY (signal, grouping, window_end, window_id)
SETTINGS {DEDUP_SETTING}"""

DRIFT_DDL: tuple[str, ...] = (DRIFT_BASELINES_DDL, DRIFT_EVENTS_DDL, DRIFT_SCORES_DDL)

LATEST_BASELINES_SQL = """SELECT grouping, series, signal,
       argMax(labels, created_at) AS labels,
       argMax(baseline_id, created_at) AS baseline_id,
       argMax(payload, created_at) AS payload
FROM drift_baselines FINAL
GROUP BY grouping, series, signal"""


def series_key(labels: Mapping[str, str]) -> str:
    """Canonical text of a series' labels (sortable, unlike a Map column).

    >>> series_key({"model": "m", "endpoint": "/chat"})
    'endpoint=/chat,model=m'
    """
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _dims(labels: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(str(labels.get(d, "")) for d in SERIES_DIMENSIONS)


def baseline_row(
    reference: Reference,
    *,
    labels: Mapping[str, str],
    grouping: str,
    signal: str,
    created_at: datetime,
) -> tuple[Any, ...]:
    """Values in ``DRIFT_BASELINE_COLUMNS`` order."""
    return (
        reference.baseline_id,
        grouping,
        series_key(labels),
        dict(labels),
        signal,
        created_at,
        reference.n,
        reference.dim,
        reference.null_n,
        reference.to_json(),
    )


def drift_event_row(event: DriftEvent, detected_at: datetime) -> tuple[Any, ...]:
    """Values in ``DRIFT_EVENT_COLUMNS`` order; ``detected_at`` is the wall clock."""
    return (
        event.drift_id,
        event.event_time,
        detected_at,
        event.grouping,
        *_dims(event.labels),
        dict(event.labels),
        event.signal,
        event.detector,
        float(event.score),
        float(event.threshold),
        float(event.details.get("p_value", float("nan"))),
        event.baseline_id,
        orjson.dumps(event.details, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
        event.event_id,
    )


def window_id(score: WindowScore) -> str:
    """Deterministic id of a window score (dedup key for replays)."""
    key = "\x1f".join(
        [
            score.grouping,
            series_key(score.labels),
            score.signal,
            score.detector,
            score.baseline_id,
            str(to_ms(score.window_start)),
            str(to_ms(score.window_end)),
        ]
    )
    return hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


def drift_score_row(score: WindowScore, emitted_at: datetime) -> tuple[Any, ...]:
    """Values in ``DRIFT_SCORE_COLUMNS`` order."""
    return (
        window_id(score),
        score.window_start,
        score.window_end,
        score.grouping,
        *_dims(score.labels),
        dict(score.labels),
        score.signal,
        score.detector,
        float(score.statistic),
        float(score.p_value),
        float(score.threshold),
        int(score.n),
        float(score.value),
        score.baseline_id,
        emitted_at,
    )
