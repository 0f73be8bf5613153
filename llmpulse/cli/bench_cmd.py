"""``llmpulse bench``: measured throughput, as ratios against a baseline in the same run."""

from __future__ import annotations

import typer

app = typer.Typer(help="Benchmarks (end-to-end pipeline, windows, drift).", no_args_is_help=True)
