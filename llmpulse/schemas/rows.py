"""Table rows: the columns llmpulse writes, with their ClickHouse types.

The DDL in ``llmpulse.store.migrations`` and the Arrow encoders in
``llmpulse.store.encode`` use these lists, so the columns written and the
columns of the table cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmpulse.schemas.event import DIMENSIONS

Column = tuple[str, str]

TRACE_COLUMNS: tuple[Column, ...] = (
    ("event_id", "String"),
    ("schema_version", "UInt8"),
    ("timestamp", "DateTime64(3, 'UTC')"),
    ("service", "LowCardinality(String)"),
    ("endpoint", "LowCardinality(String)"),
    ("model", "LowCardinality(String)"),
    ("provider", "LowCardinality(String)"),
    ("tenant", "LowCardinality(String)"),
    ("team", "LowCardinality(String)"),
    ("user_id", "String"),
    ("environment", "LowCardinality(String)"),
    ("response_model", "LowCardinality(String)"),
    ("operation", "LowCardinality(String)"),
    ("prompt_version", "LowCardinality(String)"),
    ("variant", "LowCardinality(String)"),
    ("trace_id", "String"),
    ("span_id", "String"),
    ("parent_span_id", "String"),
    ("latency_ms", "Float64"),
    ("ttft_ms", "Nullable(Float64)"),
    ("status", "LowCardinality(String)"),
    ("error_type", "LowCardinality(String)"),
    ("finish_reason", "LowCardinality(String)"),
    ("input_tokens", "Nullable(UInt64)"),
    ("output_tokens", "Nullable(UInt64)"),
    ("cached_input_tokens", "Nullable(UInt64)"),
    ("cache_creation_input_tokens", "Nullable(UInt64)"),
    ("reasoning_tokens", "Nullable(UInt64)"),
    ("cost_usd", "Nullable(Float64)"),
    ("cost_source", "LowCardinality(String)"),
    ("price_version", "LowCardinality(String)"),
    ("scores", "Map(String, Float64)"),
    ("attributes", "Map(String, String)"),
    ("prompt", "Nullable(String)"),
    ("response", "Nullable(String)"),
    ("prompt_embedding_dim", "UInt16"),
    ("response_embedding_dim", "UInt16"),
    ("source", "String"),
    ("ingested_at", "DateTime64(3, 'UTC')"),
    # PII redacted from the row's text, by type (llmpulse.privacy); last, as
    # migration 7 appends it to tables created before it.
    ("redactions", "Map(LowCardinality(String), UInt32)"),
)

REJECTED_COLUMNS: tuple[Column, ...] = (
    ("rejection_id", "String"),
    ("received_at", "DateTime64(3, 'UTC')"),
    ("source", "String"),
    ("reason", "String"),
    ("category", "LowCardinality(String)"),
    ("field", "LowCardinality(String)"),
    ("event_id", "String"),
    ("raw", "String"),
)

MODEL_PRICE_COLUMNS: tuple[Column, ...] = (
    ("provider", "LowCardinality(String)"),
    ("model", "String"),
    ("aliases", "Array(String)"),
    ("patterns", "Array(String)"),
    ("effective_from", "Date"),
    ("input_per_mtok", "Float64"),
    ("output_per_mtok", "Float64"),
    ("cached_input_per_mtok", "Nullable(Float64)"),
    ("cache_creation_per_mtok", "Nullable(Float64)"),
    ("reasoning_per_mtok", "Nullable(Float64)"),
    ("source", "String"),
    ("table_version", "String"),
)


_DIMENSION_COLUMNS: tuple[Column, ...] = tuple((d, "LowCardinality(String)") for d in DIMENSIONS)
# A window of one series: what window rows and the score partials of a window share.
_WINDOW_KEY_COLUMNS: tuple[Column, ...] = (
    ("window_id", "String"),
    ("window_start", "DateTime('UTC')"),
    ("window_end", "DateTime('UTC')"),
    ("window_seconds", "UInt32"),
    ("hop_seconds", "UInt32"),
    ("grouping", "LowCardinality(String)"),
    *_DIMENSION_COLUMNS,
)

WINDOW_COLUMNS: tuple[Column, ...] = (
    *_WINDOW_KEY_COLUMNS,
    ("requests", "UInt64"),
    ("errors", "UInt64"),
    ("error_rate", "Float64"),
    ("latency_p50_ms", "Float64"),
    ("latency_p90_ms", "Float64"),
    ("latency_p95_ms", "Float64"),
    ("latency_p99_ms", "Float64"),
    ("latency_max_ms", "Float64"),
    ("ttft_p50_ms", "Nullable(Float64)"),
    ("ttft_p95_ms", "Nullable(Float64)"),
    ("ttft_p99_ms", "Nullable(Float64)"),
    ("input_tokens", "UInt64"),
    ("output_tokens", "UInt64"),
    ("cost_usd", "Float64"),
    ("unpriced_requests", "UInt64"),
    ("late_events", "UInt64"),
    ("latency_sketch_keys", "Array(Int32)"),
    ("latency_sketch_counts", "Array(UInt64)"),
    ("latency_sketch_zeros", "UInt64"),
    ("latency_min_ms", "Float64"),
    ("ttft_sketch_keys", "Array(Int32)"),
    ("ttft_sketch_counts", "Array(UInt64)"),
    ("ttft_sketch_zeros", "UInt64"),
    ("emitted_at", "DateTime64(3, 'UTC')"),
)


def names(columns: tuple[Column, ...]) -> list[str]:
    return [c[0] for c in columns]


def ddl_columns(columns: tuple[Column, ...]) -> str:
    """The column list of a CREATE TABLE statement."""
    return ",\n    ".join(f"{name} {kind}" for name, kind in columns)


# A retried insert of the same block (same deduplication token) is dropped by
# ClickHouse itself; non-replicated tables need this window to be non-zero.
DEDUP_SETTING = "non_replicated_deduplication_window = 1000"


@dataclass(frozen=True, slots=True)
class CostFields:
    cost_usd: float | None
    cost_source: str
    price_version: str


SCORE_COLUMNS: tuple[Column, ...] = (
    ("score_id", "String"),
    ("timestamp", "DateTime64(3, 'UTC')"),
    ("name", "LowCardinality(String)"),
    ("value", "Float64"),
    ("data_type", "LowCardinality(String)"),
    ("source", "LowCardinality(String)"),
    ("event_id", "String"),
    ("trace_id", "String"),
    ("span_id", "String"),
    ("call_event_id", "String"),
    ("call_timestamp", "Nullable(DateTime64(3, 'UTC'))"),
    ("call_known", "UInt8"),
    ("comment", "String"),
    ("author", "String"),
    ("attributes", "Map(String, String)"),
    ("origin", "String"),
    ("received_at", "DateTime64(3, 'UTC')"),
    ("version", "UInt8"),
)

WINDOW_SCORE_COLUMNS: tuple[Column, ...] = (
    ("partial_id", "String"),
    *_WINDOW_KEY_COLUMNS,
    ("score_name", "LowCardinality(String)"),
    ("threshold", "Float64"),
    ("score_count", "UInt64"),
    ("value_sum", "Float64"),
    ("value_sq_sum", "Float64"),
    ("below_count", "UInt64"),
    ("score_ids", "Array(String)"),
    ("emitted_at", "DateTime64(3, 'UTC')"),
)

COMPARISON_COLUMNS: tuple[Column, ...] = (
    ("run_id", "String"),
    ("created_at", "DateTime64(3, 'UTC')"),
    ("origin", "LowCardinality(String)"),
    ("baseline", "String"),
    ("candidate", "String"),
    ("where", "String"),
    ("since", "Nullable(DateTime64(3, 'UTC'))"),
    ("until", "Nullable(DateTime64(3, 'UTC'))"),
    ("metric", "LowCardinality(String)"),
    ("verdict", "LowCardinality(String)"),
    ("overall", "LowCardinality(String)"),
    ("test", "LowCardinality(String)"),
    ("effect", "Float64"),
    ("ci_low", "Float64"),
    ("ci_high", "Float64"),
    ("tolerance", "Float64"),
    ("p_value", "Float64"),
    ("p_adjusted", "Float64"),
    ("n_baseline", "UInt64"),
    ("n_candidate", "UInt64"),
    ("needed_per_arm", "UInt64"),
    ("reason", "String"),
    ("details", "String"),
)
