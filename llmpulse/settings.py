"""The one settings tree, read once at the edge (CLI, worker start-up).

Sources, highest priority first: environment variables (``LLMPULSE_*``), the
TOML config file (``--config``, default ``./llmpulse.toml`` when present), then
the defaults below. Nested sections map to ``LLMPULSE_<SECTION>_<FIELD>``, so
``LLMPULSE_KAFKA_BOOTSTRAP`` sets ``kafka.bootstrap`` and
``LLMPULSE_WORKER_BATCH_SIZE`` sets ``worker.batch_size``. Nothing below the CLI
and the worker reads the environment; they pass the pieces they need.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from llmpulse.alerts.config import AlertSinkSettings, PagerDutySettings
from llmpulse.errors import ConfigError, mask_dsn
from llmpulse.schemas.event import (
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_TEXT_CHARS,
    MAX_EMBEDDING_DIM,
    EventLimits,
)

DEFAULT_CONFIG_FILE = Path("llmpulse.toml")


def _xdg_dir(var: str, fallback: str) -> Path:
    base = os.environ.get(var)
    return (Path(base) if base else Path.home() / fallback) / "llmpulse"


def default_data_dir() -> Path:
    return _xdg_dir("XDG_DATA_HOME", ".local/share")


def default_cache_dir() -> Path:
    return _xdg_dir("XDG_CACHE_HOME", ".cache")


class KafkaSettings(BaseModel):
    bootstrap: str = Field("localhost:9092", description="Kafka bootstrap servers, host:port[,...]")
    client_id: str = "llmpulse"
    local_port: int = Field(9092, description="Port of the broker `llmpulse kafka start` runs")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How clients talk to the brokers"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism (with a SASL_* protocol)"
    )
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(None, description="CA bundle that signs the brokers' certs")
    ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS)")
    ssl_keyfile: Path | None = Field(None, description="Client private key (mutual TLS)")
    ssl_password: SecretStr | None = Field(None, description="Password of the client key")
    ssl_check_hostname: bool = Field(True, description="Check the brokers' host names")


class TopicSettings(BaseModel):
    traces: str = "llm.traces"
    dlq: str = "llm.traces.dlq"
    scores: str = Field("llm.scores", description="Score events (evaluations, feedback)")
    scores_dlq: str = Field("llm.scores.dlq", description="Rejected score messages")
    control: str = "llm.control"
    partitions: int = Field(6, ge=1, description="Partitions when llmpulse creates a topic")


class ClickHouseSettings(BaseModel):
    dsn: str | None = Field(
        None,
        description="chdb:///path (embedded), chdb://memory, or http(s)://user:pass@host:8123/db;"
        " default: an embedded store under data_dir",
    )
    database: str | None = Field(None, description="Database for llmpulse tables (default: DSN's)")
    retention_days: int | None = Field(
        None, ge=1, description="TTL of raw rows, counted from ingestion; unset keeps them"
    )
    store_text: bool = Field(False, description="Store prompt and response text in traces")

    def __repr_args__(self) -> Any:
        # reprs end up in logs and tracebacks: never with the DSN's password
        for name, value in super().__repr_args__():
            yield name, (mask_dsn(value) if name == "dsn" and value else value)


class WorkerSettings(BaseModel):
    app_id: str = Field("llmpulse", description="Consumer group and Faust app id")
    batch_size: int = Field(5000, ge=1, description="Events per ClickHouse insert")
    flush_interval_s: float = Field(
        0.2, gt=0, description="Longest wait for messages before processing what arrived"
    )
    commit_interval_s: float = Field(
        2.0, gt=0, description="Seconds between checkpoints and offset commits"
    )
    web_host: str = Field(
        "127.0.0.1", description="Bind address; anything but loopback needs worker.token"
    )
    web_port: int = Field(6066, description="Worker HTTP port: /health, /metrics, /sql")
    token: SecretStr | None = Field(
        None, description="Bearer token every endpoint but /health requires (full access)"
    )
    tenant_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Tenant -> bearer token that reads only that tenant's rows through /sql",
    )
    sql_max_execution_s: float = Field(
        60.0, gt=0, description="Longest a read-only query may run (/sql, llmpulse sql)"
    )
    dedup_cache: int = Field(
        1_000_000, ge=0, description="Recent event ids remembered per worker task (duplicates)"
    )
    shutdown_timeout_s: float = Field(
        12.0,
        gt=0,
        description="Longest a SIGTERM shutdown may take (the broker or store may be down); "
        "unfinished work is redone by the next owner",
    )


class WindowSettings(BaseModel):
    specs: list[tuple[int, int]] = Field(
        [(60, 10), (300, 60)], description="(length s, hop s) of each sliding window"
    )
    groupings: list[str] = Field(
        ["service+endpoint+model", "model", "tenant"],
        description="Series definitions: dimensions joined with '+'",
    )
    allowed_lateness_s: float = Field(30.0, ge=0, description="Watermark lag behind event time")
    idle_timeout_s: float | None = Field(
        None, gt=0, description="Wall time without events before windows close anyway"
    )
    max_series: int = Field(10_000, ge=1, description="Active series per grouping, then __other__")
    restore_hours: float = Field(
        6.0, gt=0, description="How far back a restarting worker rebuilds open windows"
    )


class DriftSettings(BaseModel):
    enabled: bool = Field(True, description="Run the drift detectors")
    grouping: list[str] = Field(
        ["endpoint", "model", "prompt_version"], description="Dimensions of a drift series"
    )
    warmup: int = Field(500, ge=50, description="Events that learn a series' baseline")
    window: int = Field(200, ge=20, description="Events per windowed two-sample test")
    detector: Literal["adwin", "kswin", "page_hinkley"] = "adwin"
    embedding_dim: int = Field(384, ge=16, description="Dimension of the built-in text embedder")
    fill_embeddings: bool = Field(True, description="Embed prompt/response text when no vector")
    max_series: int = Field(1000, ge=1, description="Drift series tracked at most")
    auto_rebaseline: bool = Field(False, description="Learn a new baseline after a drift")


class ScoreSettings(BaseModel):
    """Late scores and the per-window quality statistics folded from them (docs/canary.md)."""

    threshold: float = Field(
        0.5, description="A score value below this counts in the window's rate_below"
    )
    thresholds: dict[str, float] = Field(
        default_factory=dict, description="Per score name, overriding `threshold`"
    )
    hallucination_score: str = Field(
        "hallucination", description="Score whose bad share is the hallucination_rate signal"
    )
    hallucination_if: Literal["above", "below"] = Field(
        "above",
        description="'above': a value >= its threshold is a hallucination (a 0/1 flag);"
        " 'below': a value < its threshold is one (faithfulness-like scores)",
    )
    signal_window_s: int = Field(
        300, ge=1, description="Window length (one of windows.specs) whose quality goes to alerts"
    )
    alert_delay_s: float = Field(
        300.0, ge=0, description="Event time after a window's end before its quality is alerted on"
    )
    call_cache: int = Field(
        200_000, ge=0, description="Recent calls remembered to place scores in their windows"
    )
    pending_max: int = Field(
        100_000, ge=0, description="Scores of calls not yet seen, held until the call arrives"
    )
    pending_s: float = Field(
        3600.0, gt=0, description="How long (score event time) a score waits for its call"
    )


class EvaluatorSettings(BaseModel):
    """Online evaluators: built-in checks of each call's text and an optional LLM judge."""

    enabled: bool = Field(False, description="Run the online evaluators on calls with text")
    refusal: bool = Field(True, description="Score `refusal` (1.0 when the response refuses)")
    json_valid: bool = Field(False, description="Score `json_valid` of every response")
    json_schema: Path | None = Field(
        None, description="JSON schema file: score `json_schema` (1.0 when the response matches)"
    )
    regex: dict[str, str] = Field(
        default_factory=dict, description="Score name -> regex; 1.0 when the response matches"
    )
    similarity: bool = Field(
        True, description="Score `prompt_similarity`: cosine of prompt and response embeddings"
    )
    match: dict[str, str] = Field(
        default_factory=dict, description="Only calls whose dimensions equal these values"
    )


class JudgeSettings(BaseModel):
    """An LLM judge on an OpenAI-compatible chat-completions endpoint."""

    enabled: bool = False
    url: str = Field(
        "http://127.0.0.1:8000/v1/chat/completions", description="Chat-completions URL"
    )
    model: str = Field("gpt-4o-mini", description="Model the judge asks")
    api_key: SecretStr | None = Field(None, description="Bearer token, if the endpoint needs one")
    rubric: str = Field(
        "You grade an AI assistant's answer. Reply with JSON only: "
        '{"score": <number from 0 to 1>, "reason": "<one sentence>"}. '
        "1 means the answer is correct, grounded in the question and helpful; "
        "0 means it is wrong, invented or unhelpful.",
        description="System prompt of the judge; it must ask for a JSON object with `score`",
    )
    score_name: str = Field("judge", description="Name of the scores the judge produces")
    sample_rate: float = Field(0.05, ge=0, le=1, description="Share of eligible calls judged")
    max_per_minute: float = Field(60.0, gt=0, description="Requests per minute at most")
    queue_size: int = Field(1000, ge=1, description="Calls waiting for the judge; then dropped")
    timeout_s: float = Field(30.0, gt=0, description="Per request")
    max_chars: int = Field(8000, ge=100, description="Prompt and response are cut to this")


class MetricSettings(BaseModel):
    """How much worse a candidate may be on one metric, and what the test must detect.

    Both numbers are in the metric's effect unit: relative change for latency, TTFT,
    costs and tokens (0.10 = 10 % worse), absolute share for error and score rates
    (0.01 = one percentage point), MMD² for embeddings."""

    tolerance: float = Field(ge=0, description="A regression up to this is acceptable")
    min_effect: float = Field(gt=0, description="Smallest regression to detect (power)")


class CompareSettings(BaseModel):
    """Statistics of `llmpulse compare` and the canary monitor (docs/canary.md)."""

    alpha: float = Field(0.05, gt=0, lt=1, description="Family-wise error rate (Holm)")
    power: float = Field(0.8, gt=0, lt=1, description="Power wanted at each min_effect")
    bootstrap: int = Field(2000, ge=100, description="Bootstrap resamples of quantile CIs")
    max_rows: int = Field(200_000, ge=100, description="Rows per arm read at most (sampled)")
    min_embeddings: int = Field(200, ge=80, description="Embeddings per arm for a verdict")
    seed: int = Field(0, description="Seed of the bootstrap and of row sampling")
    latency: MetricSettings = MetricSettings(tolerance=0.05, min_effect=0.10)
    ttft: MetricSettings = MetricSettings(tolerance=0.05, min_effect=0.10)
    error_rate: MetricSettings = MetricSettings(tolerance=0.005, min_effect=0.01)
    score_rate: MetricSettings = MetricSettings(tolerance=0.01, min_effect=0.03)
    cost_per_request: MetricSettings = MetricSettings(tolerance=0.05, min_effect=0.10)
    cost_per_1k_tokens: MetricSettings = MetricSettings(tolerance=0.05, min_effect=0.10)
    tokens_per_request: MetricSettings = MetricSettings(tolerance=0.10, min_effect=0.15)
    embedding: MetricSettings = MetricSettings(tolerance=0.015, min_effect=0.03)


class CanaryPair(BaseModel):
    name: str = Field(min_length=1)
    baseline: dict[str, str] = Field(min_length=1)
    candidate: dict[str, str] = Field(min_length=1)
    where: dict[str, str] = Field(default_factory=dict)


class CanarySettings(BaseModel):
    """Continuous comparisons in the worker (wired by the worker; docs/canary.md)."""

    pairs: list[CanaryPair] = Field(default_factory=list)
    horizon_s: int = Field(3600, ge=60, description="Traffic compared: the last horizon_s")
    rollback: bool = Field(False, description="Publish a rollback control event on failure")


class BudgetSettings(BaseModel):
    scope: Literal["tenant", "team"]
    name: str = Field(min_length=1)
    period: Literal["day", "month"] = "day"
    limit_usd: float = Field(gt=0)


class LimitSettings(BaseModel):
    """Limits on hostile or broken input (docs/security.md). Active series are
    capped by ``windows.max_series``; OTLP request bodies by the OTLP receiver."""

    max_event_bytes: int = Field(
        DEFAULT_MAX_EVENT_BYTES, ge=256, description="Largest accepted event (bytes of JSON)"
    )
    max_text_chars: int = Field(
        DEFAULT_MAX_TEXT_CHARS, ge=0, description="Longest prompt or response (characters)"
    )
    max_embedding_dim: int = Field(
        MAX_EMBEDDING_DIM,
        ge=1,
        le=MAX_EMBEDDING_DIM,
        description="Most components of a prompt or response embedding",
    )

    def event_limits(self) -> EventLimits:
        return EventLimits(self.max_event_bytes, self.max_text_chars, self.max_embedding_dim)


PrivacyMode = Literal["off", "mask", "hash", "drop"]


class PrivacySettings(BaseModel):
    """PII redaction before anything is written (docs/security.md).

    ``modes`` sets a mode per PII type and ``fields`` per field and type
    (``{"response": {"phone": "drop", "*": "mask"}}``); the most specific wins.
    """

    redact: bool = Field(True, description="Redact PII in stored text and attribute values")
    default_mode: PrivacyMode = Field("mask", description="off, mask, hash or drop")
    modes: dict[str, PrivacyMode] = Field(
        default_factory=dict, description="Mode per PII type (email, phone, card, iban...)"
    )
    fields: dict[str, dict[str, PrivacyMode]] = Field(
        default_factory=dict,
        description="Mode per field (prompt, response, attributes, raw) and type ('*': any)",
    )
    hash_key: SecretStr | None = Field(
        None, description="HMAC key of the 'hash' mode and of user_id pseudonyms"
    )
    pseudonymise_user_id: bool = Field(False, description="Store a keyed hash of user_id")
    phone_regions: list[str] = Field(
        ["US", "GB", "DE", "FR", "IN"],
        description="Regions whose national phone formats are recognised",
    )


class PriceSettings(BaseModel):
    file: Path | None = Field(None, description="User price file overriding the shipped table")


OtlpField = Literal[
    "tenant", "team", "endpoint", "prompt_version", "variant", "user_id", "environment"
]

# Resource and span attributes that name the deployment and the end user in the
# OpenTelemetry conventions (current name first, then the older one).
DEFAULT_OTLP_MAPPINGS: dict[OtlpField, list[str]] = {
    "environment": ["deployment.environment.name", "deployment.environment"],
    "user_id": ["user.id", "enduser.id"],
}


class OtlpSettings(BaseModel):
    """OpenTelemetry input: the Collector's Kafka topic and the ``/v1/traces`` receiver."""

    topic: str = Field("otlp_spans", description="Topic the Collector's Kafka exporter writes")
    encoding: Literal["auto", "otlp_proto", "otlp_json"] = Field(
        "auto", description="Encoding of otlp_spans messages; auto detects it per message"
    )
    mappings: dict[OtlpField, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_OTLP_MAPPINGS.items()},
        description="Event field <- span or resource attribute(s), first present wins;"
        " merged over the defaults (an empty list turns a default off)",
    )
    copy_attributes: list[str] = Field(
        default_factory=list, description="More span/resource attributes kept in `attributes`"
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest OTLP payload (message or decompressed body)"
    )
    max_message_bytes: int = Field(
        1_000_000, ge=1024, description="Largest message /v1/traces writes to the topic (splits)"
    )

    @field_validator("mappings", mode="before")
    @classmethod
    def _merge_mappings(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        merged: dict[str, Any] = {k: list(x) for k, x in DEFAULT_OTLP_MAPPINGS.items()}
        for field, sources in v.items():
            merged[field] = [sources] if isinstance(sources, str) else sources
        return merged


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LLMPULSE_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    cache_dir: Path = Field(default_factory=default_cache_dir)
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    worker: WorkerSettings = WorkerSettings()
    prices: PriceSettings = PriceSettings()
    privacy: PrivacySettings = PrivacySettings()
    limits: LimitSettings = LimitSettings()
    windows: WindowSettings = WindowSettings()
    drift: DriftSettings = DriftSettings()
    alerts: AlertSinkSettings = AlertSinkSettings()
    pagerduty: PagerDutySettings = PagerDutySettings()
    otlp: OtlpSettings = OtlpSettings()
    scores: ScoreSettings = ScoreSettings()
    evaluators: EvaluatorSettings = EvaluatorSettings()
    judge: JudgeSettings = JudgeSettings()
    compare: CompareSettings = CompareSettings()
    canary: CanarySettings = CanarySettings()
    budgets: list[BudgetSettings] = Field(
        default_factory=list, description="Cost budgets per tenant or team"
    )
    sql_url: str | None = Field(
        None, description="Worker SQL endpoint used when the embedded store is locked"
    )

    @field_validator("data_dir", "cache_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The config file arrives as init kwargs; the environment must still win.
        return env_settings, init_settings

    @property
    def clickhouse_dsn(self) -> str:
        return self.clickhouse.dsn or f"chdb://{(self.data_dir / 'store').resolve()}"

    @property
    def worker_url(self) -> str:
        return self.sql_url or f"http://{self.worker.web_host}:{self.worker.web_port}"

    def masked(self) -> dict[str, Any]:
        """Effective settings as plain data: secrets (``SecretStr``) show as
        ``**********`` and passwords in URLs as ``***``."""
        data = self.model_dump(mode="json")
        data["clickhouse"]["dsn"] = mask_dsn(self.clickhouse_dsn)
        if self.sql_url:
            data["sql_url"] = mask_dsn(self.sql_url)
        return data


def load_settings(config: Path | None = None) -> Settings:
    """Build the settings tree from a TOML file and the environment.

    ``config=None`` reads ``./llmpulse.toml`` when it exists. Flags the user typed
    go on top afterwards, through ``apply_flags``.
    """
    file_values: dict[str, Any] = {}
    path = config if config is not None else DEFAULT_CONFIG_FILE
    if config is not None and not path.exists():
        raise ConfigError("--config", f"file {path} does not exist")
    if path.exists():
        try:
            file_values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"invalid TOML: {exc}") from exc
    try:
        return Settings(**file_values)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(loc, f"{first['msg']}, got {first.get('input')!r}") from exc


def apply_flags(settings: Settings, flags: dict[str, Any]) -> Settings:
    """Return settings with explicit CLI flags applied on top of everything else.

    Keys are dotted ``section.field`` paths (``"clickhouse.dsn"``) or top-level
    names; ``None`` values (flags not given) are ignored.
    """
    for dotted, value in flags.items():
        if value is None:
            continue
        section, _, leaf = dotted.partition(".")
        if not leaf:
            settings = settings.model_copy(update={section: value})
            continue
        node = getattr(settings, section)
        settings = settings.model_copy(update={section: node.model_copy(update={leaf: value})})
    return settings


__all__ = [
    "CanaryPair",
    "CanarySettings",
    "ClickHouseSettings",
    "CompareSettings",
    "EvaluatorSettings",
    "JudgeSettings",
    "KafkaSettings",
    "LimitSettings",
    "MetricSettings",
    "OtlpSettings",
    "PriceSettings",
    "PrivacySettings",
    "ScoreSettings",
    "SecretStr",
    "Settings",
    "TopicSettings",
    "WorkerSettings",
    "apply_flags",
    "load_settings",
    "mask_dsn",
]
