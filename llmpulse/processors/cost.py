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
import hashlib
import itertools
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Final, Literal

import orjson
import yaml

from llmpulse.errors import PriceTableError

__all__ = [
    "FORMAT_NAME",
    "LITELLM_EFFECTIVE_FROM",
    "CallCost",
    "ModelPrice",
    "PriceTable",
    "cost_of_call",
]

FORMAT_NAME: Final = "llmpulse-prices"

# LiteLLM's file carries no dates; its prices apply from this date unless the caller says
# when the snapshot was taken (dated entries of another table then keep their history).
LITELLM_EFFECTIVE_FROM: Final = date(1970, 1, 1)

_PER_MTOK: Final = 1_000_000.0

# Model names come from untrusted telemetry: a bound keeps junk names from growing the
# memo without limit. Clearing is crude but the working set of real names is small.
_MEMO_LIMIT: Final = 65_536

_TOP_KEYS: Final = frozenset({"format", "version", "currency", "notes", "models"})
_MODEL_KEYS: Final = frozenset({"provider", "model", "aliases", "patterns", "prices", "notes"})
_PRICE_KEYS: Final = frozenset(
    {
        "effective_from",
        "input_per_mtok",
        "output_per_mtok",
        "cached_input_per_mtok",
        "cache_creation_per_mtok",
        "reasoning_per_mtok",
    }
)

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


def _provider_key(provider: str) -> str:
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
            key = (_provider_key(entry.provider), entry.model.lower())
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
                self._patterns.append((_compile(pattern, source), resolved))
        self._entries = tuple(ordered)
        self._memo: dict[tuple[str, str | None], _Model | None] = {}

    # -- construction -------------------------------------------------------------------

    @classmethod
    def default(cls) -> PriceTable:
        """The price table shipped with llmpulse (loaded once per process)."""
        return _default_table()

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
        source = str(path)
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise PriceTableError(source, f"cannot read the file: {exc.strerror or exc}") from exc
        # The content hash, not a declared version, names the table: users edit files
        # without bumping versions, and the hash tells two edits apart in stored rows.
        digest = hashlib.sha256(raw).hexdigest()[:12]
        doc = _parse_document(raw, source, as_yaml=Path(path).suffix.lower() in {".yaml", ".yml"})
        if isinstance(doc, dict) and "format" in doc:
            if doc["format"] != FORMAT_NAME:
                raise PriceTableError(
                    source, f"format: expected {FORMAT_NAME!r}, got {doc['format']!r}"
                )
            entries, _ = _own_entries(doc, source)
            return cls(entries, version=f"user:{digest}")
        if isinstance(doc, dict) and _looks_like_litellm(doc):
            entries = _litellm_entries(doc, f"litellm:{source}", litellm_effective_from)
            return cls(entries, version=f"litellm:{digest}")
        raise PriceTableError(
            source,
            f'unrecognised price file: expected an object with "format": "{FORMAT_NAME}" '
            "or LiteLLM's model map",
        )

    def overlay(self, other: PriceTable) -> PriceTable:
        """A new table: ``other``'s entries replace ours with the same (provider, model,
        effective_from), the rest of both are kept; ``other``'s models win ambiguous names."""
        replaced = {_entry_key(e) for e in other._entries}
        kept = [e for e in self._entries if _entry_key(e) not in replaced]
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
        wanted = _provider_key(provider) if provider else ""
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


def _entry_key(entry: ModelPrice) -> tuple[str, str, date]:
    return (_provider_key(entry.provider), entry.model.lower(), entry.effective_from)


def _compile(pattern: str, source: str) -> re.Pattern[str]:
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
    return CallCost(micro / _PER_MTOK, "price_table", price)


# -- file formats -----------------------------------------------------------------------


@cache
def _default_table() -> PriceTable:
    raw = (resources.files("llmpulse.processors") / "prices" / "default_prices.json").read_bytes()
    doc = _parse_document(raw, "default", as_yaml=False)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise PriceTableError("default", f"format: expected {FORMAT_NAME!r}")
    entries, version = _own_entries(doc, "default")
    if version is None:
        raise PriceTableError("default", "version: the shipped table must declare one")
    return PriceTable(entries, version=version)


def _parse_document(raw: bytes, source: str, *, as_yaml: bool) -> object:
    if as_yaml:
        try:
            doc: object = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise PriceTableError(source, f"invalid YAML: {exc}") from exc
        return doc
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PriceTableError(source, f"invalid JSON: {exc}") from exc


def _own_entries(doc: Mapping[str, object], source: str) -> tuple[list[ModelPrice], str | None]:
    _reject_unknown(doc, _TOP_KEYS, "", source)
    version = doc.get("version")
    if version is not None and not (isinstance(version, str) and version.strip()):
        raise PriceTableError(source, f"version: expected a non-empty string, got {version!r}")
    currency = doc.get("currency", "USD")
    if currency != "USD":
        raise PriceTableError(source, f"currency: only USD is supported, got {currency!r}")
    models = doc.get("models")
    if not isinstance(models, list) or not models:
        raise PriceTableError(source, "models: expected a non-empty list")
    entries: list[ModelPrice] = []
    for i, item in enumerate(models):
        where = f"models[{i}]"
        if not isinstance(item, dict):
            raise PriceTableError(source, f"{where}: expected an object, got {item!r}")
        _reject_unknown(item, _MODEL_KEYS, f"{where}.", source)
        provider = _text(item.get("provider"), f"{where}.provider", source)
        model = _text(item.get("model"), f"{where}.model", source)
        where = f"{where} ({provider}/{model})"
        aliases = _texts(item.get("aliases", []), f"{where}.aliases", source)
        patterns = _texts(item.get("patterns", []), f"{where}.patterns", source)
        for pattern in patterns:
            _compile(pattern, source)
        prices = item.get("prices")
        if not isinstance(prices, list) or not prices:
            raise PriceTableError(source, f"{where}.prices: expected a non-empty list")
        for j, price in enumerate(prices):
            at = f"{where}.prices[{j}]"
            if not isinstance(price, dict):
                raise PriceTableError(source, f"{at}: expected an object, got {price!r}")
            _reject_unknown(price, _PRICE_KEYS, f"{at}.", source)
            entries.append(
                ModelPrice(
                    provider=_provider_key(provider),
                    model=model,
                    effective_from=_day(
                        price.get("effective_from"), f"{at}.effective_from", source
                    ),
                    input_per_mtok=_rate(
                        price.get("input_per_mtok"), f"{at}.input_per_mtok", source
                    ),
                    output_per_mtok=_rate(
                        price.get("output_per_mtok"), f"{at}.output_per_mtok", source
                    ),
                    cached_input_per_mtok=_optional_rate(
                        price.get("cached_input_per_mtok"), f"{at}.cached_input_per_mtok", source
                    ),
                    cache_creation_per_mtok=_optional_rate(
                        price.get("cache_creation_per_mtok"),
                        f"{at}.cache_creation_per_mtok",
                        source,
                    ),
                    reasoning_per_mtok=_optional_rate(
                        price.get("reasoning_per_mtok"), f"{at}.reasoning_per_mtok", source
                    ),
                    aliases=aliases,
                    patterns=patterns,
                    source=source,
                )
            )
    _reject_duplicates(entries, source)
    return entries, version


def _looks_like_litellm(doc: Mapping[str, object]) -> bool:
    if "sample_spec" in doc:
        return True
    return any(
        isinstance(spec, dict) and ("litellm_provider" in spec or "input_cost_per_token" in spec)
        for spec in doc.values()
    )


def _litellm_entries(
    doc: Mapping[str, object], source: str, effective_from: date
) -> list[ModelPrice]:
    by_key: dict[tuple[str, str], ModelPrice] = {}
    for key, spec in doc.items():
        if key == "sample_spec" or not isinstance(spec, dict):
            continue
        # Models billed per image, second, character or request carry no token price:
        # they are skipped rather than priced at zero.
        if spec.get("input_cost_per_token") is None:
            continue
        if spec.get("output_cost_per_token") is None and spec.get("mode") != "embedding":
            continue
        provider = spec.get("litellm_provider")
        if not isinstance(provider, str) or not provider.strip():
            provider = key.split("/", 1)[0] if "/" in key else "unknown"
        entry = ModelPrice(
            provider=_provider_key(provider),
            model=key,
            effective_from=effective_from,
            input_per_mtok=_per_mtok(spec, "input_cost_per_token", key, source) or 0.0,
            output_per_mtok=_per_mtok(spec, "output_cost_per_token", key, source) or 0.0,
            cached_input_per_mtok=_per_mtok(spec, "cache_read_input_token_cost", key, source),
            cache_creation_per_mtok=_per_mtok(spec, "cache_creation_input_token_cost", key, source),
            reasoning_per_mtok=_per_mtok(spec, "output_cost_per_reasoning_token", key, source),
            # "anthropic/claude-..." is routed by its prefix; the bare name is what
            # instrumentations report, so it becomes an alias.
            aliases=(key.split("/", 1)[1],) if "/" in key else (),
            patterns=(),
            source=source,
        )
        # LiteLLM has a few keys differing only in case; the last one wins, as in LiteLLM.
        by_key[(entry.provider, key.lower())] = entry
    if not by_key:
        raise PriceTableError(source, "no model with a per-token price")
    return list(by_key.values())


def _per_mtok(spec: Mapping[str, object], field: str, key: str, source: str) -> float | None:
    value = spec.get(field)
    if value is None:
        return None
    # Per-token costs like 2.5e-06 do not scale to exact decimals; rounding to 1e-9 USD
    # per million tokens removes the binary noise and no real price is that fine.
    return round(_rate(value, f"{key}.{field}", source) * _PER_MTOK, 9)


def _reject_unknown(
    obj: Mapping[str, object], allowed: frozenset[str], where: str, source: str
) -> None:
    unknown = sorted(str(k) for k in obj if k not in allowed)
    if unknown:
        raise PriceTableError(
            source, f"{where}{unknown[0]}: unknown key (allowed: {', '.join(sorted(allowed))})"
        )


def _reject_duplicates(entries: list[ModelPrice], source: str) -> None:
    seen: set[tuple[str, str, date]] = set()
    for entry in entries:
        key = _entry_key(entry)
        if key in seen:
            raise PriceTableError(
                source,
                f"two prices for {entry.provider}/{entry.model} "
                f"from {entry.effective_from.isoformat()}",
            )
        seen.add(key)


def _text(value: object, where: str, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PriceTableError(source, f"{where}: expected a non-empty string, got {value!r}")
    return value.strip()


def _texts(value: object, where: str, source: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise PriceTableError(source, f"{where}: expected a list of strings, got {value!r}")
    return tuple(_text(v, f"{where}[{i}]", source) for i, v in enumerate(value))


def _day(value: object, where: str, source: str) -> date:
    # YAML turns an unquoted 2025-01-01 into a date already; a datetime would hide a time
    # of day the table cannot honour.
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise PriceTableError(source, f"{where}: expected a date YYYY-MM-DD, got {value!r}")


def _rate(value: object, where: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PriceTableError(source, f"{where}: expected a number, got {value!r}")
    rate = float(value)
    if not math.isfinite(rate) or rate < 0:
        raise PriceTableError(source, f"{where}: expected a finite number >= 0, got {value!r}")
    return rate


def _optional_rate(value: object, where: str, source: str) -> float | None:
    return None if value is None else _rate(value, where, source)
