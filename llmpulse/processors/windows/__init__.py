"""Event-time hopping windows of per-series latency percentiles, errors, tokens and cost.

State is explicit and time is always injected: event time comes from the events, wall
time only through ``advance_wall_clock(now_s)``; nothing here reads a clock.

How it works
------------
* Every hop of every spec is a multiple of one *base pane* (the gcd of the hops). Each
  event is aggregated once per grouping into the base pane that holds its timestamp;
  a window ``[start, end)`` is the merge of the panes it covers, so a 300 s window and
  a 60 s window read the same panes and an event costs the same whatever the specs.
* Per batch the work is vectorised: the (pane, series) groups come from one
  ``bincount``/``unique`` over combined integer keys, sums from ``bincount`` and the
  sketch buckets from one ``unique`` over (group, bucket) keys.
* Emission is per window result, and a sparse stream has ~0.1 result per event, so
  it is built for that: counters, sums, minima and maxima of all windows closing
  together come from one ``reduceat`` over their panes; the sketch buckets of the
  windows of one spec come from a dense (series x bucket) grid that moves from one
  window to the next by adding the panes entering and subtracting those leaving
  (``_SlidingGrid``; sparse data is merged by sorting instead); percentiles of all
  results at once from the merged rows (``SketchColumns``); the result objects are
  filled field by field for all results at once (``build_results``).
* Results share what they can: the dims mapping of a series (read-only) and the
  bucket arrays of their emission; a result's LogHistogram objects are made on
  first read.
* Watermark = max event time seen - allowed lateness (or later, see idleness and
  ``restore_watermark``). A window is emitted once ``watermark >= end``.
* Lateness is judged per event against the watermark in force just *before* that event
  (the running maximum of the earlier events), never against the watermark at the end
  of its batch. Each event records the first window end still open when it arrived
  (its *cutoff*); a window only reads pane contributions whose cutoff is ``<= end``.
  That makes the output independent of how the stream is cut into batches: an event
  that was partly late when it arrived joins only the windows still open then.
* An event whose windows of a spec are all closed is late for that spec: it is counted
  against its series and reported in ``late_events`` of the next window emitted for
  that series (first window with end after the event arrived), and in the totals.

>>> agg = WindowAggregator(specs=[WindowSpec(60, 60)], groupings=[GroupingSet(("model",))],
...                        allowed_lateness_s=0)
>>> batch = EventBatch.from_records([
...     {"ts_ms": 1_000, "latency_ms": 120.0, "model": "m1", "cost_usd": 0.5},
...     {"ts_ms": 2_000, "latency_ms": 80.0, "model": "m1", "is_error": True},
... ])
>>> agg.add(batch)
[]
>>> [r] = agg.flush_all()
>>> r.window_seconds, r.dims["model"], r.requests, r.errors, r.unpriced_requests, r.cost_usd
(60, 'm1', 2, 1, 1, 0.5)
>>> r.latency_p50_ms, r.latency_max_ms
(80.0, 120.0)
"""

from llmpulse.processors.windows._aggregator import WindowAggregator
from llmpulse.processors.windows._batch import EventBatch
from llmpulse.processors.windows._config import (
    DEFAULT_GROUPINGS,
    DEFAULT_SPECS,
    LATENCY_QUANTILES,
    OTHER,
    TTFT_QUANTILES,
    GroupingSet,
    WindowSpec,
)
from llmpulse.processors.windows._results import (
    INT_FIELDS,
    NUMBER_FIELDS,
    Emission,
    EmissionRuns,
    SketchRows,
    WindowResult,
    emission_runs,
    sketch_rows,
    start_millis,
    window_id,
    window_id_of,
    window_ids,
)
from llmpulse.schemas.event import DIMENSIONS

__all__ = [
    "DEFAULT_GROUPINGS",
    "DEFAULT_SPECS",
    "DIMENSIONS",
    "INT_FIELDS",
    "LATENCY_QUANTILES",
    "NUMBER_FIELDS",
    "OTHER",
    "TTFT_QUANTILES",
    "Emission",
    "EmissionRuns",
    "EventBatch",
    "GroupingSet",
    "SketchRows",
    "WindowAggregator",
    "WindowResult",
    "WindowSpec",
    "emission_runs",
    "sketch_rows",
    "start_millis",
    "window_id",
    "window_id_of",
    "window_ids",
]
