"""The emitter's settings, grouped by what they tune, as small frozen values.

Each group is checked when it is built, so a bad setting fails where it is
written rather than later in a background thread. The defaults suit a service
sending tens to thousands of events per second.

>>> Delivery(batch_size=64).linger_s, Limits().max_buffer
(0.05, 10000)
>>> KafkaOptions(acks=1)
Traceback (most recent call last):
llmpulse.errors.ConfigError: acks: the idempotent producer needs acks='all', got 1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from llmpulse.errors import ConfigError

__all__ = [
    "DEFAULT_DELIVERY",
    "DEFAULT_KAFKA_OPTIONS",
    "DEFAULT_LIMITS",
    "Delivery",
    "KafkaOptions",
    "Limits",
]

Compression = Literal["gzip", "snappy", "lz4", "zstd"]
_COMPRESSION_TYPES: Final = (None, "gzip", "snappy", "lz4", "zstd")


@dataclass(frozen=True, slots=True)
class Delivery:
    """How buffered events travel: batching, retries and the time a send may take.

    ``linger_s`` is how long the sender waits for a batch to fill; a failed batch
    is tried ``retries`` more times, waiting ``backoff_s``, doubled each time up
    to ``max_backoff_s``; one send may take ``send_timeout_s`` (None: no bound).
    """

    batch_size: int = 500
    linger_s: float = 0.05
    retries: int = 3
    backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    send_timeout_s: float | None = 60.0

    def __post_init__(self) -> None:
        _at_least("batch_size", self.batch_size, 1)
        _at_least("retries", self.retries, 0)
        for name in ("linger_s", "backoff_s", "max_backoff_s"):
            _at_least(name, getattr(self, name), 0)
        if self.send_timeout_s is not None and self.send_timeout_s <= 0:
            raise ConfigError("send_timeout_s", f"must be > 0 or None, got {self.send_timeout_s!r}")


@dataclass(frozen=True, slots=True)
class Limits:
    """What the emitter holds back: ``max_buffer`` events in memory (more are
    dropped), events of at most ``max_event_bytes`` encoded; drops are logged at
    most once per ``warn_interval_s``."""

    max_buffer: int = 10_000
    max_event_bytes: int = 1_000_000
    warn_interval_s: float = 10.0

    def __post_init__(self) -> None:
        _at_least("max_buffer", self.max_buffer, 1)
        _at_least("max_event_bytes", self.max_event_bytes, 1)
        _at_least("warn_interval_s", self.warn_interval_s, 0)


@dataclass(frozen=True, slots=True)
class KafkaOptions:
    """The Kafka producer of the emitter (aiokafka's names and meanings).

    The producer is idempotent by default, which the broker only accepts with
    ``acks='all'``; ``linger_ms`` batches inside the producer, on top of the
    emitter's own batching.
    """

    client_id: str = "llmpulse-emitter"
    acks: Literal["all", -1, 0, 1] = "all"
    linger_ms: int = 20
    compression_type: Compression | None = None
    request_timeout_ms: int = 30_000
    enable_idempotence: bool = True
    max_request_size: int = 1_048_576

    def __post_init__(self) -> None:
        if self.acks not in ("all", -1, 0, 1):
            raise ConfigError("acks", f"must be 'all', -1, 0 or 1, got {self.acks!r}")
        # Failing here beats the broker refusing every batch later.
        if self.enable_idempotence and self.acks not in ("all", -1):
            raise ConfigError(
                "acks", f"the idempotent producer needs acks='all', got {self.acks!r}"
            )
        if self.compression_type not in _COMPRESSION_TYPES:
            raise ConfigError(
                "compression_type",
                f"must be one of {_COMPRESSION_TYPES}, got {self.compression_type!r}",
            )
        _at_least("linger_ms", self.linger_ms, 0)
        _at_least("request_timeout_ms", self.request_timeout_ms, 1)
        _at_least("max_request_size", self.max_request_size, 1)

    def producer_config(self, bootstrap: str) -> dict[str, Any]:
        """The keyword arguments of ``AIOKafkaProducer``."""
        return {
            "bootstrap_servers": bootstrap,
            "client_id": self.client_id,
            "acks": self.acks,
            "linger_ms": self.linger_ms,
            "compression_type": self.compression_type,
            "request_timeout_ms": self.request_timeout_ms,
            "enable_idempotence": self.enable_idempotence,
            "max_request_size": self.max_request_size,
        }


def _at_least(name: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(name, f"must be >= {low}, got {value!r}")


DEFAULT_DELIVERY: Final = Delivery()
DEFAULT_LIMITS: Final = Limits()
DEFAULT_KAFKA_OPTIONS: Final = KafkaOptions()
