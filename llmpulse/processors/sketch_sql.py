"""ClickHouse SQL that reads the stored window sketches like ``LogHistogram`` does.

A window row stores its latency sketch as ``latency_sketch_keys Array(Int32)``,
``latency_sketch_counts Array(UInt64)`` and ``latency_sketch_zeros UInt64`` (same for
``ttft_``), always with relative accuracy 0.01. Sketches of several rows merge by
adding counts per key, which ClickHouse does with ``sumMap``::

    sumMap(mapFromArrays(latency_sketch_keys, latency_sketch_counts))  -- Map(Int32, UInt64)
    sum(latency_sketch_zeros)

(``sumMapState``/``sumMapMerge`` give the same map from an AggregatingMergeTree.)
The SQL functions below turn such a merged map into a quantile:

* ``llmpulse_sketch_quantile(keys_map, zeros, q)`` -- the bucket answer for the
  order statistic ``x_(floor(q*(n-1)))``, equal to ``LogHistogram.bucket_quantile(q)``
  (within 1e-9 relative; exp() may differ in the last ulp) and within 1 % of the
  exact order statistic.
* ``llmpulse_quantile(q, keys, counts, zeros)`` -- the roll-up an analyst writes in a
  GROUP BY: an aggregate over rows of sketch columns, for example
  ``llmpulse_quantile(0.99, latency_sketch_keys, latency_sketch_counts,
  latency_sketch_zeros)``; it merges the rows' sketches (``sumMap``) and reads
  the quantile with ``llmpulse_sketch_quantile``, so the 1 % guarantee holds.
* ``llmpulse_sketch_quantile_bounded(keys_map, zeros, q, min_value, max_value)`` --
  with the exact min and max of the merged rows (for example ``max(latency_max_ms)``)
  it also returns them exactly at the ends and clamps, like ``LogHistogram.quantile``.

Only merge rows whose windows do not overlap: hopping windows overlap, so to roll
up a day of 60 s windows keep the rows with ``window_start`` on a 60 s boundary
(``toUnixTimestamp(window_start) % window_seconds = 0``), as ``ROLLUP_EXAMPLE`` does.

>>> "llmpulse_sketch_quantile" in CREATE_QUANTILE_FUNCTION
True
>>> merged_quantile_sql("latency", 0.95)  # doctest: +NORMALIZE_WHITESPACE
'llmpulse_sketch_quantile(sumMap(mapFromArrays(latency_sketch_keys, latency_sketch_counts)),
 sum(latency_sketch_zeros), 0.95)'
"""

from __future__ import annotations

from typing import Final

from llmpulse.processors.sketch import sketch_params

__all__ = [
    "BOUNDED_FUNCTION_NAME",
    "CREATE_BOUNDED_QUANTILE_FUNCTION",
    "CREATE_FUNCTIONS",
    "CREATE_QUANTILE_FUNCTION",
    "CREATE_ROLLUP_FUNCTION",
    "DROP_FUNCTIONS",
    "FUNCTION_NAME",
    "ROLLUP_EXAMPLE",
    "ROLLUP_FUNCTION_NAME",
    "SKETCH_ALPHA",
    "merged_quantile_sql",
]

SKETCH_ALPHA: Final = 0.01
FUNCTION_NAME: Final = "llmpulse_sketch_quantile"
BOUNDED_FUNCTION_NAME: Final = "llmpulse_sketch_quantile_bounded"
ROLLUP_FUNCTION_NAME: Final = "llmpulse_quantile"

_P = sketch_params(SKETCH_ALPHA)
# repr() of a float is the shortest text that parses back to the same double, so
# ClickHouse computes with exactly the constants Python uses.
_LOG_GAMMA: Final = repr(_P.log_gamma)
_REP_FACTOR: Final = repr(_P.rep_factor)

# Pieces of the lambda body (SQL UDFs cannot bind local names, so they repeat).
_N = "(zeros + arraySum(mapValues(keys_map)))"
# float64 product then floor: the same rank numpy's method="lower" and Python use
_RANK = f"toUInt64(floor(toFloat64({_N} - 1) * q))"
_SORTED_KEYS = "arraySort(mapKeys(keys_map))"
_SORTED_COUNTS = "arraySort((c, k) -> k, mapValues(keys_map), mapKeys(keys_map))"
_BUCKET = f"arrayFirstIndex(c -> c > ({_RANK} - zeros), arrayCumSum({_SORTED_COUNTS}))"
_ANSWER = f"exp(toFloat64(arrayElement({_SORTED_KEYS}, {_BUCKET})) * {_LOG_GAMMA}) * {_REP_FACTOR}"

CREATE_QUANTILE_FUNCTION: Final = f"""
CREATE FUNCTION IF NOT EXISTS {FUNCTION_NAME} AS (keys_map, zeros, q) ->
    if({_N} = 0, nan,
       if({_RANK} < zeros, 0., {_ANSWER}))
""".strip()

CREATE_BOUNDED_QUANTILE_FUNCTION: Final = f"""
CREATE FUNCTION IF NOT EXISTS {BOUNDED_FUNCTION_NAME} AS
    (keys_map, zeros, q, min_value, max_value) ->
    if({_N} = 0, nan,
       if({_RANK} = 0, toFloat64(min_value),
          if({_RANK} = {_N} - 1, toFloat64(max_value),
             least(greatest({FUNCTION_NAME}(keys_map, zeros, q), toFloat64(min_value)),
                   toFloat64(max_value)))))
""".strip()

# The bounded function calls the plain one, so create them in this order.
CREATE_FUNCTIONS: Final = (CREATE_QUANTILE_FUNCTION, CREATE_BOUNDED_QUANTILE_FUNCTION)
# A SQL function may wrap aggregate functions: used in a GROUP BY query, the
# wrapper's sumMap and sum aggregate the group's rows (migration 8 creates it).
CREATE_ROLLUP_FUNCTION: Final = f"""
CREATE FUNCTION IF NOT EXISTS {ROLLUP_FUNCTION_NAME} AS (q, keys, counts, zeros) ->
    {FUNCTION_NAME}(sumMap(mapFromArrays(keys, counts)), sum(zeros), q)
""".strip()

DROP_FUNCTIONS: Final = (
    f"DROP FUNCTION IF EXISTS {BOUNDED_FUNCTION_NAME}",
    f"DROP FUNCTION IF EXISTS {FUNCTION_NAME}",
)


def merged_quantile_sql(
    prefix: str,
    q: float,
    *,
    min_expr: str | None = None,
    max_expr: str | None = None,
) -> str:
    """Aggregate expression: quantile ``q`` of the merged ``<prefix>_sketch_*`` columns.

    With ``min_expr`` and ``max_expr`` (aggregates of exact bounds, for example
    ``max(latency_max_ms)``) the bounded function is used.
    """
    if prefix not in ("latency", "ttft"):
        raise ValueError(f"unknown sketch column prefix {prefix!r}")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q!r}")
    keys_map = f"sumMap(mapFromArrays({prefix}_sketch_keys, {prefix}_sketch_counts))"
    zeros = f"sum({prefix}_sketch_zeros)"
    if min_expr is None or max_expr is None:
        return f"{FUNCTION_NAME}({keys_map}, {zeros}, {q!r})"
    return f"{BOUNDED_FUNCTION_NAME}({keys_map}, {zeros}, {q!r}, {min_expr}, {max_expr})"


ROLLUP_EXAMPLE: Final = f"""
-- Hourly latency percentiles per service from stored 60 s windows (window_tiles keeps
-- the windows that tile time: each event counts once).
-- Hopping windows overlap: keep only rows on a 60 s boundary so every event counts once.
SELECT
    toStartOfHour(window_start) AS hour,
    service,
    sum(requests) AS requests,
    {merged_quantile_sql("latency", 0.5)} AS latency_p50_ms,
    {merged_quantile_sql("latency", 0.95)} AS latency_p95_ms,
    {merged_quantile_sql("latency", 0.99)} AS latency_p99_ms,
    max(latency_max_ms) AS latency_max_ms
FROM window_tiles
WHERE window_seconds = 60
  AND grouping = 'service+endpoint+model'
  AND toUnixTimestamp(window_start) % 60 = 0
GROUP BY hour, service
ORDER BY hour, service
""".strip()
