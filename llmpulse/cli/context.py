"""What every command shares: the settings, read once, and error reporting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from llmpulse.errors import ConfigError, LlmpulseError
from llmpulse.settings import Settings, apply_flags, load_settings

console = Console(stderr=True)
out = Console()

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class CliState:
    config: Path | None = None
    _settings: Settings | None = None

    def settings(self, **flags: Any) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
        return apply_flags(self._settings, flags)


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):
        obj = CliState()
        ctx.find_root().obj = obj
    return obj


def reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn llmpulse errors into one red line and a non-zero exit, no traceback."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            console.print(f"[red]configuration error:[/red] {exc}")
            raise typer.Exit(2) from None
        except LlmpulseError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None

    return wrapper
