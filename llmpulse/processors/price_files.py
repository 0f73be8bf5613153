"""Writing a price table in llmpulse's own file format (dates explicit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from llmpulse.processors.cost import FORMAT_NAME, PriceTable

_PRICE_FIELDS = (
    "input_per_mtok",
    "output_per_mtok",
    "cached_input_per_mtok",
    "cache_creation_per_mtok",
    "reasoning_per_mtok",
)


def to_document(table: PriceTable) -> dict[str, Any]:
    models: dict[tuple[str, str], dict[str, Any]] = {}
    for e in table.entries:
        m = models.setdefault(
            (e.provider, e.model),
            {"provider": e.provider, "model": e.model, "aliases": [], "patterns": [], "prices": []},
        )
        m["aliases"] = sorted({*m["aliases"], *e.aliases})
        m["patterns"] = list(dict.fromkeys([*m["patterns"], *e.patterns]))
        price: dict[str, Any] = {"effective_from": e.effective_from.isoformat()}
        for f in _PRICE_FIELDS:
            value = getattr(e, f)
            if value is not None:
                price[f] = value
        m["prices"].append(price)
    return {"format": FORMAT_NAME, "version": table.version, "models": list(models.values())}


def save_price_file(table: PriceTable, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(to_document(table), option=orjson.OPT_INDENT_2))
    tmp.replace(path)
