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
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from llmpulse.alerts.config import AlertSinkSettings, PagerDutySettings
from llmpulse.errors import ConfigError

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


class WorkerSettings(BaseModel):
    app_id: str = Field("llmpulse", description="Consumer group and Faust app id")
    batch_size: int = Field(5000, ge=1, description="Events per ClickHouse insert")
    flush_interval_s: float = Field(1.0, gt=0, description="Longest wait before a partial batch")
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, description="Worker HTTP port: /health, /metrics, /sql")
    dedup_cache: int = Field(1_000_000, ge=0, description="Recent event ids kept in memory")


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


class PriceSettings(BaseModel):
    file: Path | None = Field(None, description="User price file overriding the shipped table")


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
    windows: WindowSettings = WindowSettings()
    drift: DriftSettings = DriftSettings()
    alerts: AlertSinkSettings = AlertSinkSettings()
    pagerduty: PagerDutySettings = PagerDutySettings()
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
        """Effective settings as plain data, with passwords in DSNs masked."""
        data = self.model_dump(mode="json")
        data["clickhouse"]["dsn"] = mask_dsn(self.clickhouse_dsn)
        return data


def mask_dsn(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}"
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))
    return dsn


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
    "MetricSettings",
    "PriceSettings",
    "ScoreSettings",
    "SecretStr",
    "Settings",
    "TopicSettings",
    "WorkerSettings",
    "apply_flags",
    "load_settings",
    "mask_dsn",
]
