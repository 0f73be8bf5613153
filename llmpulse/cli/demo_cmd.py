"""``llmpulse demo``: broker, worker and synthetic traffic with scheduled incidents."""

from __future__ import annotations

import typer


def demo(ctx: typer.Context) -> None:
    """Run the whole pipeline on synthetic traffic with scheduled incidents."""
