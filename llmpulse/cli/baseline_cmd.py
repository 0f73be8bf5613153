"""``llmpulse baseline``: pin, list and reset the references of drift series."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from llmpulse.cli.context import console, out, reports_errors, state
from llmpulse.cli.output import as_table

app = typer.Typer(help="Drift baselines (references) per series.", no_args_is_help=True)

SeriesOpt = Annotated[
    list[str],
    typer.Option("--series", "-s", help="Series label as dim=value (repeat), e.g. model=gpt-4o"),
]


def _labels(pairs: list[str]) -> dict[str, str]:
    from llmpulse.errors import ConfigError

    labels = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise ConfigError("--series", f"must be dim=value, got {p!r}")
        labels[key.strip()] = value.strip()
    return labels


@app.command("list")
@reports_errors
def list_baselines(ctx: typer.Context) -> None:
    """The newest baseline of every drift series and signal."""
    from llmpulse.store.query import query_store

    cols, rows = query_store(
        state(ctx).settings(),
        "SELECT grouping, series, signal, argMax(baseline_id, created_at) AS baseline_id, "
        "max(created_at) AS created_at, argMax(n, created_at) AS n FROM drift_baselines "
        "GROUP BY grouping, series, signal ORDER BY series, signal",
    )
    out.print(as_table(cols, rows))


@app.command("set")
@reports_errors
def set_baseline(
    ctx: typer.Context,
    series: SeriesOpt,
    since: Annotated[str, typer.Option("--from", help="Start of the reference range (ISO)")],
    until: Annotated[str, typer.Option("--to", help="End of the reference range (ISO)")],
    signal: Annotated[str, typer.Option(help="prompt_embedding or response_embedding")] = (
        "prompt_embedding"
    ),
) -> None:
    """Pin a series' reference to the traffic of a time range.

    Embeds the stored prompt (or response) text of that range, so it needs
    clickhouse.store_text; the worker reads the new baseline when it starts.
    With the embedded store, stop the worker first (it owns the store).
    """
    import numpy as np

    from llmpulse.detectors.embedder import HashingEmbedder
    from llmpulse.detectors.reference import Reference
    from llmpulse.detectors.storage import DRIFT_BASELINE_COLUMNS, baseline_row
    from llmpulse.errors import ConfigError
    from llmpulse.runtime import prepare_store
    from llmpulse.schemas.rows import names
    from llmpulse.stages.base import Rows
    from llmpulse.store.writer import StoreWriter

    settings = state(ctx).settings()
    labels = _labels(series)
    if signal not in ("prompt_embedding", "response_embedding"):
        raise ConfigError(
            "--signal", f"must be prompt_embedding or response_embedding, got {signal!r}"
        )
    unknown = set(labels) - set(settings.drift.grouping)
    if unknown:
        raise ConfigError(
            "--series", f"{sorted(unknown)} not in drift.grouping {settings.drift.grouping}"
        )
    text_col = "prompt" if signal == "prompt_embedding" else "response"
    where = " AND ".join(f"{k} = {{{k}:String}}" for k in labels)
    client = prepare_store(settings)
    try:
        texts = [
            r[0]
            for r in client.rows(
                f"SELECT {text_col} FROM traces WHERE {where} AND {text_col} IS NOT NULL "
                "AND timestamp >= parseDateTime64BestEffort({since:String}, 3) "
                "AND timestamp < parseDateTime64BestEffort({until:String}, 3)",
                {**labels, "since": since, "until": until},
            )
        ]
        if len(texts) < 50:
            raise ConfigError(
                "--from/--to",
                f"{len(texts)} stored texts in that range; need >= 50 "
                "(is clickhouse.store_text enabled?)",
            )
        with console.status(f"embedding {len(texts):,} texts..."):
            matrix = HashingEmbedder(dim=settings.drift.embedding_dim).embed_many(texts)
            reference = Reference.fit(np.asarray(matrix))
        full = {g: labels.get(g, "") for g in settings.drift.grouping}
        row = baseline_row(
            reference, labels=full, grouping=",".join(settings.drift.grouping),
            signal=signal, created_at=datetime.now(UTC),
        )  # fmt: skip
        StoreWriter(client).write([Rows("drift_baselines", [row], names(DRIFT_BASELINE_COLUMNS))])
    finally:
        client.close()
    out.print(
        f"baseline {reference.baseline_id} pinned for {full} {signal} ({len(texts):,} events)"
    )
