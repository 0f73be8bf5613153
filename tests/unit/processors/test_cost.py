"""The price table (matching, dates, file formats, overlays) and per-call cost."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmpulse.errors import PriceTableError
from llmpulse.processors.cost import (
    CallCost,
    ModelPrice,
    PriceTable,
    cost_of_call,
)
from llmpulse.processors.price_files import FORMAT_NAME, save_price_file

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def cost_at_noon(table: PriceTable, model: str, provider: str | None, **counts: Any) -> CallCost:
    """:func:`cost_of_call` at ``AT`` (noon of 2026-03-01)."""
    return cost_of_call(table, model=model, provider=provider, at=AT, **counts)


OPTIONAL_RATES = {
    "cached": "cached_input_per_mtok",
    "creation": "cache_creation_per_mtok",
    "reasoning": "reasoning_per_mtok",
}


def price(
    effective_from: str, input_per_mtok: float, output_per_mtok: float, **rates: float
) -> dict[str, Any]:
    """A dated price entry; ``rates`` sets any of the OPTIONAL_RATES (None if not)."""
    assert set(rates) <= set(OPTIONAL_RATES), rates
    return {
        "effective_from": effective_from,
        "input_per_mtok": input_per_mtok,
        "output_per_mtok": output_per_mtok,
        **{column: rates.get(name) for name, column in OPTIONAL_RATES.items()},
    }


def model(
    provider: str,
    name: str,
    *prices: dict[str, Any],
    aliases: tuple[str, ...] = (),
    patterns: tuple[str, ...] = (),
) -> dict[str, Any]:
    return {
        "provider": provider,
        "model": name,
        "aliases": list(aliases),
        "patterns": list(patterns),
        "prices": list(prices),
    }


def own_doc(*models: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT_NAME, "version": "t1", "currency": "USD", "models": list(models)}


def write_json(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc))
    return path


SMALL = own_doc(
    model(
        "openai",
        "gpt-x",
        price("2025-01-01", 10.0, 40.0, cached=2.5),
        price("2025-06-10", 2.0, 8.0, cached=0.5),
        aliases=("gpt-x-latest",),
        patterns=(r"gpt-x-\d{4}-\d{2}-\d{2}",),
    ),
    model("openai", "gpt-x-2024-01-01", price("2024-01-01", 5.0, 15.0)),
    model(
        "anthropic",
        "claude-y",
        price("2025-05-01", 3.0, 15.0, cached=0.3, creation=3.75),
        aliases=("claude-y-latest",),
    ),
    model("google", "think-z", price("2025-04-01", 0.15, 0.6, reasoning=3.5)),
    model("together", "shared-model", price("2025-01-01", 1.0, 1.0)),
    model("groq", "shared-model", price("2025-01-01", 0.5, 0.7)),
    model("deepseek", "ds-chat", price("2025-01-01", 0.28, 0.42), aliases=("ds-v3",)),
    model("together", "ds-v3", price("2025-01-01", 1.25, 1.25)),
)


@pytest.fixture
def table(tmp_path: Path) -> PriceTable:
    return PriceTable.from_file(write_json(tmp_path / "prices.json", SMALL))


# -- matching ------------------------------------------------------------------------------


def test_exact_match_is_case_insensitive(table: PriceTable) -> None:
    found = table.lookup("GPT-X", at=AT)
    assert found is not None
    assert (found.provider, found.model) == ("openai", "gpt-x")


def test_alias_match(table: PriceTable) -> None:
    found = table.lookup("claude-y-latest", at=AT)
    assert found is not None and found.model == "claude-y"


def test_pattern_match_for_dated_snapshot(table: PriceTable) -> None:
    found = table.lookup("gpt-x-2025-08-06", at=AT)
    assert found is not None and found.model == "gpt-x"


def test_exact_snapshot_wins_over_pattern(table: PriceTable) -> None:
    found = table.lookup("gpt-x-2024-01-01", at=AT)
    assert found is not None
    assert (found.model, found.input_per_mtok) == ("gpt-x-2024-01-01", 5.0)


@pytest.mark.parametrize(
    "name",
    [
        "claude-y-20250514",
        "claude-y-2025-05-14",
        "claude-y@20250514",
        "claude-y:1",
        "anthropic/claude-y",
        "us.anthropic.claude-y-20250514-v1:0",
        "anthropic.claude-y-20250514-v2:0",
    ],
)
def test_generic_suffix_and_prefix_rules(table: PriceTable, name: str) -> None:
    found = table.lookup(name, at=AT)
    assert found is not None and found.model == "claude-y"


@pytest.mark.parametrize("name", ["claude-y-extra", "claude", "claude-y:free", "", "   "])
def test_near_misses_are_not_guessed(table: PriceTable, name: str) -> None:
    assert table.lookup(name, at=AT) is None


def test_provider_disambiguates(table: PriceTable) -> None:
    groq = table.lookup("shared-model", provider="groq", at=AT)
    together = table.lookup("shared-model", provider=" Together ", at=AT)
    assert groq is not None and groq.input_per_mtok == 0.5
    assert together is not None and together.input_per_mtok == 1.0


def test_without_provider_the_first_listed_model_wins(table: PriceTable) -> None:
    found = table.lookup("shared-model", at=AT)
    assert found is not None and found.provider == "together"


def test_unknown_provider_falls_back_to_the_known_model(table: PriceTable) -> None:
    found = table.lookup("gpt-x", provider="azure.ai.openai", at=AT)
    assert found is not None and found.provider == "openai"


def test_provider_prefers_an_alias_of_its_own_over_an_exact_name_of_another(
    table: PriceTable,
) -> None:
    own = table.lookup("ds-v3", provider="deepseek", at=AT)
    exact = table.lookup("ds-v3", at=AT)
    assert own is not None and own.model == "ds-chat"
    assert exact is not None and exact.provider == "together"


def test_lookups_are_memoised_per_name_and_provider(table: PriceTable) -> None:
    first = table.lookup("gpt-x-2025-08-06", provider="openai", at=AT)
    assert table.lookup("gpt-x-2025-08-06", provider="openai", at=AT) is first
    assert table.lookup("nope", provider="openai") is None
    assert table.lookup("nope", provider="openai") is None


# -- effective dates -----------------------------------------------------------------------


def test_price_change_applies_from_its_date_on(table: PriceTable) -> None:
    def rate(at: date | datetime) -> float:
        found = table.lookup("gpt-x", at=at)
        assert found is not None
        return found.input_per_mtok

    assert rate(date(2025, 6, 9)) == 10.0
    assert rate(date(2025, 6, 10)) == 2.0
    assert rate(datetime(2025, 6, 9, 23, 59, 59)) == 10.0
    assert rate(datetime(2025, 6, 10, 0, 0)) == 2.0
    # Dates are UTC: 23:30 at UTC-5 on June 9th is already June 10th.
    assert rate(datetime(2025, 6, 9, 23, 30, tzinfo=timezone(timedelta(hours=-5)))) == 2.0


def test_before_the_first_date_the_earliest_price_applies(table: PriceTable) -> None:
    found = table.lookup("gpt-x", at=date(2020, 1, 1))
    assert found is not None and found.input_per_mtok == 10.0


def test_no_date_means_today(table: PriceTable) -> None:
    found = table.lookup("gpt-x")
    assert found is not None and found.effective_from == date(2025, 6, 10)


def test_patterns_and_aliases_share_the_dated_history(table: PriceTable) -> None:
    old = table.lookup("gpt-x-latest", at=date(2025, 2, 1))
    new = table.lookup("gpt-x-2025-08-06", at=date(2025, 7, 1))
    assert old is not None and old.input_per_mtok == 10.0
    assert new is not None and new.input_per_mtok == 2.0


# -- cost of a call ------------------------------------------------------------------------


def test_unknown_model_is_unpriced(table: PriceTable) -> None:
    assert cost_of_call(
        table, model="mystery", provider=None, at=AT, input_tokens=10, output_tokens=10
    ) == CallCost(None, "unpriced", None)


def test_event_cost_wins(table: PriceTable) -> None:
    result = cost_at_noon(
        table, "gpt-x", "openai", input_tokens=1000, output_tokens=1000, cost_usd=0.123
    )
    assert result == CallCost(0.123, "event", None)
    unknown = cost_of_call(
        table, model="mystery", provider=None, at=AT, input_tokens=1, output_tokens=1, cost_usd=0.0
    )
    assert unknown == CallCost(0.0, "event", None)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_unusable_event_cost_falls_back_to_the_table(table: PriceTable, bad: float) -> None:
    result = cost_of_call(
        table,
        model="gpt-x",
        provider=None,
        at=AT,
        input_tokens=1_000_000,
        output_tokens=0,
        cost_usd=bad,
    )
    assert result.source == "price_table"
    assert result.cost_usd == pytest.approx(2.0)


def test_plain_input_and_output(table: PriceTable) -> None:
    result = cost_of_call(
        table, model="gpt-x", provider="openai", at=AT, input_tokens=1000, output_tokens=500
    )
    # 1000 * 2.0 + 500 * 8.0 = 6000 micro-dollars-per-token units.
    assert result.source == "price_table"
    assert result.price is not None and result.price.model == "gpt-x"
    assert result.cost_usd == pytest.approx(6000 / 1e6)


# Each case: model, provider, when, token counts, and the cost expected in USD.
@pytest.mark.parametrize(
    ("model", "provider", "at", "counts", "expected"),
    [
        pytest.param(
            "claude-y", "anthropic", AT,
            {"input_tokens": 10_000, "output_tokens": 2_000,
             "cached_input_tokens": 6_000, "cache_creation_input_tokens": 3_000},
            # uncached 1_000 * 3.0 + read 6_000 * 0.3 + write 3_000 * 3.75 + out 2_000 * 15.0
            (3_000 + 1_800 + 11_250 + 30_000) / 1e6,
            id="cache_reads_and_writes_use_their_own_rates",
        ),
        pytest.param(
            "think-z", "google", AT,
            {"input_tokens": 1_000, "output_tokens": 5_000, "reasoning_tokens": 4_000},
            # in 1_000 * 0.15 + visible out 1_000 * 0.6 + reasoning 4_000 * 3.5
            (150 + 600 + 14_000) / 1e6,
            id="reasoning_uses_its_own_rate",
        ),
        pytest.param(
            "gpt-x", None, AT,
            {"input_tokens": 1_000, "output_tokens": 1_000, "cached_input_tokens": 400,
             "cache_creation_input_tokens": 100, "reasoning_tokens": 300},
            # gpt-x has a cached rate (0.5) but no creation or reasoning rate.
            (500 * 2.0 + 400 * 0.5 + 100 * 2.0 + 700 * 8.0 + 300 * 8.0) / 1e6,
            id="missing_rates_fall_back_to_input_and_output",
        ),
        pytest.param(
            "gpt-x", None, AT,
            {"input_tokens": 100, "output_tokens": 10,
             "cached_input_tokens": 300, "reasoning_tokens": 50},
            (300 * 0.5 + 50 * 8.0) / 1e6,
            id="sub_counts_larger_than_the_total_do_not_go_negative",
        ),
        pytest.param(
            "gpt-x", None, AT,
            {"input_tokens": None, "output_tokens": 1_000},
            8_000 / 1e6,
            id="missing_counts_count_as_zero",
        ),
        pytest.param(
            "gpt-x", None, datetime(2025, 3, 1, tzinfo=UTC),
            {"input_tokens": 1_000_000, "output_tokens": 0},
            10.0,
            id="cost_uses_the_price_in_force_at_the_call",
        ),
    ],
)  # fmt: skip
def test_cost_of_a_call(
    table: PriceTable,
    model: str,
    provider: str | None,
    at: datetime,
    counts: dict[str, Any],
    expected: float,
) -> None:
    result = cost_of_call(table, model=model, provider=provider, at=at, **counts)
    assert result.cost_usd == pytest.approx(expected)


def test_nothing_to_price_is_unpriced_but_keeps_the_price(table: PriceTable) -> None:
    result = cost_of_call(
        table, model="gpt-x", provider=None, at=AT, input_tokens=None, output_tokens=None
    )
    assert result.cost_usd is None and result.source == "unpriced"
    assert result.price is not None and result.price.model == "gpt-x"


# -- properties ----------------------------------------------------------------------------

RATES = st.floats(min_value=0, max_value=200, allow_nan=False, allow_infinity=False)
COUNTS = st.integers(min_value=0, max_value=5_000_000)


@st.composite
def priced(draw: st.DrawFn) -> tuple[PriceTable, dict[str, int]]:
    entry = ModelPrice(
        provider="p",
        model="m",
        effective_from=date(2025, 1, 1),
        input_per_mtok=draw(RATES),
        output_per_mtok=draw(RATES),
        cached_input_per_mtok=draw(st.none() | RATES),
        cache_creation_per_mtok=draw(st.none() | RATES),
        reasoning_per_mtok=draw(st.none() | RATES),
        aliases=(),
        patterns=(),
        source="test",
    )
    cached, creation, reasoning = draw(COUNTS), draw(COUNTS), draw(COUNTS)
    counts = {
        "input_tokens": cached + creation + draw(COUNTS),
        "output_tokens": reasoning + draw(COUNTS),
        "cached_input_tokens": cached,
        "cache_creation_input_tokens": creation,
        "reasoning_tokens": reasoning,
    }
    return PriceTable([entry], version="prop"), counts


def _cost(table: PriceTable, counts: dict[str, int]) -> float:
    result = cost_of_call(table, model="m", provider="p", at=AT, **counts)
    assert result.cost_usd is not None
    return result.cost_usd


@given(priced())
def test_cost_is_never_negative(case: tuple[PriceTable, dict[str, int]]) -> None:
    table, counts = case
    assert _cost(table, counts) >= 0


# Adding tokens of one kind adds them to the total they belong to (the convention), so
# "more cache reads" means a larger prompt of which more is cached.
GROWTHS = {
    "input_tokens": ("input_tokens",),
    "output_tokens": ("output_tokens",),
    "cached_input_tokens": ("cached_input_tokens", "input_tokens"),
    "cache_creation_input_tokens": ("cache_creation_input_tokens", "input_tokens"),
    "reasoning_tokens": ("reasoning_tokens", "output_tokens"),
}


@given(priced(), st.sampled_from(sorted(GROWTHS)), st.integers(min_value=1, max_value=1_000_000))
def test_cost_is_monotone_in_each_kind_of_token(
    case: tuple[PriceTable, dict[str, int]], kind: str, extra: int
) -> None:
    table, counts = case
    grown = dict(counts)
    for field in GROWTHS[kind]:
        grown[field] += extra
    before, after = _cost(table, counts), _cost(table, grown)
    assert after >= before or math.isclose(after, before, rel_tol=1e-12)


@given(priced(), st.integers(min_value=2, max_value=10))
def test_cost_is_linear_in_the_counts(case: tuple[PriceTable, dict[str, int]], k: int) -> None:
    table, counts = case
    scaled = {name: k * n for name, n in counts.items()}
    assert _cost(table, scaled) == pytest.approx(k * _cost(table, counts), rel=1e-9, abs=1e-12)


# -- LiteLLM import ------------------------------------------------------------------------

LITELLM = {
    "sample_spec": {
        "max_tokens": "LEGACY parameter",
        "input_cost_per_token": 0.0,
        "output_cost_per_token": 0.0,
        "litellm_provider": "one of https://docs.litellm.ai/docs/providers",
        "mode": "one of: chat, embedding, completion, image_generation, audio_transcription",
    },
    "gpt-4o": {
        "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05,
        "cache_read_input_token_cost": 1.25e-06,
        "litellm_provider": "openai",
        "mode": "chat",
    },
    "anthropic/claude-sonnet-4-5-20250929": {
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 1.5e-05,
        "cache_read_input_token_cost": 3e-07,
        "cache_creation_input_token_cost": 3.75e-06,
        "litellm_provider": "anthropic",
        "mode": "chat",
    },
    "o3": {
        "input_cost_per_token": 2e-06,
        "output_cost_per_token": 8e-06,
        "output_cost_per_reasoning_token": 8e-06,
        "litellm_provider": "openai",
        "mode": "chat",
    },
    "text-embedding-3-small": {
        "input_cost_per_token": 2e-08,
        "litellm_provider": "openai",
        "mode": "embedding",
    },
    "dall-e-3": {
        "output_cost_per_image": 0.04,
        "litellm_provider": "openai",
        "mode": "image_generation",
    },
    "whisper-1": {
        "input_cost_per_second": 0.0001,
        "output_cost_per_second": 0.0001,
        "litellm_provider": "openai",
        "mode": "audio_transcription",
    },
    "half-priced-chat": {"input_cost_per_token": 1e-06, "litellm_provider": "x", "mode": "chat"},
}


@pytest.fixture
def litellm_path(tmp_path: Path) -> Path:
    return write_json(tmp_path / "model_prices_and_context_window.json", LITELLM)


def test_litellm_import(litellm_path: Path) -> None:
    table = PriceTable.from_file(litellm_path)
    assert table.version.startswith("litellm:")
    assert {e.model for e in table} == {
        "gpt-4o",
        "anthropic/claude-sonnet-4-5-20250929",
        "o3",
        "text-embedding-3-small",
    }
    gpt = table.lookup("gpt-4o", at=AT)
    assert gpt is not None
    assert (gpt.provider, gpt.input_per_mtok, gpt.output_per_mtok) == ("openai", 2.5, 10.0)
    assert gpt.cached_input_per_mtok == 1.25 and gpt.cache_creation_per_mtok is None
    assert gpt.source == f"litellm:{litellm_path}"
    assert gpt.effective_from == date(1970, 1, 1)


def test_litellm_provider_prefix_becomes_an_alias(litellm_path: Path) -> None:
    table = PriceTable.from_file(litellm_path)
    found = table.lookup("claude-sonnet-4-5-20250929", provider="anthropic", at=AT)
    assert found is not None
    assert found.model == "anthropic/claude-sonnet-4-5-20250929"
    assert found.aliases == ("claude-sonnet-4-5-20250929",)
    assert (found.cached_input_per_mtok, found.cache_creation_per_mtok) == (0.3, 3.75)


def test_litellm_reasoning_and_embedding_rates(litellm_path: Path) -> None:
    table = PriceTable.from_file(litellm_path)
    o3 = table.lookup("o3", at=AT)
    embedding = table.lookup("text-embedding-3-small", at=AT)
    assert o3 is not None and o3.reasoning_per_mtok == 8.0
    assert embedding is not None
    assert (embedding.input_per_mtok, embedding.output_per_mtok) == (0.02, 0.0)


def test_litellm_snapshot_date(litellm_path: Path) -> None:
    table = PriceTable.from_file(litellm_path, litellm_effective_from=date(2026, 10, 1))
    assert {e.effective_from for e in table} == {date(2026, 10, 1)}


def priced(entry: ModelPrice) -> tuple[object, ...]:
    """An entry without its provenance (source), aliases as a set."""
    rates = (
        entry.input_per_mtok,
        entry.output_per_mtok,
        entry.cached_input_per_mtok,
        entry.cache_creation_per_mtok,
        entry.reasoning_per_mtok,
    )
    aliases = frozenset(entry.aliases)
    return (entry.provider, entry.model, entry.effective_from, rates, aliases, entry.patterns)


@pytest.mark.parametrize("which", ["default", "litellm"])
def test_saved_price_file_reads_back_the_same_prices(
    which: str, litellm_path: Path, tmp_path: Path
) -> None:
    """What ``prices install`` writes: the own format, dates explicit, same prices."""
    table = (
        PriceTable.default()
        if which == "default"
        else PriceTable.from_file(litellm_path, litellm_effective_from=date(2026, 10, 1))
    )
    target = tmp_path / "prices" / "installed.json"
    save_price_file(table, target)
    assert not target.with_suffix(".tmp").exists()
    doc = json.loads(target.read_text())
    assert doc["format"] == FORMAT_NAME and doc["version"] == table.version
    back = PriceTable.from_file(target)
    assert back.version.startswith("user:")
    assert [priced(e) for e in back] == [priced(e) for e in table]
    for entry in table:
        found = back.lookup(entry.model, entry.provider, entry.effective_from)
        assert found is not None and priced(found) == priced(entry)


def test_litellm_bad_cost_names_the_model(tmp_path: Path) -> None:
    doc = {"m": {"input_cost_per_token": "cheap", "output_cost_per_token": 1e-6}}
    with pytest.raises(PriceTableError, match=r"m\.input_cost_per_token: expected a number"):
        PriceTable.from_file(write_json(tmp_path / "l.json", doc))


def test_litellm_without_token_prices_is_rejected(tmp_path: Path) -> None:
    doc = {"sample_spec": LITELLM["sample_spec"], "dall-e-3": LITELLM["dall-e-3"]}
    with pytest.raises(PriceTableError, match="no model with a per-token price"):
        PriceTable.from_file(write_json(tmp_path / "l.json", doc))


# -- own format: YAML, overlay, errors -----------------------------------------------------

YAML_TABLE = """\
format: llmpulse-prices
version: mine-1
models:
  - provider: OpenAI
    model: gpt-x
    aliases: [my-gpt]
    prices:
      - effective_from: 2026-01-01   # unquoted: YAML reads a date
        input_per_mtok: 1.5
        output_per_mtok: 6
  - provider: internal
    model: house-llm
    patterns: ['house-llm-v\\d+']
    prices:
      - {effective_from: "2025-01-01", input_per_mtok: 0.1, output_per_mtok: 0.2,
         cached_input_per_mtok: 0.01}
"""


def test_yaml_own_format(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(YAML_TABLE)
    table = PriceTable.from_file(path)
    assert table.version.startswith("user:") and len(table.version) == len("user:") + 12
    house = table.lookup("HOUSE-LLM-V7", at=AT)
    assert house is not None
    assert (house.model, house.cached_input_per_mtok, house.source) == (
        "house-llm",
        0.01,
        str(path),
    )
    mine = table.lookup("my-gpt", at=AT)
    assert mine is not None
    assert (mine.provider, mine.effective_from, mine.output_per_mtok) == (
        "openai",
        date(2026, 1, 1),
        6.0,
    )


def test_overlay(table: PriceTable, tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(YAML_TABLE)
    user = PriceTable.from_file(path)
    merged = table.overlay(user)
    assert merged.version == f"{table.version}+{user.version}"
    # A new dated price joins the model's history; older prices and aliases stay.
    assert [e.effective_from for e in merged if e.model == "gpt-x"] == [
        date(2025, 1, 1),
        date(2025, 6, 10),
        date(2026, 1, 1),
    ]
    latest = merged.lookup("gpt-x-latest", at=AT)
    assert latest is not None and latest.input_per_mtok == 1.5
    older = merged.lookup("my-gpt", at=date(2025, 7, 1))
    assert older is not None and older.input_per_mtok == 2.0
    # New models are added; the receiver is unchanged.
    assert merged.lookup("house-llm", at=AT) is not None
    assert table.lookup("house-llm", at=AT) is None
    assert len(merged) == len(table) + 2


def test_overlay_replaces_the_same_dated_price_and_wins_ambiguous_names(
    table: PriceTable, tmp_path: Path
) -> None:
    patch = own_doc(
        model("openai", "gpt-x", price("2025-06-10", 1.0, 4.0)),
        model("myproxy", "shared-model", price("2025-01-01", 9.0, 9.0)),
    )
    merged = table.overlay(PriceTable.from_file(write_json(tmp_path / "p.json", patch)))
    replaced = merged.lookup("gpt-x", at=AT)
    assert replaced is not None
    assert (replaced.input_per_mtok, replaced.cached_input_per_mtok) == (1.0, None)
    assert len([e for e in merged if e.model == "gpt-x"]) == 2
    shared = merged.lookup("shared-model", at=AT)
    assert shared is not None and shared.provider == "myproxy"
    groq = merged.lookup("shared-model", provider="groq", at=AT)
    assert groq is not None and groq.provider == "groq"


def _bad(**changes: Any) -> dict[str, Any]:
    entry = model("p", "m", price("2025-01-01", 1.0, 2.0))
    entry["prices"][0].update(changes)
    return own_doc(entry)


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ([1, 2], "unrecognised price file"),
        ({"hello": "world"}, "unrecognised price file"),
        ({"format": "langfuse", "models": []}, "format: expected 'llmpulse-prices'"),
        ({"format": FORMAT_NAME}, "models: expected a non-empty list"),
        ({**own_doc(), "currency": "EUR"}, "currency: only USD"),
        ({**SMALL, "modles": []}, "modles: unknown key"),
        (own_doc({"provider": "p", "model": "", "prices": []}), r"models\[0\]\.model"),
        (own_doc(model("p", "m")), r"models\[0\] \(p/m\)\.prices: expected a non-empty list"),
        (_bad(input_per_mtok=-1), r"prices\[0\]\.input_per_mtok: expected a finite number >= 0"),
        (_bad(output_per_mtok="2"), r"output_per_mtok: expected a number"),
        (_bad(output_per_mtok=True), r"output_per_mtok: expected a number"),
        (_bad(cached_input_per_mtok="x"), r"cached_input_per_mtok: expected a number"),
        (_bad(effective_from="June 2025"), r"effective_from: expected a date YYYY-MM-DD"),
        (_bad(input_per_mtoks=1.0), r"input_per_mtoks: unknown key"),
        (
            own_doc(model("p", "m", price("2025-01-01", 1, 2), patterns=("m-(",))),
            r"invalid pattern 'm-\('",
        ),
        (
            own_doc(model("p", "m", price("2025-01-01", 1, 2), price("2025-01-01", 3, 4))),
            "two prices for p/m from 2025-01-01",
        ),
        (
            own_doc(
                model("p", "m", price("2025-01-01", 1, 2)),
                model("P", "M", price("2025-01-01", 3, 4)),
            ),
            "two prices for p/M from 2025-01-01",
        ),
    ],
)
def test_malformed_own_files_name_the_problem(tmp_path: Path, doc: object, problem: str) -> None:
    path = write_json(tmp_path / "bad.json", doc)
    with pytest.raises(PriceTableError, match=problem) as caught:
        PriceTable.from_file(path)
    assert caught.value.source == str(path)


def test_unparseable_files(tmp_path: Path) -> None:
    broken_json = tmp_path / "p.json"
    broken_json.write_text("{not json")
    with pytest.raises(PriceTableError, match="invalid JSON"):
        PriceTable.from_file(broken_json)
    broken_yaml = tmp_path / "p.yml"
    broken_yaml.write_text("models: [unclosed")
    with pytest.raises(PriceTableError, match="invalid YAML"):
        PriceTable.from_file(broken_yaml)
    with pytest.raises(PriceTableError, match="cannot read the file"):
        PriceTable.from_file(tmp_path / "missing.json")


def test_yaml_datetime_is_not_a_date(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(YAML_TABLE.replace("2026-01-01   #", "2026-01-01 10:00:00   #"))
    with pytest.raises(PriceTableError, match="effective_from: expected a date"):
        PriceTable.from_file(path)


# -- rows ----------------------------------------------------------------------------------


def test_rows_have_exactly_the_clickhouse_columns(table: PriceTable) -> None:
    rows = table.rows()
    assert len(rows) == len(table)
    for row in rows:
        assert " ".join(row) == (
            "provider model aliases patterns effective_from input_per_mtok output_per_mtok "
            "cached_input_per_mtok cache_creation_per_mtok reasoning_per_mtok source table_version"
        )
        assert row["table_version"] == table.version
        assert isinstance(row["aliases"], list) and isinstance(row["patterns"], list)
        assert type(row["effective_from"]) is date
    first = rows[0]
    assert (first["model"], first["aliases"], first["patterns"]) == (
        "gpt-x",
        ["gpt-x-latest"],
        [r"gpt-x-\d{4}-\d{2}-\d{2}"],
    )


# -- the shipped table ---------------------------------------------------------------------

REQUIRED = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "o1",
    "o3",
    "o3-mini",
    "o4-mini",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "claude-3-5-haiku",
    "claude-3-7-sonnet",
    "claude-sonnet-4",
    "claude-opus-4",
    "claude-opus-4-1",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "claude-opus-4-5",
    "gemini-1.5-flash",
    "gemini-1.5-pro",
    "gemini-2.0-flash",
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "gemini-2.5-flash-lite",
    "mistral-large-latest",
    "mistral-medium",
    "mistral-small-latest",
    "codestral",
    "ministral-8b",
    "llama-3.1-8b-instruct",
    "llama-3.1-70b-instruct",
    "llama-3.3-70b-instruct",
    "llama-4-maverick",
    "llama-4-scout",
    "deepseek-chat",
    "deepseek-v3",
    "deepseek-reasoner",
    "deepseek-r1",
    "qwen2.5-72b-instruct",
    "mixtral-8x7b",
]


def test_default_table_loads_once() -> None:
    table = PriceTable.default()
    assert PriceTable.default() is table
    assert table.version == "2026-11-01"
    assert len(table) >= len(REQUIRED)
    assert {row["source"] for row in table.rows()} == {"default"}


@pytest.mark.parametrize("name", REQUIRED)
def test_default_table_prices_the_required_models(name: str) -> None:
    found = PriceTable.default().lookup(name, at=AT)
    assert found is not None
    assert found.input_per_mtok > 0


def test_default_prices_dated_snapshots_via_patterns() -> None:
    table = PriceTable.default()
    snapshot = table.lookup("gpt-4o-2024-08-06", provider="openai", at=AT)
    assert snapshot is not None
    assert (snapshot.model, snapshot.input_per_mtok, snapshot.output_per_mtok) == (
        "gpt-4o",
        2.5,
        10.0,
    )
    counts = {"input_tokens": 2_000, "output_tokens": 100, "cached_input_tokens": 1_000}
    result = cost_at_noon(table, "gpt-4o-2024-08-06", "openai", **counts)
    assert result.cost_usd == pytest.approx((1_000 * 2.5 + 1_000 * 1.25 + 100 * 10.0) / 1e6)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("us.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4"),
        ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("meta-llama/Llama-3.3-70B-Instruct-Turbo", "llama-3.3-70b-instruct"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
    ],
)
def test_default_table_cloud_and_snapshot_names(name: str, expected: str) -> None:
    found = PriceTable.default().lookup(name, at=AT)
    assert found is not None and found.model == expected


def test_default_anthropic_cache_rates() -> None:
    for entry in PriceTable.default():
        if entry.provider != "anthropic":
            continue
        assert entry.cached_input_per_mtok == pytest.approx(0.1 * entry.input_per_mtok)
        assert entry.cache_creation_per_mtok == pytest.approx(1.25 * entry.input_per_mtok)


def test_default_table_history() -> None:
    table = PriceTable.default()
    o3_before = table.lookup("o3", at=date(2025, 6, 9))
    o3_after = table.lookup("o3", at=date(2025, 6, 10))
    assert o3_before is not None and o3_before.input_per_mtok == 10.0
    assert o3_after is not None and o3_after.input_per_mtok == 2.0


def test_constructor_normalises_providers() -> None:
    entry = ModelPrice(
        provider=" OpenAI ",
        model="m",
        effective_from=date(2025, 1, 1),
        input_per_mtok=1.0,
        output_per_mtok=1.0,
        cached_input_per_mtok=None,
        cache_creation_per_mtok=None,
        reasoning_per_mtok=None,
        aliases=(),
        patterns=("m-.*", "m-.*"),
        source="code",
    )
    other = ModelPrice(**{**{f: getattr(entry, f) for f in entry.__slots__}, "provider": "groq"})
    table = PriceTable([other, entry], version="v")
    found = table.lookup("m-1", provider="openai")
    assert found is entry
    with pytest.raises(PriceTableError, match="two prices for openai/m"):
        PriceTable(
            [entry, ModelPrice(**{f: getattr(entry, f) for f in entry.__slots__})], version="v"
        )
