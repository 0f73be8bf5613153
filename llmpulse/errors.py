"""The one exception hierarchy of llmpulse.

Every error carries the data a caller needs to act on it (the field, the value,
the rule, the DSN...) as attributes, not only in its message, so adapters can
turn them into DLQ reasons, HTTP answers or CLI messages without parsing text.
"""

from __future__ import annotations

from typing import Any


class LlmpulseError(Exception):
    """Base class of every error raised on purpose by llmpulse."""


class ConfigError(LlmpulseError):
    """A setting is missing or invalid."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"{setting}: {problem}")


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


class StoreError(LlmpulseError):
    """The ClickHouse store failed or is unreachable."""

    def __init__(self, dsn: str, problem: str) -> None:
        self.dsn = dsn
        self.problem = problem
        super().__init__(f"store {dsn}: {problem}")


class StoreLockedError(StoreError):
    """An embedded chDB store is held by another process (usually the worker)."""


class ReadOnlyQueryError(StoreError):
    """A query sent to the read-only SQL interface tried to change something."""


class KafkaError(LlmpulseError):
    """The broker is unreachable or a local broker could not be managed."""

    def __init__(self, bootstrap: str, problem: str) -> None:
        self.bootstrap = bootstrap
        self.problem = problem
        super().__init__(f"kafka {bootstrap}: {problem}")


class PriceTableError(LlmpulseError):
    """A price file is malformed."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"price table {source}: {problem}")
