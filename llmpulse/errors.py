"""The one exception hierarchy of llmpulse.

Every error carries the data a caller needs to act on it (the field, the value,
the rule, the DSN...) as attributes, not only in its message, so adapters can
turn them into DLQ reasons, HTTP answers or CLI messages without parsing text.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit


def mask_dsn(dsn: str) -> str:
    """A DSN or URL with its password replaced by ``***``.

    >>> mask_dsn("http://bob:s3cret@db.example:8123/llm")
    'http://bob:***@db.example:8123/llm'
    >>> mask_dsn("chdb:///var/lib/llmpulse/store")
    'chdb:///var/lib/llmpulse/store'
    """
    try:
        parts = urlsplit(dsn)
        password = parts.password
    except ValueError:  # not a URL at all (e.g. a bad port): show nothing after '@'
        return dsn.rsplit("@", 1)[-1] if "@" in dsn else dsn
    if password:
        netloc = f"{parts.username}:***@{parts.hostname}"
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))
    return dsn


def _scrub(text: str, dsn: str) -> str:
    """``text`` without the DSN's password (drivers quote URLs in their errors)."""
    try:
        password = urlsplit(dsn).password
    except ValueError:
        password = None
    if password:
        text = text.replace(password, "***")
    return text


class LlmpulseError(Exception):
    """Base class of every error raised on purpose by llmpulse."""


class _Named(LlmpulseError):
    """An error about one named thing (a setting, a broker, a file...): it reads
    ``<what> <name>: <problem>``, and ``problem`` is kept apart for adapters
    that show it without the name (an HTTP answer, a form field)."""

    _what = ""

    def __init__(self, name: str, problem: str) -> None:
        self.problem = problem
        super().__init__(f"{self._what} {name}: {problem}" if self._what else f"{name}: {problem}")


class ConfigError(_Named):
    """A setting is missing or invalid."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        super().__init__(setting, problem)


class FieldProblem:
    """One violated rule on one field of an input record."""

    __slots__ = ("field", "rule", "value")

    def __init__(self, field: str, rule: str, value: Any = None) -> None:
        self.field = field
        self.rule = rule
        self.value = value

    def __str__(self) -> str:
        shown = _short_repr(self.value)
        return f"{self.field}: {self.rule}, got {shown}" if shown else f"{self.field}: {self.rule}"

    def __repr__(self) -> str:
        return f"FieldProblem({self.field!r}, {self.rule!r}, {self.value!r})"

    @property
    def category(self) -> str:
        """The reason without the offending value, for counting rejections by kind."""
        return f"{self.field}: {self.rule}"


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


def _short_repr(value: Any, limit: int = 80) -> str:
    if value is MISSING:
        return ""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ValidationError(LlmpulseError):
    """An input record breaks the event contract; ``problems`` lists every violation."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        if not problems:
            raise ValueError("ValidationError needs at least one problem")
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))

    @property
    def reason(self) -> str:
        return str(self)

    @property
    def category(self) -> str:
        return self.problems[0].category


class DecodeError(ValidationError):
    """The raw bytes are not a JSON object at all."""

    def __init__(self, rule: str, value: Any = MISSING) -> None:
        super().__init__([FieldProblem("$", rule, value)])


class StoreError(_Named):
    """The ClickHouse store failed or is unreachable."""

    _what = "store"

    def __init__(self, dsn: str, problem: str) -> None:
        # Errors reach logs, HTTP answers and the terminal: never with credentials.
        self.dsn = mask_dsn(dsn)
        super().__init__(self.dsn, _scrub(problem, dsn))


class StoreLockedError(StoreError):
    """An embedded chDB store is held by another process (usually the worker)."""


class ReadOnlyQueryError(StoreError):
    """A query sent to the read-only SQL interface tried to change something."""


class KafkaError(_Named):
    """The broker is unreachable or a local broker could not be managed."""

    _what = "kafka"

    def __init__(self, bootstrap: str, problem: str) -> None:
        self.bootstrap = bootstrap
        super().__init__(bootstrap, problem)


class SinkError(_Named):
    """An alert delivery failed."""

    _what = "sink"

    def __init__(
        self,
        sink: str,
        problem: str,
        *,
        retryable: bool,  # whether trying again may help (the sender gives up if not)
        status: int | None = None,
        retry_after: float | None = None,  # the receiver's hint in seconds (Retry-After)
    ) -> None:
        self.sink = sink
        self.retryable = retryable
        self.status = status  # the HTTP status, for receivers that answered at all
        self.retry_after = retry_after
        super().__init__(sink, problem)


class PriceTableError(_Named):
    """A price file is malformed."""

    _what = "price table"

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        super().__init__(source, problem)
