"""``llmpulse compare``: is the candidate worse than the baseline? Exit 0, 1 or 3."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console

from llmpulse.cli.context import console, out, state
from llmpulse.cli.output import as_table
from llmpulse.errors import ConfigError, LlmpulseError

# 0 pass, 1 fail, 3 inconclusive: the comparison's own answer. 2: it could not run
# (bad flags, unreachable store), so a deploy gate never mistakes an error for a pass.
EXIT_ERROR = 2


def _pct(v: float | None, unit: str) -> str:
    if v is None or not math.isfinite(v):
        return ""
    if unit == "relative":
        return f"{v:+.1%}"
    if unit == "absolute":
        return f"{v * 100:+.2f} pp"
    return f"{v:.4f}"


def _value(v: float | None, metric: str) -> str:
    if v is None or not math.isfinite(v):
        return ""
    if metric in ("latency", "ttft"):
        return f"{v:,.0f} ms"
    if metric == "error_rate" or metric.startswith("score:"):
        return f"{v:.2%}"
    if metric.endswith("embedding"):
        return f"{v:.4f}"
    return f"{v:.4g}"


def compare(
    ctx: typer.Context,
    baseline: Annotated[
        str, typer.Option("--baseline", help="Baseline calls: KEY=VALUE[,KEY=VALUE...]")
    ],
    candidate: Annotated[
        str, typer.Option("--candidate", help="Candidate calls: KEY=VALUE[,KEY=VALUE...]")
    ],
    where: Annotated[
        list[str] | None,
        typer.Option("--where", help="Filter both arms: KEY=VALUE (repeatable)"),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="RFC 3339, epoch ms or a duration ago (6h)")
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="Same forms as --since")] = None,
    format: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    clickhouse: Annotated[str | None, typer.Option("--clickhouse", help="ClickHouse DSN")] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", help="Only these metrics (repeatable; score:* for all scores)"),
    ] = None,
) -> None:
    """Compare a candidate with a baseline on live traffic (canary analysis).

    Exits 0 when the candidate passes, 1 when it fails, 3 when inconclusive and 2
    when the comparison could not run.
    """
    from llmpulse.compare.data import parse_selection, parse_time
    from llmpulse.compare.run import Request, run_comparison
    from llmpulse.runtime import prepare_store

    try:
        if format not in ("table", "json"):
            raise ConfigError("--format", f"must be table or json, got {format!r}")
        settings = state(ctx).settings(**{"clickhouse.dsn": clickhouse})
        now = datetime.now(UTC)
        common: dict[str, str] = {}
        for w in where or []:
            common.update(parse_selection(w, "--where"))
        req = Request(
            baseline=parse_selection(baseline, "--baseline"),
            candidate=parse_selection(candidate, "--candidate"),
            where=common,
            since=parse_time(since, "--since", now) if since else None,
            until=parse_time(until, "--until", now) if until else None,
            metrics=metric or None,
        )
        result = run_comparison(settings, req, open_store=prepare_store)
    except LlmpulseError as exc:
        label = "configuration error" if isinstance(exc, ConfigError) else "error"
        console.print(f"[red]{label}:[/red] {exc}")
        raise typer.Exit(EXIT_ERROR) from None

    c = result.comparison
    if format == "json":
        doc = {
            "run_id": result.run_id,
            "stored": result.stored,
            "baseline": dict(req.baseline),
            "candidate": dict(req.candidate),
            "where": dict(req.where),
            "since": req.since.isoformat() if req.since else None,
            "until": req.until.isoformat() if req.until else None,
            **c.as_dict(),
        }
        print(json.dumps(doc))
    else:
        colour = {"pass": "green", "fail": "red", "inconclusive": "yellow"}
        rows = []
        for m in c.metrics:
            d = m.as_dict()
            lo, hi = d["ci"]
            ci = f"[{_pct(lo, m.unit)}, {_pct(hi, m.unit)}]" if lo is not None else ""
            p = d["p_adjusted"]
            rows.append(
                (
                    m.metric,
                    f"[{colour[m.verdict]}]{m.verdict}[/{colour[m.verdict]}]",
                    _value(d["baseline"], m.metric),
                    _value(d["candidate"], m.metric),
                    _pct(d["effect"], m.unit),
                    ci,
                    "" if p is None else f"{p:.2g}",
                    f"{m.n_baseline:,}/{m.n_candidate:,}",
                    m.reason,
                )
            )
        # CI logs are not terminals: do not squeeze the table to 80 columns.
        wide = out if out.is_terminal else Console(width=220)
        wide.print(
            as_table(
                [
                    "metric",
                    "verdict",
                    "baseline",
                    "candidate",
                    "change",
                    "95% CI",
                    "p (Holm)",
                    "n base/cand",
                    "why",
                ],
                rows,
            )
        )
        for name, why in c.skipped.items():
            console.print(f"[dim]skipped {name}: {why}[/dim]")
        wide.print(f"overall: [bold {colour[c.overall]}]{c.overall}[/bold {colour[c.overall]}]")
    if result.note:
        console.print(f"[yellow]note:[/yellow] {result.note}")
    raise typer.Exit(c.exit_code)
