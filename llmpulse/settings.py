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
    "ClickHouseSettings",
    "KafkaSettings",
    "LimitSettings",
    "OtlpSettings",
    "PriceSettings",
    "PrivacySettings",
    "SecretStr",
    "Settings",
    "TopicSettings",
    "WorkerSettings",
    "apply_flags",
    "load_settings",
    "mask_dsn",
]
