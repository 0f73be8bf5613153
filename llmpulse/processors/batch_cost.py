"""Pricing a whole ``TraceBatch`` at once, with the arithmetic of ``cost_of_call``.

The price lookup runs once per distinct (model, provider, day) of the batch and
the formula runs on numpy columns in the same order of operations as
``cost_of_call``, so every cost is bit-for-bit the one the per-event function
gives (tests/unit/processors/test_validate_batch.py checks this on random batches).

>>> from llmpulse.processors.cost import PriceTable
>>> from llmpulse.processors.batch_validate import validate_batch
>>> b = validate_batch([b'{"schema_version":1,"event_id":"a","timestamp":1767225600000,'
...     b'"service":"s","model":"gpt-4o","latency_ms":1,"input_tokens":1000}']).batch
>>> price_batch(PriceTable.default(), b)
>>> b.cost_source[0], round(float(b.cost[0]), 6)
('price_table', 0.0025)
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt

from llmpulse.processors.cost import PriceTable
from llmpulse.schemas.batch import TraceBatch, from_ms

_PER_MTOK: Final = 1_000_000.0
_DAY_MS: Final = 86_400_000


def _counts(batch: TraceBatch, name: str) -> npt.NDArray[np.int64]:
    t = batch.tokens(name)
    return np.where(t > 0, t, 0)


def price_batch(table: PriceTable, batch: TraceBatch) -> None:
    """Fill ``batch.cost``, ``cost_source`` and ``price_version`` in place."""
    n = len(batch)
    if n == 0:
        return
    given = batch.numbers["cost_usd"]
    from_event = ~np.isnan(given)  # validation guarantees finite and >= 0
    cost = np.where(from_event, given, math.nan)
    source = np.where(from_event, "event", "unpriced").astype(object)
    version = np.full(n, "", dtype=object)
    need = np.flatnonzero(~from_event)
    if need.size:
        rates = _rates(table, batch, need)
        found = ~np.isnan(rates[0])
        has_tokens = (batch.tokens("input_tokens")[need] >= 0) | (
            batch.tokens("output_tokens")[need] >= 0
        )
        priced = need[found & has_tokens]
        if priced.size:
            r = rates[:, found & has_tokens]
            in_rate, out_rate, cached_rate, creation_rate, reasoning_rate = r
            total_in = _counts(batch, "input_tokens")[priced]
            total_out = _counts(batch, "output_tokens")[priced]
            cached = _counts(batch, "cached_input_tokens")[priced]
            creation = _counts(batch, "cache_creation_input_tokens")[priced]
            reasoning = _counts(batch, "reasoning_tokens")[priced]
            uncached_in = total_in - cached - creation
            visible_out = total_out - reasoning
            micro = (
                np.where(uncached_in > 0, uncached_in, 0) * in_rate
                + cached * cached_rate
                + creation * creation_rate
                + np.where(visible_out > 0, visible_out, 0) * out_rate
                + reasoning * reasoning_rate
            )
            cost[priced] = micro / _PER_MTOK
            source[priced] = "price_table"
            version[priced] = table.version
    batch.cost = cost
    batch.cost_source = source
    batch.price_version = version


def _rates(
    table: PriceTable, batch: TraceBatch, rows: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """Per row: input, output, cached-input, cache-creation and reasoning rates
    (NaN where no price answers), looked up once per (model, provider, day)."""
    models = batch.objects["model"][rows].tolist()
    providers = batch.objects["provider"][rows].tolist()
    days = (batch.timestamp_ms[rows] // _DAY_MS).tolist()
    groups: dict[tuple[str, str, int], int] = {}
    code = np.fromiter(
        (groups.setdefault(k, len(groups)) for k in zip(models, providers, days, strict=True)),
        dtype=np.int64,
        count=len(models),
    )
    table_rates = np.full((5, len(groups)), math.nan)
    for (model, provider, day), g in groups.items():
        price = table.lookup(model, provider or None, from_ms(day * _DAY_MS).date())
        if price is None:
            continue
        inp, out = price.input_per_mtok, price.output_per_mtok
        table_rates[:, g] = (
            inp,
            out,
            inp if price.cached_input_per_mtok is None else price.cached_input_per_mtok,
            inp if price.cache_creation_per_mtok is None else price.cache_creation_per_mtok,
            out if price.reasoning_per_mtok is None else price.reasoning_per_mtok,
        )
    return table_rates[:, code]
