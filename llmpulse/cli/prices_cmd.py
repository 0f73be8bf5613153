"""``llmpulse prices``: inspect and refresh the model price table."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from llmpulse.cli.context import console, out, reports_errors, state
from llmpulse.cli.output import as_table

app = typer.Typer(help="Model prices used to compute cost_usd.", no_args_is_help=True)


@app.command("import")
@reports_errors
def import_prices(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            help="llmpulse price file, or LiteLLM's model_prices_and_context_window.json"
        ),
    ],
    effective_from: Annotated[
        str | None,
        typer.Option(help="Date (YYYY-MM-DD) from which undated prices apply; default today"),
    ] = None,
) -> None:
    """Validate a price file and install it over the shipped table.

    The file is converted to llmpulse's format with explicit dates and saved under
    DATA_DIR/prices/; workers and replays started afterwards use it.
    """
    from llmpulse.errors import ConfigError
    from llmpulse.processors.cost import PriceTable
    from llmpulse.processors.price_files import save_price_file

    settings = state(ctx).settings()
    try:
        day = (
            datetime.fromisoformat(effective_from) if effective_from else datetime.now(UTC)
        ).date()
    except ValueError as exc:
        raise ConfigError(
            "--effective-from", f"must be YYYY-MM-DD, got {effective_from!r}"
        ) from exc
    table = PriceTable.from_file(file, litellm_effective_from=day)
    target = settings.data_dir / "prices" / f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{file.stem}.json"
    save_price_file(table, target)
    out.print(f"installed {len(table)} prices ({table.version}) as {target}")
    console.print("restart running workers to use them")


@app.command("show")
@reports_errors
def show(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Resolve one model name")] = None,
    provider: Annotated[str | None, typer.Option(help="Provider, to disambiguate")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False,
) -> None:
    """Show the effective price table, or the price a model name resolves to."""
    from llmpulse.runtime import load_prices

    table = load_prices(state(ctx).settings())
    rows = table.rows()
    if model is not None:
        price = table.lookup(model, provider)
        if price is None:
            out.print(f"no price for {model!r}: its calls are stored with cost_usd NULL")
            raise typer.Exit(1)
        rows = [r for r in rows if r["model"] == price.model and r["provider"] == price.provider]
    if as_json:
        print(json.dumps(rows, default=str))
        return
    cols = [
        "provider",
        "model",
        "effective_from",
        "input_per_mtok",
        "output_per_mtok",
        "cached_input_per_mtok",
        "cache_creation_per_mtok",
        "reasoning_per_mtok",
    ]
    out.print(as_table(cols, [[r[c] for c in cols] for r in rows]))
    out.print(f"price table version {table.version}, {len(table)} prices")
