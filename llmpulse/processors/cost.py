"""Model price table and the cost of one LLM call.

Token convention (OpenTelemetry GenAI semantic conventions): ``input_tokens`` is the
*total* prompt, cache reads (``gen_ai.usage.cache_read.input_tokens``) and cache writes
(``gen_ai.usage.cache_creation.input_tokens``) included; ``output_tokens`` is the *total*
generation, reasoning tokens (``gen_ai.usage.reasoning.output_tokens``) included. The
sub-counts are therefore carved out of the totals and each part is billed at its own rate:

    uncached = max(0, input - cache_read - cache_creation)
    cost = (uncached * input_rate + cache_read * cached_rate + cache_creation * creation_rate
            + max(0, output - reasoning) * output_rate + reasoning * reasoning_rate) / 1e6

A missing cache or reasoning rate means the provider bills those tokens at the plain input
or output rate. Anthropic's own API reports ``input_tokens`` *without* the cached parts: the
adapter for it must add them back before calling :func:`cost_of_call`.

Prices are USD per million tokens. A model has one or more dated prices; a price applies
from its ``effective_from`` date (UTC) on. Lookups never guess: an unknown model is unpriced.
Price files (llmpulse's own format, LiteLLM's model map) are read and written by
:mod:`llmpulse.processors.price_files`.

>>> table = PriceTable.default()
>>> price = table.lookup("gpt-4o-2024-08-06", at=date(2025, 6, 1))
>>> (price.model, price.input_per_mtok, price.output_per_mtok)
('gpt-4o', 2.5, 10.0)
>>> call = cost_of_call(table, model="gpt-4o", provider="openai",
...                     at=datetime(2025, 6, 1, tzinfo=UTC), input_tokens=1000, output_tokens=500)
>>> (call.cost_usd, call.source)
(0.0075, 'price_table')
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from os import PathLike
from typing import Final, Literal

from llmpulse.errors import PriceTableError

__all__ = [
    "LITELLM_EFFECTIVE_FROM",
    "CallCost",
    "ModelPrice",
    "PriceTable",
    "cost_of_call",
]

# LiteLLM's file carries no dates; its prices apply from this date unless the caller says
# when the snapshot was taken (dated entries of another table then keep their history).
LITELLM_EFFECTIVE_FROM: Final = date(1970, 1, 1)

PER_MTOK: Final = 1_000_000.0

# Model names come from untrusted telemetry: a bound keeps junk names from growing the
# memo without limit. Clearing is crude but the working set of real names is small.
_MEMO_LIMIT: Final = 65_536

# Generic fallbacks, applied one after the other to a name nothing matched: a routing path
# ("openai/", "models/"), a Bedrock "region.vendor." prefix, a ":0" / "@20241022" tag (but
# ":free" is a different, free, offer), a Bedrock "-v1" revision after a date, a date.
_NAME_REWRITES: Final = (
    (re.compile(r"^.*/"), ""),
    (
        re.compile(
            r"^(?:(?:us|eu|apac|au|ca|jp|us-gov|global)\.)?"
            r"(?:anthropic|meta|mistral|amazon|cohere|deepseek|openai|qwen|ai21|writer)\."
        ),
        "",
    ),
    (re.compile(r"[:@](?!free$).*$"), ""),
    (re.compile(r"(-(?:\d{8}|\d{4}-\d{2}-\d{2}))-v\d+$"), r"\1"),
    (re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2})$"), ""),
)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One dated price of one model, in USD per million tokens.

    A ``None`` cache or reasoning rate means those tokens cost the plain input (cache) or
    output (reasoning) rate. ``patterns`` are regular expressions matched in full and
    without regard to case.
    """

    provider: str
    model: str
    effective_from: date
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None
    cache_creation_per_mtok: float | None
    reasoning_per_mtok: float | None
    aliases: tuple[str, ...]
    patterns: tuple[str, ...]
    source: str


@dataclass(frozen=True, slots=True)
class CallCost:
    """What one call cost, and where the figure came from."""

    cost_usd: float | None
    source: Literal["event", "price_table", "unpriced"]
    price: ModelPrice | None


class _Model:
    """All dated prices of one (provider, model), ready for bisection on the date."""

    __slots__ = ("dates", "entries", "provider")

    def __init__(self, provider: str, entries: list[ModelPrice]) -> None:
        self.provider = provider
        self.entries = tuple(entries)
        self.dates = [e.effective_from for e in entries]


def provider_key(provider: str) -> str:
    """The provider as the table stores and compares it."""
    return provider.strip().lower()


class PriceTable:
    """An immutable set of dated model prices with memoised name resolution.

    Build one with :meth:`default`, :meth:`from_file` or :meth:`overlay`; the constructor
    takes ready-made entries (a duplicate (provider, model, effective_from) is an error).
    When several models answer to a name, a given provider picks among them; otherwise
    the one listed first wins, and an overlay lists its own models first.

    >>> t = PriceTable.default()
    >>> t.lookup("claude-sonnet-4-20250514").model
    'claude-sonnet-4'
    >>> t.lookup("no-such-model") is None
    True
    """

    __slots__ = ("_alias", "_entries", "_exact", "_memo", "_patterns", "_version")

    def __init__(self, entries: Iterable[ModelPrice], *, version: str) -> None:
        self._version = version
        grouped: dict[tuple[str, str], list[ModelPrice]] = {}
        for entry in entries:
            key = (provider_key(entry.provider), entry.model.lower())
            grouped.setdefault(key, []).append(entry)
        self._exact: dict[str, list[_Model]] = {}
        self._alias: dict[str, list[_Model]] = {}
        self._patterns: list[tuple[re.Pattern[str], _Model]] = []
        ordered: list[ModelPrice] = []
        for (provider, model_key), group in grouped.items():
            group.sort(key=lambda e: e.effective_from)
            for before, after in itertools.pairwise(group):
                if before.effective_from == after.effective_from:
                    raise PriceTableError(
                        after.source,
                        f"two prices for {provider}/{after.model} "
                        f"from {after.effective_from.isoformat()}",
                    )
            ordered.extend(group)
            resolved = _Model(provider, group)
            self._exact.setdefault(model_key, []).append(resolved)
            # A later dated price may omit the aliases of an earlier one: a model answers
            # to the union, so an overlay can add a price without repeating them.
            aliases = dict.fromkeys(a.lower() for e in group for a in e.aliases)
            for alias in aliases:
                self._alias.setdefault(alias, []).append(resolved)
            patterns: dict[str, str] = {}
            for e in group:
                for pattern in e.patterns:
                    patterns.setdefault(pattern, e.source)
            for pattern, source in patterns.items():
                self._patterns.append((compile_pattern(pattern, source), resolved))
        self._entries = tuple(ordered)
        self._memo: dict[tuple[str, str | None], _Model | None] = {}

    # -- construction -------------------------------------------------------------------

    # The file formats build tables, so they import this module: the two constructors
    # below import them when called, which keeps the dependency one-way at import time.

    @classmethod
    def default(cls) -> PriceTable:
        """The price table shipped with llmpulse (loaded once per process)."""
        from llmpulse.processors.price_files import default_price_table

        return default_price_table()

    @classmethod
    def from_file(
        cls,
        path: str | PathLike[str],
        *,
        litellm_effective_from: date = LITELLM_EFFECTIVE_FROM,
    ) -> PriceTable:
        """Read llmpulse's own format (JSON, or YAML by suffix) or LiteLLM's
        ``model_prices_and_context_window.json`` (recognised by its shape).

        ``litellm_effective_from`` dates the LiteLLM prices, which carry no date of their own.
        """
        from llmpulse.processors.price_files import load_price_file

        return load_price_file(path, litellm_effective_from=litellm_effective_from)

    def overlay(self, other: PriceTable) -> PriceTable:
        """A new table: ``other``'s entries replace ours with the same (provider, model,
        effective_from), the rest of both are kept; ``other``'s models win ambiguous names."""
        replaced = {entry_key(e) for e in other._entries}
        kept = [e for e in self._entries if entry_key(e) not in replaced]
        return PriceTable([*other._entries, *kept], version=f"{self._version}+{other._version}")

    # -- queries --------------------------------------------------------------------------

    @property
    def version(self) -> str:
        """Identifies the prices: the shipped table's date, ``user:``/``litellm:`` and a
        content hash for files, joined with ``+`` for overlays."""
        return self._version

    @property
    def entries(self) -> tuple[ModelPrice, ...]:
        return self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[ModelPrice]:
        return iter(self._entries)

    def __repr__(self) -> str:
        return f"PriceTable(version={self._version!r}, entries={len(self._entries)})"

    def lookup(
        self,
        model: str,
        provider: str | None = None,
        at: date | datetime | None = None,
    ) -> ModelPrice | None:
        """The price of ``model`` in force at ``at`` (a naive datetime is taken as UTC;
        ``None`` means today), or ``None`` when no entry answers to the name.

        Before a model's first dated price, that first price applies.
        """
        key = (model, provider)
        try:
            found = self._memo[key]
        except KeyError:
            found = self._resolve(model, provider)
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = found
        if found is None:
            return None
        entries = found.entries
        if len(entries) == 1:
            return entries[0]
        if at is None:
            day = datetime.now(UTC).date()
        elif isinstance(at, datetime):
            day = at.astimezone(UTC).date() if at.tzinfo is not None else at.date()
        else:
            day = at
        return entries[max(bisect.bisect_right(found.dates, day) - 1, 0)]

    def rows(self) -> list[dict[str, object]]:
        """One row per dated price, shaped for the ClickHouse ``model_prices`` table."""
        return [
            {
                "provider": e.provider,
                "model": e.model,
                "aliases": list(e.aliases),
                "patterns": list(e.patterns),
                "effective_from": e.effective_from,
                "input_per_mtok": e.input_per_mtok,
                "output_per_mtok": e.output_per_mtok,
                "cached_input_per_mtok": e.cached_input_per_mtok,
                "cache_creation_per_mtok": e.cache_creation_per_mtok,
                "reasoning_per_mtok": e.reasoning_per_mtok,
                "source": e.source,
                "table_version": self._version,
            }
            for e in self._entries
        ]

    # -- resolution -----------------------------------------------------------------------

    def _resolve(self, model: str, provider: str | None) -> _Model | None:
        name = model.strip().lower()
        if not name:
            return None
        wanted = provider_key(provider) if provider else ""
        fallback: _Model | None = None
        for candidates in self._candidates(name):
            if not candidates:
                continue
            if not wanted:
                return candidates[0]
            for candidate in candidates:
                if candidate.provider == wanted:
                    return candidate
            if fallback is None:
                fallback = candidates[0]
        # The provider only narrows an ambiguous name: a provider missing from the table
        # (a proxy, a cloud reseller) does not make a known model unpriced.
        return fallback

    def _candidates(self, name: str) -> Iterator[list[_Model]]:
        for variant in _name_variants(name):
            yield self._exact.get(variant, [])
            yield self._alias.get(variant, [])
            yield [m for pattern, m in self._patterns if pattern.fullmatch(variant)]


def _name_variants(name: str) -> Iterator[str]:
    yield name
    seen = {name}
    current = name
    for pattern, replacement in _NAME_REWRITES:
        current = pattern.sub(replacement, current)
        if current and current not in seen:
            seen.add(current)
            yield current


def entry_key(entry: ModelPrice) -> tuple[str, str, date]:
    """What makes a dated price unique in a table: (provider, model, effective_from)."""
    return (provider_key(entry.provider), entry.model.lower(), entry.effective_from)


def compile_pattern(pattern: str, source: str) -> re.Pattern[str]:
    """A model-name pattern as the table matches it; an invalid one names its file."""
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise PriceTableError(source, f"invalid pattern {pattern!r}: {exc}") from exc


# -- cost -------------------------------------------------------------------------------

_UNPRICED: Final = CallCost(None, "unpriced", None)


def cost_of_call(
    table: PriceTable,
    *,
    model: str,
    provider: str | None,
    at: datetime,
    input_tokens: int | None,
    output_tokens: int | None,
    cached_input_tokens: int | None = None,
    cache_creation_input_tokens: int | None = None,
    reasoning_tokens: int | None = None,
    cost_usd: float | None = None,
) -> CallCost:
    """The cost of one call (token convention in the module docstring).

    A cost reported by the event wins when it is a finite non-negative number (a NaN or
    negative figure would poison every sum downstream, so the table prices the call
    instead). Missing sub-counts count as zero and negative counts as zero.
    """
    if cost_usd is not None and math.isfinite(cost_usd) and cost_usd >= 0:
        return CallCost(float(cost_usd), "event", None)
    price = table.lookup(model, provider, at)
    if price is None:
        return _UNPRICED
    if input_tokens is None and output_tokens is None:
        return CallCost(None, "unpriced", price)
    # Conditional expressions rather than max(): this runs once per event.
    total_in = input_tokens if input_tokens is not None and input_tokens > 0 else 0
    total_out = output_tokens if output_tokens is not None and output_tokens > 0 else 0
    cached = (
        cached_input_tokens if cached_input_tokens is not None and cached_input_tokens > 0 else 0
    )
    creation = (
        cache_creation_input_tokens
        if cache_creation_input_tokens is not None and cache_creation_input_tokens > 0
        else 0
    )
    reasoning = reasoning_tokens if reasoning_tokens is not None and reasoning_tokens > 0 else 0
    uncached_in = total_in - cached - creation
    visible_out = total_out - reasoning
    in_rate = price.input_per_mtok
    out_rate = price.output_per_mtok
    cached_rate = price.cached_input_per_mtok
    creation_rate = price.cache_creation_per_mtok
    reasoning_rate = price.reasoning_per_mtok
    micro = (
        (uncached_in if uncached_in > 0 else 0) * in_rate
        + cached * (in_rate if cached_rate is None else cached_rate)
        + creation * (in_rate if creation_rate is None else creation_rate)
        + (visible_out if visible_out > 0 else 0) * out_rate
        + reasoning * (out_rate if reasoning_rate is None else reasoning_rate)
    )
    return CallCost(micro / PER_MTOK, "price_table", price)
