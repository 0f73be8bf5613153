"""Price files: llmpulse's own format (read and write) and LiteLLM's model map (read).

The own format names its dates explicitly, one object per model with its dated prices::

    {"format": "llmpulse-prices", "version": "...", "currency": "USD",
     "models": [{"provider": "openai", "model": "gpt-4o", "aliases": [], "patterns": [],
                 "prices": [{"effective_from": "2024-05-13", "input_per_mtok": 5.0, ...}]}]}

LiteLLM's ``model_prices_and_context_window.json`` carries per-token costs and no dates; its
prices apply from a date the caller chooses. Reading validates everything and names the
offending field; the lookup itself lives in :mod:`llmpulse.processors.cost`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from datetime import date, datetime
from functools import cache
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any, Final

import orjson
import yaml

from llmpulse.errors import PriceTableError
from llmpulse.processors.cost import (
    LITELLM_EFFECTIVE_FROM,
    PER_MTOK,
    ModelPrice,
    PriceTable,
    compile_pattern,
    entry_key,
    provider_key,
)

__all__ = [
    "FORMAT_NAME",
    "default_price_table",
    "load_price_file",
    "save_price_file",
    "to_document",
]

FORMAT_NAME: Final = "llmpulse-prices"

_TOP_KEYS: Final = frozenset({"format", "version", "currency", "notes", "models"})
_MODEL_KEYS: Final = frozenset({"provider", "model", "aliases", "patterns", "prices", "notes"})
# The rates of a dated price, in the order a written file lists them.
_RATES: Final = (
    "input_per_mtok",
    "output_per_mtok",
    "cached_input_per_mtok",
    "cache_creation_per_mtok",
    "reasoning_per_mtok",
)
_PRICE_KEYS: Final = frozenset({"effective_from", *_RATES})


# -- reading ----------------------------------------------------------------------------


def load_price_file(
    path: str | PathLike[str], *, litellm_effective_from: date = LITELLM_EFFECTIVE_FROM
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
        return PriceTable(entries, version=f"user:{digest}")
    if isinstance(doc, dict) and _looks_like_litellm(doc):
        entries = _litellm_entries(doc, f"litellm:{source}", litellm_effective_from)
        return PriceTable(entries, version=f"litellm:{digest}")
    raise PriceTableError(
        source,
        f'unrecognised price file: expected an object with "format": "{FORMAT_NAME}" '
        "or LiteLLM's model map",
    )


@cache
def default_price_table() -> PriceTable:
    """The price table shipped with llmpulse (loaded once per process)."""
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
            compile_pattern(pattern, source)
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
                    provider=provider_key(provider),
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
            provider=provider_key(provider),
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
    return round(_rate(value, f"{key}.{field}", source) * PER_MTOK, 9)


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
        key = entry_key(entry)
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


# -- writing ----------------------------------------------------------------------------


def to_document(table: PriceTable) -> dict[str, Any]:
    """``table`` in llmpulse's own format, every date explicit (read back by
    :func:`load_price_file`)."""
    models: dict[tuple[str, str], dict[str, Any]] = {}
    for e in table.entries:
        m = models.setdefault(
            (e.provider, e.model),
            {"provider": e.provider, "model": e.model, "aliases": [], "patterns": [], "prices": []},
        )
        m["aliases"] = sorted({*m["aliases"], *e.aliases})
        m["patterns"] = list(dict.fromkeys([*m["patterns"], *e.patterns]))
        price: dict[str, Any] = {"effective_from": e.effective_from.isoformat()}
        for f in _RATES:
            value = getattr(e, f)
            if value is not None:
                price[f] = value
        m["prices"].append(price)
    return {"format": FORMAT_NAME, "version": table.version, "models": list(models.values())}


def save_price_file(table: PriceTable, path: Path) -> None:
    """Write ``table`` to ``path`` in llmpulse's format; through a temporary file and a
    rename, so a worker starting meanwhile never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(to_document(table), option=orjson.OPT_INDENT_2))
    tmp.replace(path)
