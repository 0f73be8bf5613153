"""What the broker's lifecycle and the jar download share: a lock between the
processes managing one directory, the tail of a tool's output for an error,
and a progress callback."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator
from pathlib import Path

Log = Callable[[str], None]
# The "where" of every KafkaError about the local broker.
LOCAL = "local broker"


def quiet(_: str) -> None:
    pass


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock between processes managing the same directory."""
    with path.open("a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def tail(output: bytes | str | None, lines: int = 30) -> str:
    if output is None:
        return ""
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    return "\n".join(text.rstrip().splitlines()[-lines:])
